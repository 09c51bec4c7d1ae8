"""The state of a run's jobs, from what they leave behind: a local (or debug) executor job's
submitit files and process, a Slurm job's states as sacct / squeue report them (the caller asks
Slurm), and the `r1hpc run` holding the run's submitter lease. Read-only (r1hpc.live, r1hpc.status)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from r1hpc.fsio import pid_alive

__all__ = ["local_task_state", "job_task_states", "task_class", "submitter"]

# Slurm job states (sacct / squeue) by what they mean for a stage.
_SLURM_ACTIVE = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING", "STAGE_OUT", "SIGNALING"}
_SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "PREEMPTED"}
_SLURM_FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "CANCELLED", "REVOKED"}


def _alive(pid: int) -> bool:
    try:
        return pid_alive(pid)
    except OSError:  # a pid the kernel refuses to look at: not a job of ours
        return False


def local_task_state(logs_dir: Path, task_id: str) -> str:
    """State of one job of the local (or debug) executor, from submitit's files in logs/<id>/:
    ENDED (its result says success), FAILED (its result holds an error), RUNNING (no result yet,
    its process lives), STOPPED (no result and its process is gone: killed) or NOT_ENDED (no
    result and no process id to check: the debug executor).

    submitit pickles ("success", result) or ("error", traceback); only the first bytes are read
    (unpickling a result could import anything)."""
    result = logs_dir / task_id / f"{task_id}_0_result.pkl"
    try:
        with open(result, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        if not task_id.isdigit():  # the debug executor's ids are not process ids
            return "NOT_ENDED"
        return "RUNNING" if _alive(int(task_id)) else "STOPPED"
    return "FAILED" if b"error" in head and b"success" not in head else "ENDED"


def job_task_states(run_dir: Path, job: dict[str, Any], slurm: dict[str, list[str]] | None) -> list[str]:
    """States of a jobs.jsonl record's tasks: Slurm's (from `slurm`, job id -> states; ["?"] when
    Slurm was not asked or does not know the job) or the local executor's (local_task_state)."""
    if job.get("executor") == "slurm":
        return list((slurm or {}).get(str(job.get("job_id")), ["?"]))
    tasks = job.get("task_ids") or [job.get("job_id")]
    return [local_task_state(run_dir / "logs", str(t)) for t in tasks]


def task_class(state: str) -> str:
    """ok / active / queued / failed / gone / submitted (state not known: Slurm not asked, or a
    debug-executor job)."""
    if state in ("COMPLETED", "ENDED"):
        return "ok"
    if state in _SLURM_ACTIVE or state == "RUNNING":
        return "active"
    if state in _SLURM_QUEUED:
        return "queued"
    if state in _SLURM_FAILED:
        return "failed"
    if state == "STOPPED":
        return "gone"
    return "submitted"  # "?", NOT_ENDED


def submitter(run_dir: str | Path) -> dict[str, Any] | None:
    """The `r1hpc run` holding the run's submitter lease (r1hpc.pipeline.sole_submitter), if one
    lives: the lease's content (owner, host, pid), else None."""
    from r1hpc.fsio import holder_is_dead
    from r1hpc.lease import Lease

    path = Path(run_dir) / "leases" / "run" / "submitter.lease"
    if not path.exists():
        return None
    info = Lease(path).holder()
    if not info or holder_is_dead(info.get("host"), info.get("ns"), info.get("pid")):
        return None
    return info if time.time() <= float(info.get("expires_at", 0)) + 30 else None
