"""The teacher's SFT stages under parallel.backend megatron: the stage job trains in Megatron-core
ranks it starts (torchrun, gloo, TP2 on 2 processes) and publishes what the one-process torch job
publishes; a rerun from its checkpoint, and a job stopped by the stop signal and requeued, publish
the same bytes.

The run is the tiny stage-test run (tests/stages/tiny_stage_run.py) with its base replaced by a
random tiny DeepseekV3 over the run's tokenizer (the Megatron converter takes DeepseekV3).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import submitit
import torch
from test_sft_stage import _write_sets
from tiny_stage_run import clone_run

from r1hpc.fsio import read_jsonl
from r1hpc.launch import StageTask
from r1hpc.megatron.hf_convert import hf_config
from r1hpc.megatron.model import MegatronModelConfig
from r1hpc.model.tokenizer import load_tokenizer
from r1hpc.stages.common import StageContext, load_policy, read_metrics
from r1hpc.stages.sft_stage import run_sft
from r1hpc.store import RunDir, latest_model, list_versions, publish_model

pytestmark = pytest.mark.slow

MEGATRON = ["parallel.backend=megatron", "parallel.tp=2", "launch.train.tasks_per_node=2"]


def _deepseek_base(run: Path) -> None:
    """models/base of `run` becomes a random tiny DeepseekV3 (seed 0) over the run's tokenizer."""
    from transformers import DeepseekV3ForCausalLM

    tok = load_tokenizer(run / "data" / "tokenizer")
    sizes = MegatronModelConfig(
        vocab_size=-(-len(tok) // 8) * 8,
        max_seq_len=256,
        num_layers=2,
        hidden_size=32,
        num_heads=4,
        first_k_dense=1,  # then one MoE layer: 4 routed experts, top 2, a shared expert
        rope_type="rope",
    )
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(
        hf_config(sizes, bos_id=tok.bos_token_id or 0, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    )
    src = run.parent / "deepseek_base"
    model.save_pretrained(str(src))
    tok.save_pretrained(str(src))
    shutil.rmtree(run / "models" / "base")
    publish_model(RunDir(run), "base", src, version=0, meta={"init_from": "random DeepseekV3 (test)"})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_policy(latest_model(StageContext(run).run, "sft", verify="sha256"))[0].state_dict()


def test_sft_under_megatron_in_two_ranks_equals_the_torch_job(tmp_path):
    """The Megatron job at TP2 publishes the torch job's weights up to float summation order.

    One optimizer step: Megatron also updates the routers' expert bias after each step (DeepSeek-V3's
    aux-loss-free balancing), which transformers' training does not, so from step 2 on the two route
    some tokens differently. That bias is left out of the comparison. The step's learning rate is a
    quarter of sft.lr (warmup), so a trainer that ignored the schedule would be 4x off."""
    one_step = ["sft.epochs=0.5", "sft.lr=2e-3", "sft.warmup_steps=4"]  # 8 of the 16 examples
    runs = {
        name: clone_run(tmp_path / name, [*extra, *one_step]) for name, extra in (("torch", []), ("megatron", MEGATRON))
    }
    results = {}
    for name, run in runs.items():
        _deepseek_base(run)
        _write_sets(run)
        results[name] = run_sft(str(run))
    mg = results["megatron"]
    assert mg["megatron"] == {"ranks": 2, "layout": {"tp": 2, "pp": 1, "ep": 1}}
    for key in ("version", "examples", "steps", "target_tokens", "init_from", "sft_reasoning_examples"):
        assert mg[key] == results["torch"][key], key
    assert mg["final_loss"] == pytest.approx(results["torch"]["final_loss"], abs=1e-4)
    rows = read_metrics(runs["megatron"], "sft")
    assert [r["step"] for r in rows] == [1] and rows[0]["lr"] == pytest.approx(2e-3 / 4)
    weights = {name: _weights(run) for name, run in runs.items()}
    assert weights["megatron"].keys() == weights["torch"].keys()
    compared = [k for k in weights["torch"] if not k.endswith("e_score_correction_bias")]
    diff = max(float((weights["megatron"][k] - weights["torch"][k]).abs().max()) for k in compared)
    print(f"max |weight(megatron) - weight(torch)| after 1 step at lr 5e-4: {diff:.1e}")
    assert diff < 1e-4, diff
    base = load_policy(latest_model(StageContext(runs["megatron"]).run, "base"))[0].state_dict()
    assert not torch.equal(weights["megatron"]["lm_head.weight"], base["lm_head.weight"])
    assert run_sft(str(runs["megatron"]))["skipped"] == "already published"


def test_moe_sft_under_megatron_resumes_from_its_checkpoint_to_the_same_bytes(tmp_path):
    """The MoE base (routed experts, expert bias): a rerun that finds only the job's step-2
    checkpoint (its v0000 gone, as after a kill between the save and the publish) trains steps 3-4
    again and publishes byte-identical weights."""
    run = clone_run(tmp_path, [*MEGATRON, "sft.epochs=2", "sft.save_every=2"])  # 4 steps of 8 of 16 examples
    _deepseek_base(run)
    _write_sets(run)
    first = run_sft(str(run))
    assert first["steps"] == 4
    state = run / "train_state" / "sft" / "megatron"
    assert sorted(p.name for p in state.iterdir()) == ["megatron_step_0002"]
    manifest = {f["path"]: f["sha256"] for f in list_versions(RunDir(run), "sft")[0].manifest["files"]}
    shutil.rmtree(run / "models" / "sft")
    again = run_sft(str(run))
    assert again["steps"] == 4
    assert {f["path"]: f["sha256"] for f in list_versions(RunDir(run), "sft")[0].manifest["files"]} == manifest
    # every line the two jobs logged: the rerun started at step 3, and its steps repeat the first's
    rows = read_jsonl(RunDir(run).metrics_path("sft", create=False))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 3, 4]
    assert [r["loss"] for r in rows[4:]] == [r["loss"] for r in rows[2:4]]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(0), [])
        out += children
        todo += children
    return out


def test_megatron_sft_job_saves_on_the_stop_signal_and_its_requeue_publishes_the_same_bytes(tmp_path):
    """USR2 reaches the stage job's processes while its ranks train (as Slurm sends it before the
    time limit or on preemption, to every process of the job step): the ranks save at the next
    step boundary and exit, the job is requeued (submitit's real local executor, which restarts a
    job that asks to be), and the requeued job's ranks resume there. Periodic saves are off, so
    without the stop's save the requeued job would start over: every step runs exactly once, and
    v0000 is byte-identical to an undisturbed job's."""
    settings = [*MEGATRON, "sft.epochs=12", "sft.save_every=1000"]  # 24 steps of 8 of 16 examples
    runs = {name: clone_run(tmp_path / name, settings) for name in ("undisturbed", "stopped")}
    for run in runs.values():
        _deepseek_base(run)
        _write_sets(run)
    assert run_sft(str(runs["undisturbed"]))["steps"] == 24

    run = runs["stopped"]
    executor = submitit.LocalExecutor(folder=tmp_path / "logs", max_num_timeout=3)
    executor.update_parameters(timeout_min=10)
    job = executor.submit(StageTask("r1hpc.stages.sft_stage:run_sft", save_grace_s=60), run_dir=str(run))
    metrics = RunDir(run).metrics_path("sft", create=False)
    deadline = time.time() + 300
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):  # the ranks are training
        assert job.state not in ("FAILED", "FINISHED", "DONE") and time.time() < deadline, job.stderr()
        time.sleep(0.2)
    # As Slurm signals a job step (proctrack/cgroup): the task, torchrun and the ranks all get USR2.
    processes = _descendants(int(job.job_id))  # below submitit's local controller
    assert len(processes) >= 4, processes  # the task, torchrun, 2 ranks
    for pid in processes:
        with contextlib.suppress(ProcessLookupError):  # a short-lived helper process that exited meanwhile
            os.kill(pid, signal.SIGUSR2)
    summary = job.result()

    assert summary["steps"] == 24
    steps = [r["step"] for r in read_jsonl(metrics)]
    assert steps == list(range(1, 25)), steps  # each step once, over two attempts
    log = job.stderr() or ""
    assert "saving at the next step boundary" in log and "Requeued job" in (job.stdout() or "") + log, log
    stopped_at = [int(p.name.rsplit("_", 1)[1]) for p in (run / "train_state" / "sft" / "megatron").iterdir()]
    assert len(stopped_at) == 1 and 2 <= stopped_at[0] < 24, stopped_at  # the stop's save, nothing periodic
    manifests = {
        name: {f["path"]: f["sha256"] for f in list_versions(RunDir(r), "sft")[0].manifest["files"]}
        for name, r in runs.items()
    }
    assert manifests["stopped"] == manifests["undisturbed"]
    print(
        f"stopped after step {stopped_at[0]} of 24; step times",
        [round(r["step_time_s"], 2) for r in read_jsonl(metrics)],
    )
