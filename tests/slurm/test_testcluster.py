"""The single-node test cluster behaves like the real thing for what r1hpc relies on (real sbatch/sacct).

Arrays, afterok dependencies (and their cancellation on failure), requeue with SLURM_RESTART_COUNT,
time-limit kills after a warning signal, GPU gres and per-account accounting in sacct.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_PY = REPO / "slurm" / "testcluster" / "cluster.py"

# Traps the warning signal; a bash trap only runs between foreground commands, hence the `sleep 1` loop.
TIME_LIMIT_SCRIPT = """#!/bin/bash
trap 'date +%s.%N > usr2' USR2
date +%s.%N > started
while true; do sleep 1; done
"""


@pytest.fixture(scope="module", autouse=True)
def time_limit_job(request: pytest.FixtureRequest, slurm, tmp_path_factory) -> tuple[str, Path] | None:
    """Submitted before every other test of this module: it takes 60-90 s, the others run meanwhile.

    Not submitted when its test is deselected (e.g. `-m "not slow"`).
    """
    if not any(item.name == "test_time_limit_kills_after_warning_signal" for item in request.session.items):
        return None
    d = tmp_path_factory.mktemp("timelimit")
    job = slurm.sbatch(TIME_LIMIT_SCRIPT, "--time=1", "--signal=B:USR2@30", "-o", "out.txt", cwd=d)
    return job, d


def wait_for_file(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.1)
    pytest.fail(f"{path} did not appear within {timeout} s")


def test_array_tasks_each_get_their_task_id(slurm, tmp_path: Path) -> None:
    script = """#!/bin/bash
echo "$SLURM_ARRAY_TASK_ID $SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_COUNT" > task_$SLURM_ARRAY_TASK_ID.txt
"""
    job = slurm.sbatch(script, "--array=0-3", "-o", "%A_%a.out", cwd=tmp_path)
    states = slurm.wait_for_state(job, {"COMPLETED"})
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}
    for i in range(4):
        assert (tmp_path / f"task_{i}.txt").read_text().split() == [str(i), job, "4"]


def test_afterok_dependency_waits_for_the_whole_array(slurm, tmp_path: Path) -> None:
    array = slurm.sbatch(
        "#!/bin/bash\nsleep 2\ndate +%s.%N > done_$SLURM_ARRAY_TASK_ID\n",
        "--array=0-2",
        "-o",
        "/dev/null",
        cwd=tmp_path,
        name="array.sh",
    )
    dep = slurm.sbatch(
        "#!/bin/bash\ndate +%s.%N > dep_started\n",
        f"--dependency=afterok:{array}",
        "-o",
        "/dev/null",
        cwd=tmp_path,
        name="dep.sh",
    )
    assert slurm.squeue_field(dep, "%T %r") == "PENDING Dependency"
    slurm.wait_for_state(dep, {"COMPLETED"})
    assert set(slurm.states(array).values()) == {"COMPLETED"}
    finished = [float((tmp_path / f"done_{i}").read_text()) for i in range(3)]
    assert float((tmp_path / "dep_started").read_text()) >= max(finished)


def test_failed_task_cancels_afterok_dependent(slurm, tmp_path: Path) -> None:
    array = slurm.sbatch(
        "#!/bin/bash\nexit $SLURM_ARRAY_TASK_ID\n", "--array=0-1", "-o", "/dev/null", cwd=tmp_path, name="array.sh"
    )
    dep = slurm.sbatch(
        "#!/bin/bash\ntouch dep_ran\n", f"--dependency=afterok:{array}", "-o", "/dev/null", cwd=tmp_path, name="dep.sh"
    )
    slurm.wait_for_state(dep, {"CANCELLED"})
    assert slurm.states(array) == {f"{array}_0": "COMPLETED", f"{array}_1": "FAILED"}
    assert not (tmp_path / "dep_ran").exists()


def test_requeue_reruns_with_restart_count(slurm, tmp_path: Path) -> None:
    script = """#!/bin/bash
echo "${SLURM_RESTART_COUNT:-0}" >> runs
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then sleep 300; fi
"""
    job = slurm.sbatch(script, "-o", "out.txt", cwd=tmp_path)
    wait_for_file(tmp_path / "runs")
    slurm.cmd(["scontrol", "requeue", job])
    # Releasing within the same second as the requeue fails the job ("Job credential revoked").
    time.sleep(1.6)
    slurm.cmd(["scontrol", "update", f"JobId={job}", "StartTime=now"])
    slurm.wait_for_state(job, {"COMPLETED"})
    assert (tmp_path / "runs").read_text().split() == ["0", "1"]
    runs = [r["State"].split()[0] for r in slurm.sacct_rows(job, ["State"], duplicates=True)]
    assert runs == ["REQUEUED", "COMPLETED"]


def test_gpu_gres_account_partition_and_comment_reach_sacct(slurm, tmp_path: Path) -> None:
    script = '#!/bin/bash\necho "$CUDA_VISIBLE_DEVICES" > gpus\n'
    job = slurm.sbatch(
        script,
        "--gres=gpu:2",
        "--account=research",
        "--partition=long",
        "--comment=r1hpc test comment",
        "-o",
        "out.txt",
        cwd=tmp_path,
    )
    slurm.wait_for_state(job, {"COMPLETED"})
    assert len((tmp_path / "gpus").read_text().strip().split(",")) == 2
    [row] = slurm.sacct_rows(job, ["Account", "Partition", "AllocTRES", "Comment"])
    assert row["Account"] == "research"
    assert row["Partition"] == "long"
    assert "gres/gpu=2" in row["AllocTRES"].split(",")
    assert row["Comment"] == "r1hpc test comment"


def test_default_account_and_too_many_gpus(slurm, tmp_path: Path) -> None:
    job = slurm.sbatch("#!/bin/bash\ntrue\n", "-o", "/dev/null", cwd=tmp_path)
    slurm.wait_for_state(job, {"COMPLETED"})
    [row] = slurm.sacct_rows(job, ["Account", "Partition"])
    assert row == {"Account": "test", "Partition": "debug"}
    res = subprocess.run(
        ["sbatch", "--gres=gpu:5", str(tmp_path / "job.sh")], env=slurm.env, capture_output=True, text=True
    )
    assert res.returncode != 0
    assert "Requested node configuration is not available" in res.stderr


def test_cluster_status_and_idempotent_start(slurm_env: dict[str, str]) -> None:
    env = dict(slurm_env, R1HPC_TESTCLUSTER_DIR=str(Path(slurm_env["SLURM_CONF"]).parents[1]))
    before = subprocess.run([sys.executable, str(CLUSTER_PY), "status"], env=env, capture_output=True, text=True)
    assert before.returncode == 0, before.stdout + before.stderr
    assert "ping ok" in before.stdout
    again = subprocess.run(
        [sys.executable, str(CLUSTER_PY), "start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"export SLURM_CONF={slurm_env['SLURM_CONF']}"
    after = subprocess.run([sys.executable, str(CLUSTER_PY), "status"], env=env, capture_output=True, text=True)
    pids = [line for line in before.stdout.splitlines() if "pid" in line]
    assert len(pids) == 5
    assert [line for line in after.stdout.splitlines() if "pid" in line] == pids  # nothing restarted


@pytest.mark.slow
def test_time_limit_kills_after_warning_signal(slurm, time_limit_job: tuple[str, Path] | None) -> None:
    assert time_limit_job is not None
    job, d = time_limit_job
    # slurmctld checks limits every 30 s: the kill comes 60-90 s after the start.
    slurm.wait_for_state(job, {"TIMEOUT"}, timeout=180)
    started = float((d / "started").read_text())
    warned = float((d / "usr2").read_text())  # written by the trap, so USR2 reached the batch shell
    assert started < warned
    [row] = slurm.sacct_rows(job, ["State", "End"])
    assert row["State"] == "TIMEOUT"
