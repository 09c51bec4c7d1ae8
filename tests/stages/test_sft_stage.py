"""The SFT and distillation jobs: on hand-written SFT sets they publish loadable models (teacher
and student sizes), log every step, are idempotent, and reject malformed sets by file and line."""

from __future__ import annotations

import pytest
from tiny_stage_run import clone_run

from r1hpc.fsio import StoreError
from r1hpc.stages.common import StageContext, load_policy, read_data, read_metrics
from r1hpc.stages.rejection import general_fallback
from r1hpc.stages.sft_inputs import read_sft_records, write_sft_records
from r1hpc.stages.sft_stage import run_distill, run_sft
from r1hpc.store import latest_model


def _write_sets(run, n_reasoning: int = 10, n_general: int = 6) -> None:
    ctx = StageContext(run)
    problems = read_data(ctx, "problems_train")[:n_reasoning]
    general = read_data(ctx, "general_train")[:n_general]
    write_sft_records(
        run / "data" / "sft_reasoning.jsonl",
        [
            {
                "prompt": p["prompt"],
                "completion": f" {p['solution_steps'][-1]} </think> <answer> {p['answer']} </answer>",
                "source": "rejection",
            }
            for p in problems
        ],
    )
    write_sft_records(
        run / "data" / "sft_general.jsonl",
        [{"prompt": g["prompt"], "completion": general_fallback(g["answer"]), "source": "reference"} for g in general],
    )


@pytest.mark.parametrize("job, stage, layers", [(run_sft, "sft", 2), (run_distill, "distill", 1)])
def test_sft_jobs_publish_a_loadable_model(tmp_path, job, stage, layers):
    run = clone_run(tmp_path)
    _write_sets(run)
    result = job(str(run))
    # 16 examples, 1 epoch, batch 8 (tiny_stage_run's sft / distill settings)
    assert result["version"] == "v0000" and result["examples"] == 16 and result["steps"] == 2
    assert result["sft_reasoning_examples"] == 10 and result["sft_general_examples"] == 6
    assert result["init_from"] == ("base/v0000" if stage == "sft" else "student_base/v0000")
    model, tokenizer = load_policy(latest_model(StageContext(run).run, stage, verify="sha256"))
    assert model.config.num_hidden_layers == layers  # the student is the smaller model
    out = model.generate(
        **tokenizer(["User: Compute 1 + 1.\nAssistant: <think>"], return_tensors="pt"),
        max_new_tokens=4,
        do_sample=False,
    )
    assert out.shape[1] > 0
    rows = read_metrics(run, stage)
    assert [r["step"] for r in rows] == [1, 2] and all(r["stage"] == stage for r in rows)
    again = job(str(run))
    assert again["skipped"] == "already published" and again["final_loss"] == result["final_loss"]


@pytest.mark.slow
def test_sft_under_deepspeed_in_two_ranks_equals_the_torch_job(tmp_path):
    """parallel.backend deepspeed: the SFT job trains in 2 ZeRO-3 ranks it starts (torchrun, gloo)
    and publishes what the one-process torch job publishes, up to float summation order."""
    import torch

    ranks = ["parallel.backend=deepspeed", "parallel.zero_stage=3", "launch.train.tasks_per_node=2"]
    runs = {name: clone_run(tmp_path / name, extra) for name, extra in (("torch", []), ("ds", ranks))}
    results = {}
    for name, run in runs.items():
        _write_sets(run)
        results[name] = run_sft(str(run))
    ds = results["ds"]
    assert ds["deepspeed"] == {"ranks": 2, "zero_stage": 3}
    for key in ("version", "examples", "steps", "target_tokens", "init_from", "sft_reasoning_examples"):
        assert ds[key] == results["torch"][key], key
    assert ds["final_loss"] == pytest.approx(results["torch"]["final_loss"], abs=1e-4)
    assert [r["step"] for r in read_metrics(runs["ds"], "sft")] == [1, 2]
    weights = {
        name: load_policy(latest_model(StageContext(run).run, "sft", verify="sha256"))[0].state_dict()
        for name, run in runs.items()
    }
    assert weights["ds"].keys() == weights["torch"].keys()
    diff = max(float((weights["ds"][k] - weights["torch"][k]).abs().max()) for k in weights["torch"])
    print(f"max |weight(deepspeed) - weight(torch)| after 2 steps: {diff:.1e}")
    assert diff < 1e-4, diff
    assert not torch.equal(
        weights["ds"]["lm_head.weight"],
        load_policy(latest_model(StageContext(runs["ds"]).run, "base"))[0].state_dict()["lm_head.weight"],
    )
    assert run_sft(str(runs["ds"]))["skipped"] == "already published"


@pytest.mark.slow
def test_a_killed_deepspeed_sft_job_reruns_to_the_same_model(tmp_path):
    """The DeepSpeed SFT job killed (SIGKILL of its process group: the job and its ranks) after its
    first ZeRO checkpoint publishes nothing; its rerun resumes there and publishes exactly the
    weights of an undisturbed run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    extra = [
        "parallel.backend=deepspeed",
        "parallel.zero_stage=3",
        "launch.train.tasks_per_node=2",
        "sft.epochs=4",  # 8 steps of 8 of the 16 examples
        "sft.save_every=2",
    ]
    runs = {name: clone_run(tmp_path / name, extra) for name in ("undisturbed", "killed")}
    for run in runs.values():
        _write_sets(run)
    run_sft(str(runs["undisturbed"]))
    killed = runs["killed"]
    job = subprocess.Popen(
        [sys.executable, "-c", f"from r1hpc.stages.sft_stage import run_sft; run_sft({str(killed)!r})"],
        start_new_session=True,
    )
    first = killed / "train_state" / "sft" / "deepspeed" / "step_000002" / "COMPLETE.json"
    deadline = time.time() + 240
    while not first.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert first.exists() and not (killed / "models" / "sft").exists(), "killed after its first checkpoint"
    resumed = run_sft(str(killed))
    assert resumed["steps"] == 8 and resumed["version"] == "v0000"
    weights = {
        name: load_policy(latest_model(StageContext(run).run, "sft", verify="sha256"))[0].state_dict()
        for name, run in runs.items()
    }
    for key, value in weights["undisturbed"].items():
        assert torch.equal(value, weights["killed"][key]), key


def test_missing_or_malformed_sft_sets_are_clear_errors(tmp_path):
    run = clone_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="sft_reasoning.jsonl: missing SFT set"):
        run_sft(str(run))
    bad = run / "data" / "bad.jsonl"
    bad.write_text('{"prompt": "q", "completion": "c"}\n{"prompt": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: key 'completion' must be a non-empty string"):
        read_sft_records(bad)
    bad.write_text("not json\n")
    with pytest.raises(StoreError, match=r"bad.jsonl:1: corrupt line, expected one JSON object"):
        read_sft_records(bad)
    with pytest.raises(ValueError, match="record 0 needs str 'prompt' and 'completion'"):
        write_sft_records(bad, [{"prompt": "q"}])
