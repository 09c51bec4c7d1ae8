"""The whole recipe (configs/smoke.yaml) as real Slurm jobs: arrays, afterok chains, and a train
job of R1-Zero requeued while it runs. The run must end with the same models and metrics as the
undisturbed local run with the same seed."""

import time

from r1hpc.config import read_run_config
from r1hpc.fsio import read_jsonl
from r1hpc.pipeline import MODEL_STAGES, main
from r1hpc.stages.common import read_metrics
from r1hpc.status import summarize_run
from r1hpc.store import RunDir, latest_model

TIMING_KEYS = {"time", "time_rollout_s", "time_score_s", "time_train_s", "time_handoff_s"}


def _job(run_dir, stage, step, kind):
    for rec in read_jsonl(run_dir / "jobs.jsonl"):
        if rec["stage"] == stage and rec["step"] == step and rec["kind"] == kind:
            return rec
    raise AssertionError(f"no {kind} job for {stage} step {step} in jobs.jsonl")


def test_smoke_recipe_on_slurm_survives_a_requeue(tmp_path, slurm, slurm_env, monkeypatch, smoke_run_local):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    assert main(["configs/smoke.yaml", f"runs_dir={tmp_path}", "launch.executor=slurm", "--no-wait"]) == 0
    run_dir = tmp_path / "smoke"
    records = read_jsonl(run_dir / "jobs.jsonl")
    arrays = [r for r in records if r["array_size"] > 0]
    assert arrays and all(r["executor"] == "slurm" for r in records)
    assert any(r["after"] for r in records)  # afterok chains, resolved by Slurm itself

    # Requeue R1-Zero's step-1 train job while it runs (as a preemption would).
    target = _job(run_dir, "r1_zero", 1, "train")["job_id"]
    deadline = time.time() + 600
    while slurm.squeue_field(target, "%T") != "RUNNING":
        assert time.time() < deadline, f"job {target} never ran"
        time.sleep(0.2)
    time.sleep(1.0)  # let it get into its work
    slurm.cmd(["scontrol", "requeue", target])
    time.sleep(2.0)  # releasing in the same second revokes the credential (notes)
    slurm.cmd(["scontrol", "update", f"JobId={target}", "StartTime=now"])

    report = _job(run_dir, "report", None, "eval")["job_id"]
    states = slurm.wait_for_state(report, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=1200)
    assert set(states.values()) == {"COMPLETED"}, states
    history = slurm.sacct_rows(target, ["State"], duplicates=True)
    assert [r["State"] for r in history] == ["REQUEUED", "COMPLETED"], history

    # Same seed, same outputs: the requeued run equals the undisturbed local one.
    ours, ref = RunDir(run_dir), RunDir(smoke_run_local)
    for stage in ("base", "r1_zero", "cold_start", "sft", "distill"):
        a, b = latest_model(ours, stage, verify="sha256"), latest_model(ref, stage, verify="sha256")
        assert a.version == b.version
        assert {f["path"]: f["sha256"] for f in a.manifest["files"]} == {
            f["path"]: f["sha256"] for f in b.manifest["files"]
        }, stage
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    assert strip(read_metrics(run_dir, "r1_zero")) == strip(read_metrics(smoke_run_local, "r1_zero"))
    assert all((run_dir / "models" / s).is_dir() for s in MODEL_STAGES)
    assert (run_dir / "report.md").exists()

    # r1hpc status over sacct: every job and array task of the run completed (the requeued one
    # in the end), and each GRPO stage published all its configured steps.
    summary = summarize_run(run_dir)
    assert {j["job_id"] for j in summary["jobs"]} == {r["job_id"] for r in read_jsonl(run_dir / "jobs.jsonl")}
    for job in summary["jobs"]:
        assert job["states"] == ["COMPLETED"] * max(1, job["array_size"]), job
    cfg = read_run_config(run_dir)
    assert (
        summary["stages"]["r1_zero"]["steps_done"] == summary["stages"]["r1_zero"]["steps_planned"] == cfg.r1_zero.steps
    )
