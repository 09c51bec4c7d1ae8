"""Turn sacct rows into GPU usage: GPUs held, GPU-seconds, per-day split, cost.

A row's usage interval is [Start, Start + ElapsedRaw] (ElapsedRaw excludes time
suspended, and is what Slurm bills), clipped to the report window if one is given.
A RUNNING row counts up to the time sacct was asked (its ElapsedRaw), or up to
``now`` when ElapsedRaw is missing. Attempts that were thrown away (requeued,
preempted, lost to a node failure) are flagged ``wasted``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from r1hpc.accounting.prices import Prices
from r1hpc.accounting.sacct import SacctError, SacctRow
from r1hpc.launch import parse_job_name

WASTED_STATES = frozenset({"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED", "NODE_FAIL"})
_LIVE_STATES = frozenset({"RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"})
_COMMENT = re.compile(r"(?:^|\s)r1hpc run=(\S+) stage=(\S+) step=(\d+|-)(?:\s|$)")
_TRES_GPU = re.compile(r"^gres/gpu(?::([^=]+))?$")
UNATTRIBUTED = "-"


@dataclass(frozen=True)
class JobUsage:
    """GPU usage of one sacct row (one attempt of a job or array task)."""

    row: SacctRow
    run: str
    stage: str
    step: str
    gpus: int  # all GPUs allocated
    gpu_types: dict[str, int]  # typed part of ``gpus``, e.g. {"h100": 8}
    wasted: bool
    start: datetime | None  # counted interval, after clipping (None: nothing counted)
    end: datetime | None
    seconds: int  # wall seconds counted
    days: tuple[tuple[date, int], ...]  # seconds per calendar day, summing to ``seconds``
    cost_per_hour: float | None  # $ per wall hour for all its GPUs; None without prices

    @property
    def gpu_seconds(self) -> int:
        return self.gpus * self.seconds

    @property
    def gpu_type(self) -> str:
        """'h100', 'a100+h100', or '-' when untyped."""
        return "+".join(sorted(self.gpu_types)) or UNATTRIBUTED

    @property
    def cost(self) -> float | None:
        return None if self.cost_per_hour is None else self.cost_per_hour * self.seconds / 3600


def attribute(row: SacctRow) -> tuple[str, str, str]:
    """(run, stage, step) from the job name ``r1hpc:<run>:<stage>:<step>``, else the comment."""
    parsed = parse_job_name(row.name.strip())
    if parsed:
        run, stage, step = parsed
        return run, stage, UNATTRIBUTED if step is None else str(step)
    m = _COMMENT.search(row.comment)
    return (m.group(1), m.group(2), m.group(3)) if m else (UNATTRIBUTED,) * 3


def parse_gpus(row: SacctRow) -> tuple[int, dict[str, int]]:
    """(total GPUs, {type: count}) from AllocTRES like 'cpu=8,gres/gpu:h100=4,gres/gpu=4'."""
    where = f"{row.source}:{row.line}"
    total: int | None = None
    typed: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in row.alloc_tres.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SacctError(f"{where}: AllocTRES item {item!r} is not name=value (AllocTRES = {row.alloc_tres!r})")
        m = _TRES_GPU.match(key)
        if not m:
            continue
        if not value.isdigit():
            raise SacctError(f"{where}: AllocTRES {key}={value!r}: expected a GPU count")
        if m.group(1) is None:
            total = int(value)
        else:
            typed[m.group(1)] = typed.get(m.group(1), 0) + int(value)
    n_typed = sum(typed.values())
    if total is None:
        total = n_typed
    if n_typed > total:
        raise SacctError(f"{where}: AllocTRES has {n_typed} typed GPUs but gres/gpu={total}")
    return total, typed


def split_days(start: datetime, end: datetime) -> tuple[tuple[date, int], ...]:
    """Seconds of [start, end) falling on each calendar day, summing to end - start."""
    out: list[tuple[date, int]] = []
    cur = start
    while cur < end:
        midnight = datetime.combine(cur.date() + timedelta(days=1), time())
        nxt = min(midnight, end)
        out.append((cur.date(), int((nxt - cur).total_seconds())))
        cur = nxt
    return tuple(out)


def job_usage(
    row: SacctRow,
    prices: Prices | None,
    now: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> JobUsage:
    """Usage of one row, clipped to [since, until] where those are given."""
    run, stage, step = attribute(row)
    gpus, typed = parse_gpus(row)
    elapsed = row.elapsed_s
    if elapsed == 0 and row.state in _LIVE_STATES and row.start is not None and now is not None:
        elapsed = max(0, int((now - row.start).total_seconds()))
    start = end = None
    seconds = 0
    days: tuple[tuple[date, int], ...] = ()
    if row.start is not None and elapsed > 0:
        start, end = row.start, row.start + timedelta(seconds=elapsed)
        if since is not None:
            start = max(start, since)
        if until is not None:
            end = min(end, until)
        if end > start:
            days = split_days(start, end)
            seconds = sum(s for _, s in days)
        else:
            start = end = None
    cost_per_hour = None
    if prices is not None:
        untyped = gpus - sum(typed.values())
        cost_per_hour = sum(n * prices.per_gpu_hour(row.partition, t) for t, n in typed.items())
        if untyped:
            cost_per_hour += untyped * prices.per_gpu_hour(row.partition, None)
    return JobUsage(
        row=row,
        run=run,
        stage=stage,
        step=step,
        gpus=gpus,
        gpu_types=typed,
        wasted=row.state in WASTED_STATES,
        start=start,
        end=end,
        seconds=seconds,
        days=days,
        cost_per_hour=cost_per_hour,
    )
