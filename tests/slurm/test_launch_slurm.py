"""The launcher on the real test cluster: arrays, afterok chains, names for accounting, requeue."""

import json

import pytest

from r1hpc.config import load_config
from r1hpc.fsio import read_json, read_jsonl
from r1hpc.launch import JobFailed, Launcher


@pytest.fixture
def slurm_launcher(tmp_path, slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])

    def make(*overrides):
        cfg = load_config(
            None,
            [
                f"runs_dir={tmp_path}",
                "name=slt",
                "launch.executor=slurm",
                "launch.rollout.cpus_per_task=1",
                "launch.rollout.mem_gb=1",
                "launch.train.cpus_per_task=1",
                "launch.train.mem_gb=1",
                *overrides,
            ],
        )
        return Launcher(cfg)

    return make


def test_array_then_afterok_job_on_slurm(slurm_launcher, slurm, tmp_path):
    launcher = slurm_launcher("launch.rollout.gpus_per_node=1", "launch.account=research")
    array = launcher.submit_array(
        "r1_zero", "rollout", "jobfns:record_env", [{"path": str(tmp_path / f"env{i}.json")} for i in range(3)], step=2
    )
    train = launcher.submit("r1_zero", "train", "jobfns:square", {"x": 7}, step=2, after=[array])
    # The dependent job waits on the whole array in Slurm itself (not in this process).
    assert train.results() == [49]
    seen = array.results()
    assert sorted(int(s["SLURM_ARRAY_TASK_ID"]) for s in seen) == [0, 1, 2]
    assert all(s["SLURM_ARRAY_JOB_ID"] == array.job_id for s in seen)
    assert all(len(s["CUDA_VISIBLE_DEVICES"].split(",")) == 1 for s in seen)
    slurm.wait_for_state(array.job_id, {"COMPLETED"}, timeout=60)  # also waits for sacct's full record
    rows = slurm.sacct_rows(array.job_id, ["JobName", "Account", "Comment", "AllocTRES", "State"])
    assert len(rows) == 3
    for row in rows:
        assert row["JobName"] == "r1hpc:slt:r1_zero:2"
        assert row["Account"] == "research"
        assert row["Comment"] == "r1hpc run=slt stage=r1_zero step=2"
        assert "gres/gpu=1" in row["AllocTRES"] and row["State"] == "COMPLETED"
    slurm.wait_for_state(train.job_id, {"COMPLETED"}, timeout=60)
    dep = slurm.sacct_rows(train.job_id, ["JobName", "State"])
    assert dep[0]["JobName"] == "r1hpc:slt:r1_zero:2" and dep[0]["State"] == "COMPLETED"
    records = read_jsonl(launcher.run_dir / "jobs.jsonl")
    assert records[1]["after"] == [array.job_id] and records[0]["executor"] == "slurm"


def test_failed_array_task_cancels_its_dependent(slurm_launcher, slurm):
    launcher = slurm_launcher()
    bad = launcher.submit_array("s", "rollout", "jobfns:fail", [{"message": "task-boom"}], step=0)
    after = launcher.submit("s", "train", "jobfns:square", {"x": 1}, step=0, after=[bad])
    with pytest.raises(JobFailed, match="task-boom"):
        bad.results()
    states = slurm.wait_for_state(after.job_id, {"CANCELLED"}, timeout=60)
    assert set(states.values()) == {"CANCELLED"}


@pytest.mark.slow
def test_time_limit_checkpoint_requeue_resumes(slurm_launcher, slurm, tmp_path):
    """A job longer than its 2-minute limit gets USR2 before the limit, is requeued by submitit
    and resumes from its last checkpoint: every step is done, across more than one attempt. The
    same for a job of slurm/templates/stage.sbatch (its trap requeues), submitted alongside.

    Slurm may send the signal up to 60 s before the time it was asked for (its timer's
    resolution). Under a 1-minute limit with USR2 30 s before it, it once came in the job's first
    seconds, before submitit had installed its handler, and killed the job: so 2 minutes and 45 s,
    which put the signal 15-75 s into an attempt, and 80 s of steps, which outlast it."""
    # The plain-sbatch template's own time-limit path runs beside this one (the same wait).
    from test_stage_template import check_requeued_and_resumed, submit_over_time_limit

    (tmp_path / "template").mkdir()
    template_job = submit_over_time_limit(slurm.env, tmp_path / "template")
    launcher = slurm_launcher("launch.signal_delay_s=45", "launch.train.time_min=2", "launch.max_requeues=4")
    sub = launcher.submit("s", "train", "jobfns:resumable_count", {"state_dir": str(tmp_path), "n": 20, "step_s": 4.0})
    assert sub.results() == [list(range(20))]
    attempts = read_jsonl(tmp_path / "attempts.jsonl")
    assert sorted(a["step"] for a in attempts) == list(range(20)), attempts
    assert max(a["attempt"] for a in attempts) >= 1, attempts
    assert read_json(tmp_path / "counter.json") == {"done": list(range(20))}
    rows = slurm.sacct_rows(sub.job_id, ["State"], duplicates=True)
    assert "REQUEUED" in {r["State"] for r in rows}, json.dumps(rows)
    check_requeued_and_resumed(slurm, template_job, tmp_path / "template")


def test_run_refuses_while_its_slurm_jobs_are_live(tmp_path, slurm, slurm_env, monkeypatch, capsys):
    """A second `r1hpc run` (e.g. after a --no-wait submission) while the run's jobs are still
    queued would submit them again: refused, naming the live jobs."""
    from r1hpc.fsio import append_jsonl
    from r1hpc.pipeline import main

    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    args = ["configs/smoke.yaml", f"runs_dir={tmp_path}", "launch.executor=slurm", "--stages", "data", "--no-wait"]
    held = slurm.sbatch("#!/bin/bash\nsleep 60\n", "--hold", "-J", "r1hpc:smoke:r1_zero:3", cwd=tmp_path)
    try:
        (tmp_path / "smoke").mkdir()
        append_jsonl(
            tmp_path / "smoke" / "jobs.jsonl",
            {"stage": "r1_zero", "step": 3, "kind": "train", "job_id": held, "executor": "slurm"},
        )
        slurm.wait_for_state(held, {"PENDING"}, timeout=30)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "1 Slurm job(s) still queued or running" in err and f"r1_zero step 3 job {held}: PENDING" in err
    finally:
        slurm.cmd(["scancel", held])
    slurm.wait_for_state(held, {"CANCELLED"}, timeout=30)
    assert main(args) == 0
