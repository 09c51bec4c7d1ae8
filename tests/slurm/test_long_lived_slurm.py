"""A long-lived GRPO stage on the real Slurm test cluster: two submissions for the stage however
many steps; a rollout task and the train job killed mid-stage (no exception, no failure marker),
the surviving rollout task stopping on the train job's silent heartbeat, and a rerun of
`r1hpc run` ending with the versions and metrics of an undisturbed run."""

from __future__ import annotations

import os
import signal
import time

from r1hpc.fsio import read_jsonl
from r1hpc.lease import Lease
from r1hpc.pipeline import main
from r1hpc.stages.common import read_metrics
from r1hpc.store import RunDir, list_versions, version_published

STEPS = 8
OVERRIDES = [
    f"r1_zero.steps={STEPS}",
    # steps long enough (~1 s here) that the stage is still running when scancel takes effect
    "grpo.prompts_per_step=4",
    "grpo.group_size=4",
    "grpo.max_new_tokens=48",
    "grpo.checkpoint_every=2",
    "grpo.heartbeat_timeout_s=12",
    "grpo.poll_max_s=0.2",
]
STAGES = ["--stages", "data,base,r1_zero"]
TIMING = ("time", "idle_")


def _weights(run_dir):
    return {
        v.version: {f["path"]: f["sha256"] for f in v.manifest["files"] if f["path"].endswith(".safetensors")}
        for v in list_versions(RunDir(run_dir), "r1_zero")
    }


def _metrics(run_dir):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in read_metrics(run_dir, "r1_zero")]


def _stage_jobs(run_dir):
    return [r for r in read_jsonl(run_dir / "jobs.jsonl") if r["stage"] == "r1_zero"]


def test_long_lived_stage_survives_scancel_of_a_rollout_task_and_the_train_job(tmp_path, slurm, slurm_env, monkeypatch):
    local = tmp_path / "local"
    assert main(["configs/smoke.yaml", f"runs_dir={local}", *OVERRIDES, *STAGES]) == 0

    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    runs = tmp_path / "slurm"
    args = ["configs/smoke.yaml", f"runs_dir={runs}", "launch.executor=slurm", *OVERRIDES, *STAGES]
    assert main([*args, "--no-wait"]) == 0
    run_dir = runs / "smoke"
    jobs = _stage_jobs(run_dir)
    # O(1) submissions for the stage, not 2 x steps: the rollout array and the train job, both
    # waiting only on the base (the train job publishes v0000 itself).
    base = [r["job_id"] for r in read_jsonl(run_dir / "jobs.jsonl") if r["stage"] == "base"]
    assert [(r["target"].rsplit(":", 1)[1], r["array_size"], r["after"]) for r in jobs] == [
        ("rollout_loop", 2, base),
        ("train_loop", 0, base),
    ]
    rollout, train = jobs[0], jobs[1]

    deadline = time.time() + 600
    while not version_published(RunDir(run_dir), "r1_zero", 2):
        assert time.time() < deadline, "the stage never published v0002"
        time.sleep(0.05)
    # scancel both, and SIGKILL their processes at once (found by their heartbeat leases): on a
    # real cluster the job's cgroup is killed with it; the test cluster's proctrack/linuxproc only
    # signals the batch script and leaves the job step's processes running for KillWait (30 s).
    pids = [
        Lease(RunDir(run_dir).lease_path("r1_zero", who, create=False)).holder()["pid"]
        for who in ("rollout_1", "train")
    ]
    slurm.cmd(["scancel", rollout["task_ids"][1], train["job_id"]])
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # The other rollout task waits for v(N) from a train job that will never publish it: it stops
    # once the train job's heartbeat is grpo.heartbeat_timeout_s old, instead of waiting an hour.
    states = slurm.wait_for_state(rollout["job_id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=180)
    survivor, cancelled = rollout["task_ids"]
    assert states[survivor] == "FAILED" and states[cancelled] in ("CANCELLED", "FAILED"), states
    assert not version_published(RunDir(run_dir), "r1_zero", STEPS), "cancelled too late: the stage had finished"
    errors = "".join(p.read_text() for p in (run_dir / "logs").rglob("*.err"))
    assert "train of stage r1_zero stopped: its heartbeat" in errors

    # Re-running the same command resumes the stage (rollouts at their first missing shard, the
    # trainer from its newest checkpoint with a replay) and waits for it.
    assert main(args) == 0
    assert _weights(run_dir) == _weights(local / "smoke")
    assert sorted(_weights(run_dir)) == list(range(STEPS + 1))
    assert _metrics(run_dir) == _metrics(local / "smoke")
    assert len(_stage_jobs(run_dir)) == 4  # the rerun: two more submissions
