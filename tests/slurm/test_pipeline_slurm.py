"""The whole recipe (configs/smoke.yaml) as real Slurm jobs: arrays, afterok chains, and R1-Zero's
long-lived train job requeued while it runs. The run must end with the same models and metrics as the
undisturbed local run with the same seed."""

import time

from r1hpc.config import read_run_config
from r1hpc.fsio import read_jsonl
from r1hpc.pipeline import MODEL_STAGES, main
from r1hpc.stages.common import read_metrics
from r1hpc.status import summarize_run
from r1hpc.store import RunDir, latest_model, version_published

TIMING = ("time", "idle_")  # wall-clock figures: they differ between any two runs


def _job(run_dir, stage, step, kind, function=""):
    for rec in read_jsonl(run_dir / "jobs.jsonl"):
        if rec["stage"] == stage and rec["step"] == step and rec["kind"] == kind and rec["target"].endswith(function):
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

    # Requeue R1-Zero's long-lived train job mid-stage, once it published v0001 (as a preemption
    # would): the requeued job restores its state, the rollout tasks wait for it meanwhile.
    target = _job(run_dir, "r1_zero", None, "train", ":train_loop")["job_id"]
    deadline = time.time() + 600
    while not version_published(RunDir(run_dir), "r1_zero", 1):
        assert time.time() < deadline, f"job {target} never published v0001"
        time.sleep(0.05)
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
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]  # noqa: E731
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
