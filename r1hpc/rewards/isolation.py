"""A pool of long-lived worker processes that run untrusted-input work under hard limits.

Why this exists: reward functions parse model output with sympy (whose parsers call ``eval``),
run generated code, and can be handed ``\\boxed{10^{10^{10^{10}}}}``. None of that may run in
the trainer process, and none of it may stall a training step. So every call runs in a worker:

* each worker sets ``RLIMIT_AS`` on itself when it starts, so a memory bomb raises
  ``MemoryError`` inside the worker (reported as status ``"memory"``) instead of swapping the node;
* the parent gives each worker one item at a time and enforces a hard wall-time limit per item:
  a worker still busy at its deadline is SIGKILLed (with its whole process group, so sandbox
  grandchildren die too) and replaced; the item gets status ``"timeout"``. A worker that dies on
  its own (segfault, kernel OOM killer) is replaced too and its item gets status ``"error"``;
* workers are reused across items, so thousands of items cost a pipe round trip each, not a
  process spawn. A spawn happens only to replace a killed worker.

Start method: ``forkserver`` by default. Plain ``fork`` copies the caller as it is at that moment:
in a trainer that means torch's OpenMP/gloo threads and any lock they hold, which can deadlock the
child. ``forkserver`` forks workers from a small server process started once, single-threaded,
that has only imported the modules in ``preload`` (sympy, math-verify, ...): replacing a killed
worker is then a cheap fork of that clean server instead of a ``spawn`` that re-imports sympy
(about 1 s). ``spawn`` is accepted too (portable, slowest to replace workers).

Functions sent to the pool must be importable by reference (module-level functions, builtins):
they are pickled by name. Workers are daemonic, so a function running in a worker can start
programs with ``subprocess`` but not ``multiprocessing`` children.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import resource
import signal
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "timeout", "memory", "error"]

DEFAULT_MEMORY_LIMIT_BYTES = 2 * 1024**3
DEFAULT_ITEM_TIMEOUT_S = 5.0
# Modules imported once in the forkserver so that every (re)started worker already has them.
DEFAULT_PRELOAD = ("sympy", "math_verify", "latex2sympy2_extended", "r1hpc.rewards")
_MAX_MESSAGE_CHARS = 500
# (func, args) or (func, args, timeout_s): one item of work.
Call = tuple


@dataclass(frozen=True)
class Outcome:
    """The result of one item: ``value`` when status is "ok", else a message saying what failed."""

    status: Status
    value: Any = None
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def available_cpus() -> int:
    """CPUs this job may use: the affinity mask, capped by SLURM_CPUS_PER_TASK when set."""
    n = len(os.sched_getaffinity(0))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm:
        try:
            n = min(n, int(slurm))
        except ValueError as e:
            raise ValueError(f"SLURM_CPUS_PER_TASK={slurm!r}: expected a positive integer") from e
    return max(1, n)


def _worker_main(conn: mpc.Connection, memory_limit_bytes: int | None) -> None:
    """Worker loop: receive (item_id, func, args), reply (item_id, status, value, message)."""
    # Own process group: the parent kills the group, taking any sandboxed children with it.
    os.setpgid(0, 0)
    # Ctrl-C goes to the parent, which shuts workers down; workers must not die half-way on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent is gone
        if msg is None:
            return
        item_id, func, args = msg
        try:
            reply = (item_id, "ok", func(*args), "")
        except MemoryError:
            reply = (item_id, "memory", None, "MemoryError (RLIMIT_AS reached)")
        except BaseException as e:  # noqa: BLE001 - anything the function raises is reported
            last = traceback.extract_tb(e.__traceback__)[-1:] or None
            where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
            reply = (item_id, "error", None, f"{type(e).__name__}: {e}{where}"[:_MAX_MESSAGE_CHARS])
        try:
            conn.send(reply)
        except MemoryError:
            conn.send((item_id, "memory", None, "MemoryError while sending the result"))
        except Exception as e:  # result not picklable
            conn.send((item_id, "error", None, f"cannot send result: {type(e).__name__}: {e}"[:_MAX_MESSAGE_CHARS]))


class _Worker:
    def __init__(self, ctx: mp.context.BaseContext, memory_limit_bytes: int | None) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child_conn, memory_limit_bytes), daemon=True)
        self.proc.start()
        child_conn.close()
        self.item: int | None = None  # index of the item in flight
        self.deadline = 0.0
        self.started = 0.0
        self.limit = 0.0

    def kill(self) -> None:
        pid = self.proc.pid
        if pid is not None:
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
        self.proc.join(timeout=5)
        self.conn.close()


class WorkerPool:
    """Persistent worker processes with a per-item wall-time limit and a per-worker memory limit.

    Use as a context manager, or call ``close()``. ``run(calls)`` returns one ``Outcome`` per call,
    in order; ``imap(calls)`` yields ``(index, Outcome)`` as items finish (for progress bars).
    ``restarts`` counts workers replaced after a kill or a crash.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        *,
        item_timeout_s: float = DEFAULT_ITEM_TIMEOUT_S,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES,
        start_method: Literal["forkserver", "spawn"] = "forkserver",
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(
                f"start_method={start_method!r}: expected 'forkserver' or 'spawn' "
                "(plain fork is unsafe in a threaded trainer)"
            )
        if not item_timeout_s > 0:
            raise ValueError(f"item_timeout_s={item_timeout_s!r}: expected a positive number of seconds")
        if memory_limit_bytes is not None and memory_limit_bytes < 64 * 1024**2:
            raise ValueError(f"memory_limit_bytes={memory_limit_bytes}: expected at least 64 MiB or None")
        self.num_workers = num_workers if num_workers is not None else available_cpus()
        if self.num_workers < 1:
            raise ValueError(f"num_workers={num_workers!r}: expected at least 1")
        self.item_timeout_s = float(item_timeout_s)
        self.memory_limit_bytes = memory_limit_bytes
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver" and preload:
            # Only takes effect if this process has not started its forkserver yet.
            self._ctx.set_forkserver_preload(list(preload))
        self.restarts = 0
        self._workers = [self._new_worker() for _ in range(self.num_workers)]
        self._closed = False

    def _new_worker(self) -> _Worker:
        return _Worker(self._ctx, self.memory_limit_bytes)

    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = self._new_worker()
        self.restarts += 1

    def run(self, calls: Sequence[Call]) -> list[Outcome]:
        """Run ``func(*args)`` for every ``(func, args)`` or ``(func, args, timeout_s)``.

        ``timeout_s`` overrides the pool's ``item_timeout_s`` for that item. Outcomes come back
        in the order of ``calls``.
        """
        out: list[Outcome | None] = [None] * len(calls)
        for i, outcome in self.imap(calls):
            out[i] = outcome
        return out  # type: ignore[return-value]

    def imap(self, calls: Sequence[Call]) -> Iterator[tuple[int, Outcome]]:
        """Yield ``(index, Outcome)`` for every call as it completes (any order)."""
        if self._closed:
            raise RuntimeError("WorkerPool is closed")
        pending = deque(range(len(calls)))
        busy: dict[int, _Worker] = {}  # worker slot -> worker with an item in flight
        try:
            while pending or busy:
                for slot, w in enumerate(self._workers):
                    if pending and slot not in busy:
                        idx = pending.popleft()
                        func, args, *rest = calls[idx]
                        w.limit = float(rest[0]) if rest and rest[0] is not None else self.item_timeout_s
                        w.started = time.monotonic()
                        w.deadline = w.started + w.limit
                        w.item = idx
                        try:
                            w.conn.send((idx, func, tuple(args)))
                        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                            # The worker died while idle; replace it and retry the item.
                            self._replace(slot)
                            pending.appendleft(idx)
                            continue
                        busy[slot] = w
                now = time.monotonic()
                wait_s = max(0.0, min(w.deadline for w in busy.values()) - now) if busy else 0.0
                ready = set(mpc.wait([w.conn for w in busy.values()], timeout=wait_s))
                for slot, w in list(busy.items()):
                    idx = w.item
                    assert idx is not None
                    if w.conn in ready:
                        try:
                            item_id, status, value, message = w.conn.recv()
                        except (EOFError, OSError, ConnectionResetError):
                            w.proc.join(timeout=1)
                            code = w.proc.exitcode
                            status, value = "error", None
                            message = f"worker died (exit code {code})"
                            if code == -signal.SIGKILL:
                                message += "; killed, possibly by the kernel OOM killer"
                            self._replace(slot)
                        else:
                            if item_id != idx:  # cannot happen with one item in flight per worker
                                raise RuntimeError(f"worker answered item {item_id}, expected {idx}")
                        del busy[slot]
                        yield idx, Outcome(status, value, message, time.monotonic() - w.started)
                    elif time.monotonic() >= w.deadline:
                        seconds = time.monotonic() - w.started
                        self._replace(slot)
                        del busy[slot]
                        yield (
                            idx,
                            Outcome("timeout", None, f"killed after {seconds:.2f} s (limit {w.limit} s)", seconds),
                        )
        finally:
            # A consumer that stops early leaves items in flight: their workers hold stale work,
            # so replace them to keep the pool's one-item-per-worker invariant.
            for slot in list(busy):
                self._replace(slot)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.kill()
            else:
                w.conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
