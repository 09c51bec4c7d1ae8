"""The run report (r1hpc.report) built from a run directory filled with realistic files, and the
TensorBoard event files of r1hpc.tensorboard_log read back with tensorboard's EventAccumulator."""

from __future__ import annotations

import json
import math
import re

import pytest
from PIL import Image

from r1hpc.eval_metrics import summarize
from r1hpc.fsio import append_jsonl, atomic_write_json
from r1hpc.report import build_report, compare_sentences, job_times, main
from r1hpc.tensorboard_log import TBWriter, log_scalars, read_scalars, scalars_of

PLOTS = (
    "reward_accuracy.png",
    "response_length.png",
    "sft_loss.png",
    "heldout_pass1.png",
    "compute_time.png",
    "step_time.png",
)


def eval_summary_for(stage: str, correct_per_problem: list[int], k: int = 4) -> dict:
    """An eval summary as r1hpc.stages.eval writes it: problem i has correct_per_problem[i] of k right."""
    records = []
    for i, c in enumerate(correct_per_problem):
        for j in range(k):
            ok = j < c
            records.append(
                {
                    "problem_id": f"p{i}",
                    "difficulty": 1 + i % 4,
                    "kind": ("arith", "fraction")[i % 2],
                    "correct": float(ok),
                    "format": 1.0 if ok or j % 2 else 0.0,
                    "answer": "7" if ok else str(j),
                    "response_tokens": 40 + 3 * c,
                    "finish_reason": "stop",
                    "model_version": "v0008",
                }
            )
    return {"stage": stage, **summarize(records, k), "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 128}


def submitit_log(path, attempts: list[tuple[str, str]]) -> None:
    """A submitit log with one 'Starting' ... last line pair per attempt (start, end as HH:MM:SS)."""
    lines = []
    for start, end in attempts:
        lines += [
            f"submitit INFO (2026-11-23 {start},000) - Starting with JobEnvironment(job_id=1, hostname=vm)",
            f"submitit INFO (2026-11-23 {start},010) - Loading pickle: x_submitted.pkl",
            "some job output",
            f"submitit INFO (2026-11-23 {end},000) - Job completed successfully",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "myrun"
    for step in range(8):  # r1_zero learns; step 3 is logged twice (a rerun): the last line counts
        row = {
            "step": step,
            "stage": "r1_zero",
            "reward_mean": 0.1 + 0.1 * step,
            "reward_accuracy_math": 0.05 * step,
            "reward_format": min(1.0, 0.2 * step),
            "response_length_mean": 30.0 + 5 * step,
            "kl": 0.001 * step,
            "clip_frac_high": 0.01,
            "entropy": 2.0 - 0.1 * step,
            "time_rollout_s": 12.0,
            "time_train_s": 4.0,
            "time_handoff_s": 1.5,
        }
        append_jsonl(run / "metrics" / "r1_zero.jsonl", row)
        if step == 3:
            append_jsonl(run / "metrics" / "r1_zero.jsonl", {**row, "reward_mean": 0.42})
    for step in range(4):
        append_jsonl(
            run / "metrics" / "distill_rl.jsonl",
            {"step": step, "reward_mean": 0.2, "reward_accuracy_math": 0.1, "response_length_mean": 20.0 + step},
        )
    for step in range(0, 100, 10):
        append_jsonl(run / "metrics" / "sft.jsonl", {"step": step, "loss": 3.0 / (1 + step)})
    n = 40
    summaries = {
        "base": [0] * 36 + [1] * 4,  # pass@1 0.025
        "r1_zero": [4] * 20 + [2] * 16 + [0] * 4,  # 0.7
        "distill": [2] * 20 + [1] * 20,  # 0.375
        "distill_rl": [2] * 18 + [1] * 22,
    }  # 0.3625
    for stage, correct in summaries.items():
        assert len(correct) == n
        atomic_write_json(run / "eval" / f"{stage}.json", eval_summary_for(stage, correct))
    jobs = [
        ("base", "train", "local", ["111"]),
        ("eval-base", "eval", "local", ["112", "113"]),
        ("r1_zero", "rollout", "local", ["114"]),
        ("r1_zero", "train", "slurm", ["9001"]),
        ("sft", "train", "local", ["115"]),
    ]
    for stage, kind, executor, tids in jobs:
        append_jsonl(
            run / "jobs.jsonl",
            {
                "stage": stage,
                "step": None,
                "kind": kind,
                "executor": executor,
                "job_id": tids[0],
                "task_ids": tids,
                "array_size": len(tids) if len(tids) > 1 else 0,
            },
        )
    submitit_log(run / "logs" / "111" / "111_0_log.out", [("10:00:00", "10:01:30")])  # 90 s
    submitit_log(run / "logs" / "112" / "112_0_log.out", [("10:02:00", "10:02:30")])  # 30 s
    submitit_log(run / "logs" / "112" / "112_0_log.err", [("10:02:00", "10:02:30")])  # the same lines: once
    submitit_log(run / "logs" / "112" / "112_1_log.out", [("10:02:00", "10:02:30")])  # rank 1: not counted
    submitit_log(run / "logs" / "113" / "113_0_log.err", [("10:02:00", "10:02:45")])  # 45 s
    submitit_log(
        run / "logs" / "114" / "114_0_log.out",
        [
            ("11:00:00", "11:01:00"),  # requeued: 60 + 120 s
            ("11:05:00", "11:07:00"),
        ],
    )
    submitit_log(run / "logs" / "9001" / "9001_0_log.out", [("12:00:00", "12:00:20")])  # slurm, no sacct: 20 s
    # sft's job 115 has no log: counted as a task without a time
    return run


def test_job_times_from_logs_and_sacct_fallback(run_dir, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # sacct unreachable: Slurm jobs fall back to their logs
    t = job_times(run_dir)
    assert t["base"]["seconds"] == {"train": 90.0}
    assert t["eval-base"]["seconds"] == {"eval": 75.0} and t["eval-base"]["tasks"] == 2
    assert t["r1_zero"]["seconds"] == {"rollout": 180.0, "train": 20.0}
    assert any("sacct not on PATH" in s for s in t["r1_zero"]["sources"])
    assert t["sft"]["unknown"] == 1 and t["sft"]["seconds"] == {}


def test_report_tables_sentences_and_plots(run_dir, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    path = build_report(run_dir)
    text = path.read_text()
    assert path == run_dir / "report.md"
    assert re.search(
        r"\n\| r1_zero \| 0\.700 \[0\.5\d\d, 0\.8\d\d\] \| 0\.900 \| 0\.\d+ \| - \| [\d.]+ \| 40 x 4 \| v0008 \|",
        text,
    )  # records without mixed_language (written before it existed): "-" in the mixed-language column
    assert "| base | 0.025 [" in text
    for stage in ("cold_start", "reasoning_rl", "rl_all", "student_base"):
        assert f"| {stage} | not run |" in text
    assert "| distilled from the teacher (SFT) (distill) | 0.375 [" in text
    assert "| trained directly with RL (distill_rl) | 0.362 [" in text
    # per-difficulty table: 4 difficulties, problem i has difficulty 1 + i % 4
    assert "| stage | difficulty 1 | difficulty 2 | difficulty 3 | difficulty 4 |" in text
    # per-kind table: problem i is arith for even i, fraction for odd i (20 of each of r1_zero's 40)
    assert "| stage | arith (20) | fraction (20) |" in text
    by_kind = json.loads((run_dir / "eval" / "r1_zero.json").read_text())["by_kind"]
    cells = [
        f"{m['pass_at_1']:.3f} [{m['pass_at_1_ci'][0]:.3f}, {m['pass_at_1_ci'][1]:.3f}] / {m['cons_at_k']:.3f}"
        for m in (by_kind["arith"], by_kind["fraction"])
    ]
    assert f"\n| r1_zero | {cells[0]} | {cells[1]} |\n" in text
    # "what this shows" is computed from the numbers
    assert re.search(
        r"r1_zero raised held-out pass@1 from 0\.025 \[.*\] to 0\.700 \[.*\] \(vs base\); "
        r"the 95% intervals do not overlap",
        text,
    )
    assert re.search(
        r"distillation reached pass@1 0\.375 .* RL directly 0\.362 .*distillation is ahead; "
        r"the 95% intervals overlap",
        text,
    )
    assert "mean response length rose from 35.0 tokens to 60.0 tokens" in text  # means of first / last 3 steps
    assert (
        "| r1_zero | 8 | 0.100 -> 0.800 | 0.000 -> 0.350 | 30.0 -> 65.0 |" in text
    )  # 8 steps: the rerun step counted once
    assert "| sft | 10 | 3.000 -> 0.033 |" in text
    assert "| eval-base | 1 | 2 | 1.25 | eval 1.25 | submitit log timestamps |" in text
    assert re.search(r"\| sft \| 1 \| 1 \| 0\.00 \| - \| none; 1 task\(s\) without a time \|", text)
    assert "Compute: 6.1 job-minutes in all; r1_zero took the most (3.3 min, 55%)" in text  # (90+75+180+20) s
    # "Where the time goes" with metrics from before the full per-step timing: what is there, "-" for the rest
    assert "| r1_zero | 8 | - | 12.0 | - | 4.0 | - | - | - | 1.5 | - | - | - |" in text
    assert "| distill_rl | no timing in metrics |" in text and "| rl_all | not run |" in text
    assert "a GRPO step took" not in text  # no time_step_s: no sentence
    for name in PLOTS:
        assert f"(plots/{name})" in text
        with Image.open(run_dir / "plots" / name) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100


def test_report_where_the_time_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    run = tmp_path / "timed"
    # three steps; the first carries the job start-up (medians ignore it); step 1 logged twice
    steps = [  # (step_s, rollout, score, train, wait, reload, publish, handoff, idle train, idle rollout)
        (90.0, 30.0, 3.0, 10.0, 40.0, 5.0, 2.0, 47.0, 0.89, 0.58),
        (40.0, 20.0, 2.0, 12.0, 14.0, 4.0, 1.0, 6.0, 0.70, 0.35),
        (50.0, 22.0, 2.5, 11.0, 20.0, 6.0, 1.5, 14.5, 0.78, 0.39),
    ]
    keys = (
        "time_step_s",
        "time_rollout_s",
        "time_score_s",
        "time_train_s",
        "time_wait_s",
        "time_reload_s",
        "time_publish_s",
        "time_handoff_s",
        "idle_train_frac",
        "idle_rollout_frac",
    )
    for step, values in enumerate(steps):
        if step == 1:  # the killed first try of step 1: replaced by the line after it
            append_jsonl(run / "metrics" / "r1_zero.jsonl", {"step": 1, **dict.fromkeys(keys, 999.0)})
        append_jsonl(run / "metrics" / "r1_zero.jsonl", {"step": step, "reward_mean": 0.1, **dict(zip(keys, values))})
    text = build_report(run).read_text()
    table = text.split("## Where the time goes")[1].split("## Compute time")[0]
    assert (
        "| RL stage | timed steps | whole step s | rollout s | scoring s | training s | wait for rollouts s | "
        "policy reload s | publish s | overhead s | overhead share | train job idle | rollout tasks idle |"
    ) in table
    # medians; overhead share = median of 47/90, 6/40, 14.5/50 = 0.52, 0.15, 0.29
    assert "| r1_zero | 3 | 50.0 | 22.0 | 2.5 | 11.0 | 20.0 | 5.0 | 1.5 | 14.5 | 29% | 78% | 39% |" in table
    assert "| r1_zero | not run |" not in table and "| reasoning_rl | not run |" in table
    assert "(plots/step_time.png)" in table
    assert (
        "- r1_zero: a GRPO step took 50.0 s (median); 29% of it overhead (job starts, handoffs, polling); "
        "idle: the train job 78%, the rollout tasks 39%." in text
    )
    with Image.open(run / "plots" / "step_time.png") as im:
        im.verify()


def test_report_of_an_empty_run_says_not_run(tmp_path, capsys):
    run = tmp_path / "fresh"
    run.mkdir()
    assert main([str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.md")
    text = (run / "report.md").read_text()
    assert "| base | not run |" in text and "| r1_zero | not run |" in text
    assert "No jobs recorded" in text and "Nothing evaluated or trained yet" in text
    for name in PLOTS:
        with Image.open(run / "plots" / name) as im:
            im.verify()
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unreadable_summary_is_reported_not_fatal(tmp_path):
    run = tmp_path / "r"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "sft.json").write_text("{ not json")
    (run / "eval" / "rl_all.json").write_text(json.dumps({"pass_at_1": 0.5}))
    text = build_report(run).read_text()
    assert "| sft | unreadable:" in text and "| rl_all | unreadable:" in text and "'pass_at_1_ci'" in text


def test_compare_sentences_equal_and_missing():
    same = eval_summary_for("x", [2] * 10)
    sentences = compare_sentences({"sft": same, "rl_all": same})
    assert sentences[0].startswith("rl_all left held-out pass@1 unchanged at 0.500 (vs sft); the 95% intervals overlap")
    # Equal as printed: 0.3829 vs 0.3826 is "unchanged at 0.383", not "raised from 0.383 to 0.383".
    nudged = {**same, "pass_at_1": 0.5004}
    assert compare_sentences({"sft": same, "rl_all": nudged})[0].startswith("rl_all left held-out pass@1 unchanged")
    assert compare_sentences({}) == []


def test_job_times_with_a_real_local_submitit_job(tmp_path):
    from r1hpc.config import load_config
    from r1hpc.launch import Launcher

    cfg = load_config("configs/tiny.yaml", [f"runs_dir={tmp_path}", "name=jt"])
    sub = Launcher(cfg).submit("base", "train", "r1hpc.stages.common:stage_seed", {"seed": 3})
    assert sub.results()[0] >= 0
    t = job_times(cfg.run_dir)
    assert t["base"]["tasks"] == 1 and t["base"]["unknown"] == 0
    assert t["base"]["sources"] == ["submitit log timestamps"]
    assert 0.0 <= t["base"]["seconds"]["train"] < 60


# ---------------------------------------------------------------- TensorBoard


def test_scalars_of_keeps_finite_numbers_only():
    rec = {
        "step": 3,
        "time": 1.0,
        "loss": 2.5,
        "n": 4,
        "flag": True,
        "name": "x",
        "none": None,
        "nan": math.nan,
        "rewards": {"format": 0.5, "code": None},
    }
    assert scalars_of(rec) == {"loss": 2.5, "n": 4.0, "flag": 1.0, "rewards/format": 0.5}


def test_tensorboard_events_read_back_and_rerun_replaces_steps(tmp_path):
    with TBWriter(tmp_path, "r1_zero") as tb:
        for step in range(5):
            assert tb.log(step, {"step": step, "reward_mean": 0.1 * step, "kl": 0.01, "time": 1795000000.0 + step}) == 2
    with TBWriter(tmp_path, "sft") as tb:
        tb.log(0, {"loss": 3.0})
    # a requeued job reruns from step 3 and gets other values: steps 3 and 4 are replaced
    with TBWriter(tmp_path, "r1_zero") as tb:
        tb.log(3, {"reward_mean": 9.0})
    got = read_scalars(tmp_path, "r1_zero")
    assert got["reward_mean"] == [(0, 0.0), (1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, 9.0)]
    assert [s for s, _ in got["kl"]] == [0, 1, 2]
    assert read_scalars(tmp_path, "sft") == {"loss": [(0, 3.0)]}
    assert len(list((tmp_path / "tensorboard" / "r1_zero").glob("events.out.tfevents.*"))) == 2
    assert read_scalars(tmp_path, "never_logged") == {}
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        TBWriter(tmp_path, "x").log(-1, {"a": 1})


def test_log_scalars_reuses_one_writer_per_stage(tmp_path):
    for step in range(3):
        assert log_scalars(tmp_path, "distill", {"step": step, "loss": 1.0 / (step + 1)}) == 1
    assert len(list((tmp_path / "tensorboard" / "distill").glob("events.out.tfevents.*"))) == 1
    assert read_scalars(tmp_path, "distill")["loss"] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    with pytest.raises(ValueError, match="has no 'step'"):
        log_scalars(tmp_path, "distill", {"loss": 1.0})


@pytest.mark.slurm
def test_job_times_from_sacct_on_the_test_cluster(tmp_path):
    """A real 2-task array on the Slurm test cluster: its times come from sacct (needs SLURM_CONF,
    set by `make test`; fails without it, like tests/slurm)."""
    import os
    import time

    from r1hpc.config import load_config
    from r1hpc.launch import Launcher

    assert os.environ.get("SLURM_CONF"), "SLURM_CONF is not set: run via `make test` (slurm/testcluster/cluster.py run)"
    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            "name=sq",
            "launch.executor=slurm",
            "launch.eval.cpus_per_task=1",
            "launch.eval.mem_gb=1",
        ],
    )
    sub = Launcher(cfg).submit_array("eval-base", "eval", "r1hpc.stages.common:stage_seed", [{"seed": 1}, {"seed": 2}])
    assert len(sub.results()) == 2
    deadline = time.time() + 60
    while True:  # sacct records the final state a moment after the job leaves the queue
        t = job_times(cfg.run_dir)["eval-base"]
        if t["sources"] == ["sacct ElapsedRaw"] or time.time() > deadline:
            break
        time.sleep(1)
    assert t["sources"] == ["sacct ElapsedRaw"] and t["tasks"] == 2 and t["unknown"] == 0
    assert 0 <= t["seconds"]["eval"] < 120
