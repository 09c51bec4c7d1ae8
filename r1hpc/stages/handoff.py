"""How the long-lived jobs of a GRPO stage wait for each other through the run directory.

The rollout tasks wait for the policy version they sample from, the train job waits for a step's
shards; nothing else connects them (no sockets, no scheduler dependency between them). A wait
polls a cheap predicate (a stat or two) with a sleep that grows with the time already waited, so
an output that appears after t seconds is noticed within ~2% of t (or `max_sleep_s`): fast
handoffs on one machine, few metadata requests on a shared filesystem during long waits.

A job of the stage that fails with an exception leaves `rollouts/<stage>/FAILED_<who>.json`; the
others' waits then stop at once with an error naming it instead of waiting out their timeout.
`prepare_stage` clears the markers, so re-running `r1hpc run` starts the stage's jobs afresh.
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
from r1hpc.store import RunDir

__all__ = ["WaitTimeout", "PartnerFailed", "wait_for", "failure_markers", "clear_failures", "failures_recorded"]

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


def _check_partners(run: RunDir, stage: str, me: str) -> None:
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
) -> float:
    """Block until `ready()`; return the seconds waited. WaitTimeout naming `what` after `timeout_s`;
    PartnerFailed as soon as another job of the stage left a failure marker."""
    started = time.monotonic()
    while not ready():
        _check_partners(run, stage, me)
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
    except PartnerFailed:
        raise  # the partner's marker already says what failed
    except Exception as e:
        info: dict[str, Any] = {
            "who": me,
            "error": f"{type(e).__name__}: {str(e)[:500]}",
            "time": time.time(),
            "traceback": traceback.format_exc()[-4000:],
        }
        with contextlib.suppress(OSError):
            atomic_write_json(run.rollouts_dir(stage) / f"{_PREFIX}{me}.json", info)
        raise
