"""How the long-lived jobs of a GRPO stage wait for each other through the run directory.

The rollout tasks wait for the policy version they sample from, the train job waits for a step's
shards; nothing else connects them (no sockets, no scheduler dependency between them). A wait
polls a cheap predicate (a stat or two) with a sleep that grows with the time already waited, so
an output that appears after t seconds is noticed within ~2% of t (or `max_sleep_s`): fast
handoffs on one machine, few metadata requests on a shared filesystem during long waits.

A job that cannot go on stops its partners instead of letting them wait out their timeout:
- one that fails with an exception leaves `rollouts/<stage>/FAILED_<who>.json`, and the others'
  waits stop at once with an error naming it (`reset_stage` clears the markers before a
  submission's jobs start, so re-running `r1hpc run` starts the stage's jobs afresh);
- one that is killed (scancel, OOM, node failure) leaves nothing, so every job of the stage holds a
  heartbeat lease (`leases/<stage>/<who>.lease`, renewed in the background); a wait stops once a
  partner's heartbeat is older than grpo.heartbeat_timeout_s. A partner requeued by Slurm (time
  limit, preemption) takes its lease over when it starts again: within that time nobody stops.
  The lease also keeps a second copy of the same job from running beside the first, and
  `reset_stage` removes the stale leases of killed jobs, so a rerun's jobs do not mistake a
  predecessor's silence for a partner that died.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from r1hpc.fsio import atomic_write_json
from r1hpc.lease import Lease, LeaseHeldError
from r1hpc.store import RunDir

__all__ = [
    "WaitTimeout",
    "PartnerFailed",
    "wait_for",
    "failure_markers",
    "clear_failures",
    "failures_recorded",
    "heartbeat",
    "clear_dead_heartbeats",
    "reset_stage",
]

_PREFIX = "FAILED_"


class WaitTimeout(TimeoutError):
    """What a job waited for never appeared within grpo.wait_timeout_s."""


class PartnerFailed(RuntimeError):
    """Another job of the stage failed; this one cannot go on without it."""


def failure_markers(run: RunDir, stage: str) -> list[Path]:
    d = run.rollouts_dir(stage, create=False)
    return sorted(d.glob(f"{_PREFIX}*.json")) if d.is_dir() else []


def clear_failures(run: RunDir, stage: str) -> None:
    for path in failure_markers(run, stage):
        path.unlink(missing_ok=True)


def _heartbeat_lease(run: RunDir, stage: str, who: str, timeout_s: float) -> Lease:
    ttl = timeout_s / 2  # renewed every ttl/3: several renewals per timeout
    return Lease(run.lease_path(stage, who), owner=f"{stage} {who}", ttl_s=ttl, max_skew_s=min(30.0, ttl))


def clear_dead_heartbeats(run: RunDir, stage: str, timeout_s: float) -> None:
    """Remove the heartbeats of the stage's killed jobs (stale leases), so the jobs of a rerun do not
    take a predecessor's silence for a partner that died while they wait for it to start."""
    d = run.lease_path(stage, "x", create=False).parent
    for path in sorted(d.glob("*.lease")) if d.is_dir() else []:
        _heartbeat_lease(run, stage, path.stem, timeout_s).break_if_stale()


def reset_stage(run: RunDir, stage: str, heartbeat_timeout_s: float) -> None:
    """Clear what an earlier attempt of the stage's jobs left behind (failure markers, killed jobs'
    heartbeats). Runs before any job of a new submission of the stage starts: in the submitter
    (r1hpc run) for the long-lived jobs, in prepare_stage for per-step jobs. Never in a job that
    may be requeued beside its running partners: it would wipe a partner's real failure."""
    clear_failures(run, stage)
    clear_dead_heartbeats(run, stage, heartbeat_timeout_s)


@contextlib.contextmanager
def heartbeat(run: RunDir, stage: str, me: str, timeout_s: float) -> Iterator[None]:
    """Hold `me`'s heartbeat lease of the stage while the block runs (module docstring). A copy of
    the same job still alive elsewhere makes this one fail at once, naming it."""
    lease = _heartbeat_lease(run, stage, me, timeout_s)
    try:
        # A killed predecessor's lease: taken over at once on its own host (its pid is gone), or
        # once it expires elsewhere.
        lease.acquire(wait_s=lease.ttl_s + lease.max_skew_s + 1)
    except LeaseHeldError as e:
        raise RuntimeError(f"{me} of stage {stage} is already running: {e}") from None
    with lease.kept_renewed():
        yield


def _silent_for(run: RunDir, stage: str, who: str) -> float | None:
    """Seconds since `who`'s heartbeat was last renewed; None without one (not started yet, or
    finished and released)."""
    info = Lease(run.lease_path(stage, who, create=False)).holder()
    if info is None:
        return None
    return time.time() - (float(info["expires_at"]) - float(info.get("ttl_s", 0.0)))


def _check_partners(run: RunDir, stage: str, me: str, partners: tuple[str, ...], heartbeat_timeout_s: float) -> None:
    for who in partners:
        silent = _silent_for(run, stage, who)
        if silent is not None and silent > heartbeat_timeout_s:
            raise PartnerFailed(
                f"{who} of stage {stage} stopped: its heartbeat ({run.lease_path(stage, who, create=False)}) "
                f"is {silent:.0f} s old (grpo.heartbeat_timeout_s={heartbeat_timeout_s:g}): killed, cancelled "
                f"or requeued and not back. {me} stops too; run `r1hpc run` again to resume the stage"
            )
    for path in failure_markers(run, stage):
        if path.stem != _PREFIX + me:
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                info = {}
            raise PartnerFailed(
                f"{path}: {path.stem.removeprefix(_PREFIX)} of stage {stage} failed "
                f"({info.get('error', 'see its log')}); {me} stops too. Fix the cause and run `r1hpc run` again"
            )


def wait_for(
    ready: Callable[[], bool],
    what: str,
    run: RunDir,
    stage: str,
    me: str,
    timeout_s: float,
    max_sleep_s: float = 2.0,
    partners: tuple[str, ...] = (),
    heartbeat_timeout_s: float = float("inf"),
) -> float:
    """Block until `ready()`; return the seconds waited. WaitTimeout naming `what` after `timeout_s`;
    PartnerFailed as soon as another job of the stage left a failure marker, or one of `partners`
    let its heartbeat go silent for `heartbeat_timeout_s`."""
    started = time.monotonic()
    while not ready():
        _check_partners(run, stage, me, partners, heartbeat_timeout_s)
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise WaitTimeout(
                f"{me} of stage {stage} waited {waited:.0f} s for {what}, which never appeared "
                f"(grpo.wait_timeout_s={timeout_s:g}); is the job that writes it queued, running or dead? "
                f"(r1hpc status {run.root})"
            )
        time.sleep(min(max_sleep_s, max(0.005, 0.02 * waited)))
    return time.monotonic() - started


@contextlib.contextmanager
def failures_recorded(run: RunDir, stage: str, me: str) -> Iterator[None]:
    """Leave a failure marker if the block raises (not for a stop or requeue: SystemExit passes)."""
    try:
        yield
    except Exception as e:  # PartnerFailed too: a partner killed without a marker stops the rest
        info: dict[str, Any] = {
            "who": me,
            "error": f"{type(e).__name__}: {str(e)[:500]}",
            "time": time.time(),
            "traceback": traceback.format_exc()[-4000:],
        }
        with contextlib.suppress(OSError):
            atomic_write_json(run.rollouts_dir(stage) / f"{_PREFIX}{me}.json", info)
        raise
