"""The launcher on the local and debug executors (real subprocesses), and the golden sbatch script."""

import signal
import time
from pathlib import Path

import pytest

from r1hpc.config import load_config
from r1hpc.fsio import read_jsonl
from r1hpc.launch import JobFailed, Launcher, Submission, job_name, parse_job_name, render_sbatch, wait_all

GOLDEN = Path(__file__).resolve().parent / "golden"


def config(tmp_path, *overrides):
    return load_config(None, [f"runs_dir={tmp_path}", "name=t", *overrides])


def test_job_name_round_trip():
    assert job_name("run1", "r1_zero", 7) == "r1hpc:run1:r1_zero:7"
    assert parse_job_name("r1hpc:run1:r1_zero:7") == ("run1", "r1_zero", 7)
    assert parse_job_name("r1hpc:run1:eval:-") == ("run1", "eval", None)
    assert parse_job_name("submitit") is None and parse_job_name("r1hpc:a:b:x") is None


def test_golden_sbatch_script():
    """Pins what sbatch receives for a rollout array with a dependency (update the golden file
    only on purpose: `r1hpc sbatch ... > tests/golden/rollout_array.sbatch`)."""
    cfg = load_config(
        None,
        [
            "name=golden",
            "launch.executor=slurm",
            "launch.partition=gpu",
            "launch.account=r1",
            "launch.qos=high",
            "launch.constraint=h100",
            "launch.rollout.gpus_per_node=8",
            "launch.rollout.cpus_per_task=16",
            "launch.rollout.mem_gb=200",
            "launch.rollout.time_min=240",
            "launch.rollout.array_parallelism=8",
            "launch.extra_sbatch={reservation: r1}",
        ],
    )
    text = render_sbatch(
        cfg,
        kind="rollout",
        stage="r1_zero",
        step=7,
        array_size=16,
        dependency="afterok:1234",
        folder="/shared/runs/golden/logs/%j",
    )
    assert text == (GOLDEN / "rollout_array.sbatch").read_text()


def test_local_array_then_dependent_job(tmp_path):
    cfg = config(tmp_path)
    launcher = Launcher(cfg)
    array = launcher.submit_array("s", "rollout", "jobfns:square", [{"x": i} for i in range(3)], step=0)
    after = launcher.submit("s", "train", "jobfns:square", {"x": 5}, step=0, after=[array])
    assert array.results() == [0, 1, 4]
    assert after.results() == [25]
    # Real subprocesses, not this process.
    assert all(job.__class__.__name__ == "LocalJob" for job in array.jobs)
    records = read_jsonl(cfg.run_dir / "jobs.jsonl")
    assert [r["stage"] for r in records] == ["s", "s"]
    assert records[0]["array_size"] == 3 and records[1]["after"] == [array.job_id]
    assert records[0]["name"] == "r1hpc:t:s:0"


def test_failed_dependency_stops_the_chain_with_log_paths(tmp_path):
    launcher = Launcher(config(tmp_path))
    bad = launcher.submit("s", "train", "jobfns:fail", {"message": "boom-42"})
    with pytest.raises(JobFailed, match=r"(?s)r1hpc:t:s:-.*stderr: .*boom-42"):
        launcher.submit("s", "train", "jobfns:square", {"x": 1}, after=[bad])


def test_bad_target_is_a_clear_error(tmp_path):
    launcher = Launcher(config(tmp_path))
    with pytest.raises(ValueError, match="package.module:function"):
        launcher.submit("s", "train", "jobfns.square", {"x": 1})
    sub = launcher.submit("s", "train", "jobfns:nope", {"x": 1})
    with pytest.raises(JobFailed, match="cannot be imported"):
        sub.results()


def test_preflight_locally(tmp_path, capsys):
    from r1hpc.preflight import run_preflight

    assert run_preflight(config(tmp_path), tasks=2) == 0
    out = capsys.readouterr().out
    assert "task 0:" in out and "task 1:" in out and "preflight: ok" in out


def test_status_shows_jobs_and_states(tmp_path, capsys):
    from r1hpc.status import main as status_main

    cfg = config(tmp_path)
    launcher = Launcher(cfg)
    launcher.submit_array("s", "rollout", "jobfns:square", [{"x": i} for i in range(2)], step=3).results()
    assert status_main([str(cfg.run_dir), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    assert "s " in out and "ENDED x2" in out
    assert status_main([str(tmp_path / "nope")]) == 2


def test_linked_jobs_are_cancelled_when_one_fails(tmp_path):
    """A long-lived GRPO stage's train job and rollout tasks wait on each other at run time: when
    one fails, waiting for the others would take their whole timeout, so they are cancelled. Also
    when r1hpc runs where SIGINT is ignored (`nohup r1hpc run ... &`): submitit cancels local jobs
    with it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        launcher = Launcher(config(tmp_path))
        waiting = launcher.submit_array("s", "rollout", "jobfns:sleep_for", [{"seconds": 120}, {"seconds": 120}])
        bad = launcher.submit("s", "train", "jobfns:fail", {"message": "boom-linked"})
    finally:
        signal.signal(signal.SIGINT, previous)
    group = Submission.linked_group(bad, waiting)
    assert group.job_id == bad.job_id  # dependents wait on the first job
    started = time.time()
    with pytest.raises(JobFailed, match="boom-linked"):
        wait_all([group], poll_s=0.2)
    assert time.time() - started < 60
    assert all(job.done() for job in waiting.jobs)
