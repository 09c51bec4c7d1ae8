"""`r1hpc status`: where a GRPO step's time goes (medians per step, idle shares), from a run
directory written here; figures worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1hpc.fsio import append_jsonl, atomic_write_json
from r1hpc.status import format_status, main, step_time_summary, summarize_run

REPO = Path(__file__).resolve().parents[1]


def timed_step(step: int, rollout: float, train: float, step_s: float, **extra: float) -> dict:
    return {
        "time": 1.7e9 + step,
        "step": step,
        "stage": "r1_zero",
        "loss": 0.5,
        "reward_mean": 0.25,
        "time_rollout_s": rollout,
        "time_score_s": 2.0,
        "time_train_s": train,
        "time_wait_s": 10.0 + step,
        "time_reload_s": 3.0,
        "time_publish_s": 1.0,
        "time_step_s": step_s,
        "time_handoff_s": step_s - rollout - 2.0 - train,
        "idle_train_frac": 1 - train / step_s,
        "idle_rollout_frac": 1 - (rollout + 2.0 + 3.0) / step_s,
        "time_publish_started": 1.7e9 + step,
        **extra,
    }


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run = tmp_path / "smoke"
    run.mkdir()
    config = (REPO / "configs" / "smoke.yaml").read_text()
    assert "r1_zero: {steps: 2," in config
    (run / "config.yaml").write_text(config.replace("r1_zero: {steps: 2,", "r1_zero: {steps: 5,"))
    for v in range(4):  # v0003 published: 3 of the 5 steps done
        atomic_write_json(run / "models" / "r1_zero" / f"v{v:04d}" / "MANIFEST.json", {})
    atomic_write_json(run / "models" / "distill_rl" / "v0000" / "MANIFEST.json", {})
    metrics = run / "metrics" / "r1_zero.jsonl"
    # step 0: 100 s (start-up heavy), step 1: 40 s, step 2: 50 s; step 1 was logged twice (a rerun),
    # its first line must not count.
    append_jsonl(metrics, timed_step(0, rollout=30.0, train=8.0, step_s=100.0))
    append_jsonl(metrics, timed_step(1, rollout=99.0, train=99.0, step_s=999.0))
    append_jsonl(metrics, timed_step(1, rollout=20.0, train=10.0, step_s=40.0))
    append_jsonl(metrics, timed_step(2, rollout=24.0, train=12.0, step_s=50.0))
    # an old run's stage: metrics without any timing
    append_jsonl(run / "metrics" / "distill_rl.jsonl", {"time": 1.0, "step": 0, "reward_mean": 0.1})
    return run


def test_step_time_summary_medians_and_old_rows() -> None:
    rows = [
        timed_step(0, rollout=30.0, train=8.0, step_s=100.0),
        timed_step(1, rollout=20.0, train=10.0, step_s=40.0),
        timed_step(2, rollout=24.0, train=12.0, step_s=50.0),
    ]
    t = step_time_summary(rows)
    assert t is not None and t["steps"] == 3
    assert t["time_step_s"] == 50.0 and t["time_rollout_s"] == 24.0 and t["time_train_s"] == 10.0
    assert t["time_wait_s"] == 11.0 and t["time_reload_s"] == 3.0
    # overhead per step: 60, 8, 12 s -> median 12; shares 0.6, 0.2, 0.24 -> 0.24
    assert t["time_handoff_s"] == 12.0 and t["overhead_frac"] == pytest.approx(0.24)
    assert t["idle_train_frac"] == pytest.approx(0.76)  # 0.92, 0.75, 0.76
    assert t["idle_rollout_frac"] == pytest.approx(0.42)  # 0.65, 0.375, 0.42
    assert step_time_summary([{"step": 0, "loss": 1.0}]) is None
    # a run from before the full timing: only some keys; the rest are None, not an error
    old = step_time_summary([{"step": 0, "time_rollout_s": 12.0, "time_train_s": 4.0, "time_handoff_s": 1.5}])
    assert old is not None and old["time_rollout_s"] == 12.0
    assert old["time_step_s"] is None and old["overhead_frac"] is None and old["idle_train_frac"] is None


def test_status_shows_where_the_time_goes(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = summarize_run(run, ask_slurm=False)
    r1 = summary["stages"]["r1_zero"]
    assert (r1["steps_done"], r1["steps_planned"]) == (3, 5)
    assert r1["step_times"]["steps"] == 3 and r1["step_times"]["time_step_s"] == 50.0  # the rerun line replaced
    assert summary["stages"]["distill_rl"]["step_times"] is None
    assert main([str(run), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    # the same text as format_status (but the first line's elapsed time, which moves on)
    assert out.split("\n", 1)[1] == format_status(summary).split("\n", 1)[1] + "\n"
    block = out.split("where the time goes (GRPO, per step):\n")[1].split("\n\njobs:")[0].splitlines()
    assert block == [
        "  r1_zero: step 3/5, median over 3 timed steps: 50.0 s per step",
        "    rollout 24.0 s, scoring 2.0 s, training 10.0 s, overhead 12.0 s (24% of the step): "
        "job starts, handoffs, polling",
        "    train job: waits 11.0 s for the rollouts, publishes the new policy in 1.0 s, idle 76% of the step",
        "    rollout tasks: reload the policy in 3.0 s, idle 42% of the step",
    ]
    # the stage line: its state, step N/M and the last step's figures, in words (no raw metric keys)
    stage_line = next(line for line in out.splitlines() if line.startswith("  running  r1_zero "))
    assert "step 3/5, reward 0.250" in stage_line, stage_line
    for raw in ("models=", "latest=", "rollout_steps=", "reward_mean", "time_", "idle_"):
        assert raw not in out, raw
    assert out.splitlines()[0].startswith("smoke: ") and "elapsed" in out.splitlines()[0]
    assert "  waiting  cold_start    after r1_zero" in out.splitlines()
    assert out.endswith("jobs: none recorded yet (jobs.jsonl)\n")


def test_status_without_timing_has_no_time_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "old"
    append_jsonl(run / "jobs.jsonl", {"time": "t", "stage": "sft", "step": None, "kind": "train", "job_id": "1"})
    append_jsonl(run / "metrics" / "sft.jsonl", {"time": 1.0, "step": 0, "loss": 2.0})
    assert main([str(run), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    assert "where the time goes" not in out and "step 0, loss 2.000" in out
    assert "jobs per stage" in out and "--jobs" in out
    assert main([str(run), "--no-slurm", "--jobs"]) == 0
    every = capsys.readouterr().out
    assert "submitted" in every and "sft" in every.split("states\n")[1]


def test_status_of_a_slurm_run(run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on Slurm, seen from elsewhere: the view takes the jobs' states from sacct/squeue (here
    stubbed), a job per stage line names them, and a failed job marks its stage failed."""
    import r1hpc.status as status

    for job_id, stage, step in (("201", "r1_zero", None), ("202", "distill_rl", None), ("203", "cold_start", None)):
        append_jsonl(
            run / "jobs.jsonl",
            {
                "time": "2026-01-01T00:00:00+00:00",
                "stage": stage,
                "step": step,
                "kind": "train",
                "executor": "slurm",
                "job_id": job_id,
                "task_ids": [job_id],
                "array_size": 0,
            },
        )
    states = {"201": ["RUNNING"], "202": ["FAILED"]}
    monkeypatch.setattr(status, "slurm_states", lambda ids: {j: s for j, s in states.items() if j in ids})
    monkeypatch.setattr(status, "queued_states", lambda ids: {j: ["PENDING"] for j in ids if j == "203"})
    assert main([str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("  running  r1_zero ") and "step 3/5" in line for line in lines)
    assert any(line.startswith("  failed   distill_rl ") and "job 202 (train) FAILED" in line for line in lines)
    assert "  waiting  cold_start    queued on Slurm (job 203)" in lines
    assert "time left" not in lines[0] and "a job failed" in lines[0]
    jobs = lines[lines.index(next(line for line in lines if line.startswith("jobs per stage"))) :]
    assert jobs[0].startswith("jobs per stage (states from Slurm (sacct/squeue)")
    assert [line.split()[0] for line in jobs[2:]] == ["r1_zero", "cold_start", "distill_rl"]  # recipe order
    assert jobs[2].endswith("201  RUNNING") and jobs[4].endswith("202  FAILED")
