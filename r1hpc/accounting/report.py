"""Group job usage into tables and write them as text, CSV or JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from r1hpc.accounting.usage import JobUsage

KEYS: dict[str, Callable[[JobUsage], str]] = {
    "user": lambda u: u.row.user or "-",
    "account": lambda u: u.row.account or "-",
    "partition": lambda u: u.row.partition or "-",
    "run": lambda u: u.run,
    "stage": lambda u: u.stage,
    "step": lambda u: u.step,
    "state": lambda u: u.row.state,
    "gpu_type": lambda u: u.gpu_type,
    "day": lambda u: "",  # filled per day segment in group()
}
# The tables printed when --by is not given.
STANDARD_TABLES: tuple[tuple[str, ...], ...] = (("user",), ("account",), ("run", "stage"), ("day",))


@dataclass
class Group:
    """Totals for one combination of key values."""

    keys: dict[str, str]
    job_ids: set[str] = field(default_factory=set)
    gpu_seconds: int = 0
    wasted_gpu_seconds: int = 0
    cost: float | None = None
    wasted_cost: float | None = None

    def add(self, u: JobUsage, seconds: int) -> None:
        self.job_ids.add(u.row.job_id)
        self.gpu_seconds += u.gpus * seconds
        cost = None if u.cost_per_hour is None else u.cost_per_hour * seconds / 3600
        if u.wasted:
            self.wasted_gpu_seconds += u.gpus * seconds
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
            self.wasted_cost = (self.wasted_cost or 0.0) + (cost if u.wasted else 0.0)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.keys)
        d.update(
            jobs=len(self.job_ids),
            gpu_seconds=self.gpu_seconds,
            gpu_hours=self.gpu_seconds / 3600,
            wasted_gpu_seconds=self.wasted_gpu_seconds,
            wasted_gpu_hours=self.wasted_gpu_seconds / 3600,
        )
        if self.cost is not None:
            d.update(cost=round(self.cost, 6), wasted_cost=round(self.wasted_cost or 0.0, 6))
        return d


def check_keys(keys: Sequence[str]) -> None:
    """ValueError naming an unknown group key."""
    for k in keys:
        if k not in KEYS:
            raise ValueError(f"--by: unknown key {k!r}; expected some of {', '.join(KEYS)}")


def group(usages: Iterable[JobUsage], keys: Sequence[str]) -> list[Group]:
    """Sum usage by ``keys``; with 'day', each job counts on each day it ran."""
    check_keys(keys)
    groups: dict[tuple[str, ...], Group] = {}
    for u in usages:
        base = {k: KEYS[k](u) for k in keys}
        parts: Iterable[tuple[date | None, int]]
        if "day" in keys:
            parts = u.days  # a job that never ran has no day and contributes nothing here
        else:
            parts = [(None, u.seconds)]
        for day, seconds in parts:
            kv = dict(base, day=day.isoformat()) if day is not None else base
            ident = tuple(kv[k] for k in keys)
            groups.setdefault(ident, Group(keys={k: kv[k] for k in keys})).add(u, seconds)
    return [groups[k] for k in sorted(groups)]


def totals(usages: Sequence[JobUsage]) -> Group:
    """One group holding everything."""
    g = Group(keys={})
    for u in usages:
        g.add(u, u.seconds)
    return g


def job_record(u: JobUsage) -> dict[str, Any]:
    r = u.row
    return {
        "job_id": r.job_id,
        "job_id_raw": r.job_id_raw,
        "name": r.name,
        "user": r.user,
        "account": r.account,
        "partition": r.partition,
        "state": r.state,
        "restarts": r.restarts,
        "run": u.run,
        "stage": u.stage,
        "step": u.step,
        "gpus": u.gpus,
        "gpu_types": u.gpu_types,
        "wasted": u.wasted,
        "start": None if u.start is None else u.start.isoformat(),
        "end": None if u.end is None else u.end.isoformat(),
        "elapsed_s": r.elapsed_s,
        "counted_s": u.seconds,
        "gpu_seconds": u.gpu_seconds,
        "cost": None if u.cost is None else round(u.cost, 6),
    }


def build_report(usages: Sequence[JobUsage], tables: Sequence[Sequence[str]], query: dict[str, Any]) -> dict[str, Any]:
    """Everything the outputs show, as plain data (this is the JSON output)."""
    return {
        "query": query,
        "totals": totals(usages).as_dict(),
        "tables": [{"by": list(keys), "rows": [g.as_dict() for g in group(usages, keys)]} for keys in tables],
        "jobs": [job_record(u) for u in usages],
    }


def _columns(rows: list[dict[str, Any]], by: Sequence[str]) -> list[tuple[str, str]]:
    cols = [(k, k) for k in by] + [("jobs", "jobs"), ("gpu_hours", "GPU-h"), ("wasted_gpu_hours", "wasted GPU-h")]
    if rows and "cost" in rows[0]:
        cols += [("cost", "cost $"), ("wasted_cost", "wasted $")]
    return cols


def _cell(value: Any, key: str) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if key.endswith("cost") else f"{value:.3f}"
    return str(value)


def render_text(report: dict[str, Any]) -> str:
    """Aligned plain-text tables, then the totals line."""
    out: list[str] = []
    for table in report["tables"]:
        by, rows = (
            table["by"],
            table["rows"]
            + [dict(report["totals"], **{k: ("TOTAL" if i == 0 else "") for i, k in enumerate(table["by"])})],
        )
        cols = _columns(rows, by)
        cells = [[title for _, title in cols]] + [[_cell(r.get(k, ""), k) for k, _ in cols] for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
        out.append(f"GPU usage by {', '.join(by)}")
        for n, line in enumerate(cells):
            out.append(
                "  ".join(
                    c.ljust(w) if i < len(by) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
                ).rstrip()
            )
            if n == 0 or n == len(cells) - 2:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    t = report["totals"]
    line = (
        f"Total: {t['gpu_hours']:.3f} GPU-hours in {t['jobs']} jobs, of which "
        f"{t['wasted_gpu_hours']:.3f} wasted (requeued/preempted/node-failed attempts)"
    )
    if "cost" in t:
        line += f"; cost ${t['cost']:.2f}, wasted ${t['wasted_cost']:.2f}"
    out.append(line)
    return "\n".join(out) + "\n"


def write_csv(report: dict[str, Any], path: Path) -> None:
    """Long format: one line per table row, a 'table' column, empty cells for keys not grouped on."""
    keys = [k for k in KEYS if any(k in t["by"] for t in report["tables"])]
    values = ["jobs", "gpu_seconds", "gpu_hours", "wasted_gpu_seconds", "wasted_gpu_hours"]
    if "cost" in report["totals"]:
        values += ["cost", "wasted_cost"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["table", *keys, *values])
        for t in report["tables"]:
            name = "+".join(t["by"])
            for r in t["rows"]:
                w.writerow([name, *(r.get(k, "") for k in keys), *(r[v] for v in values)])
        w.writerow(["total", *([""] * len(keys)), *(report["totals"][v] for v in values)])


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
