"""Busy and waiting GPU-hours of one run (`gpu-hours --run-dir RUN`), from its GRPO step metrics.

The run's jobs.jsonl says which stage, step and kind (train, rollout, eval) each Slurm job id
(an array's id for all its tasks) was submitted for; sacct says how long each attempt held how
many GPUs. metrics/<stage>.jsonl says, per GRPO step, how long the step took (time_step_s,
from one policy publish to the next) and which share of it each pool sat idle
(idle_train_frac, idle_rollout_frac; see r1hpc.stages.grpo_train.step_timing).

How an attempt's GPU-seconds are split (SPLIT_RULES says the same in the --help text):

- A long-lived GRPO train or rollout job (jobs.jsonl step None, grpo.jobs=stage): waiting is its
  pool's idle share over the stage's timed steps, weighted per step by time_step_s
  (sum(idle x step) / sum(step)), applied to the attempt's whole time: the assumption is that
  start-up, model loading and shut-down idle the GPUs as an average step does.
- A per-step GRPO job (grpo.jobs=step): busy is the step's busy time of its pool,
  (1 - idle share) x time_step_s (train: the update; rollout task: reload + generate + score of
  the mean shard), at most the attempt's time; the rest of the attempt (start-up, loading,
  waiting) is waiting. An attempt thrown away (requeued, preempted, node failure) is all waiting:
  the step's metrics come from the attempt that finished it.
- Anything else (SFT, eval, a GRPO step without timing, runs older than the timing) is not split.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from r1hpc.accounting.usage import JobUsage
from r1hpc.fsio import read_jsonl

__all__ = [
    "SPLIT_RULES",
    "BusyRow",
    "run_jobs",
    "run_since",
    "step_records",
    "split_usage",
    "busy_report",
    "render_busy",
]

SPLIT_RULES = (
    "busy vs waiting, from the run's metrics/<stage>.jsonl: a long-lived GRPO train/rollout job "
    "(grpo.jobs=stage) waits its pool's idle share (idle_train_frac / idle_rollout_frac) averaged over "
    "the stage's steps weighted by time_step_s, applied to its whole time (start-up and shut-down "
    "assumed as idle as an average step); a per-step GRPO job (grpo.jobs=step) is busy for its step's "
    "(1 - idle share) x time_step_s, capped at its time, and waits the rest; requeued/preempted "
    "attempts of per-step jobs are all waiting; other jobs (SFT, eval, steps without timing) are not split"
)
IDLE_KEYS = {"train": "idle_train_frac", "rollout": "idle_rollout_frac"}
LONG_LIVED = "long-lived: stage idle share"
PER_STEP = "per-step: step busy time"


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def run_jobs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Slurm job id -> its jobs.jsonl record (local jobs are not in sacct: left out).
    ValueError when the run has no jobs.jsonl or no Slurm job in it."""
    path = Path(run_dir) / "jobs.jsonl"
    if not path.is_file():
        raise ValueError(f"--run-dir {run_dir}: no jobs.jsonl (not an r1hpc run directory, or nothing submitted)")
    jobs = {str(j["job_id"]): j for j in read_jsonl(path) if j.get("executor") == "slurm" and "job_id" in j}
    if not jobs:
        raise ValueError(f"--run-dir {run_dir}: no Slurm jobs in {path} (local and debug jobs are not in sacct)")
    return jobs


def run_since(jobs: dict[str, dict[str, Any]], margin: timedelta = timedelta(hours=1)) -> datetime | None:
    """Naive local time (what sacct speaks) a little before the run's first submission (jobs.jsonl
    times are UTC ISO); None when no record has a time."""
    times = []
    for job in jobs.values():
        try:
            t = datetime.fromisoformat(str(job["time"]))
        except (KeyError, ValueError):
            continue
        times.append(t.astimezone().replace(tzinfo=None) if t.tzinfo else t)
    return min(times) - margin if times else None


def step_records(run_dir: Path, stages: Iterable[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """stage -> step -> its metrics record (the last line of a repeated step), for records with a
    positive time_step_s."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for stage in sorted(set(stages)):
        rows = read_jsonl(Path(run_dir) / "metrics" / f"{stage}.jsonl", missing_ok=True)
        by_step = {
            r["step"]: r for r in rows if isinstance(r.get("step"), int) and _num(r.get("time_step_s"))
        }  # later lines replace earlier ones
        kept = {s: r for s, r in by_step.items() if r["time_step_s"] > 0}
        if kept:
            out[stage] = kept
    return out


def _stage_idle_share(records: dict[int, dict[str, Any]], key: str) -> tuple[float, int] | None:
    """(sum(idle x time_step_s) / sum(time_step_s), steps) over the steps that have `key`."""
    pairs = [(float(r[key]), float(r["time_step_s"])) for r in records.values() if _num(r.get(key))]
    total = sum(s for _, s in pairs)
    if not pairs or total <= 0:
        return None
    share = sum(min(1.0, max(0.0, idle)) * s for idle, s in pairs) / total
    return share, len(pairs)


@dataclass
class BusyRow:
    """GPU-seconds of one (stage, kind) of the run."""

    stage: str
    kind: str
    job_ids: set[str] = field(default_factory=set)  # sacct JobIDs: jobs and array tasks
    gpu_seconds: float = 0.0
    busy: float = 0.0
    waiting: float = 0.0
    not_split: float = 0.0
    split_by: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        split = self.busy + self.waiting
        return {
            "stage": self.stage,
            "kind": self.kind,
            "jobs": len(self.job_ids),
            "gpu_hours": self.gpu_seconds / 3600,
            "busy_gpu_hours": self.busy / 3600,
            "waiting_gpu_hours": self.waiting / 3600,
            "waiting_share": self.waiting / split if split > 0 else None,
            "not_split_gpu_hours": self.not_split / 3600,
            "split_by": sorted(self.split_by),
        }


def _split_one(
    u: JobUsage, job: dict[str, Any], records: dict[int, dict[str, Any]]
) -> tuple[float, float, float, str | None]:
    """(busy, waiting, not split) GPU-seconds of one attempt and the rule used (None: not split)."""
    gpu_s = float(u.gpu_seconds)
    key = IDLE_KEYS.get(str(job.get("kind")))
    step = job.get("step")
    if key is None or not records:
        return 0.0, 0.0, gpu_s, None
    if step is None:
        found = _stage_idle_share(records, key)
        if found is None:
            return 0.0, 0.0, gpu_s, None
        waiting = gpu_s * found[0]
        return gpu_s - waiting, waiting, 0.0, LONG_LIVED
    rec = records.get(int(step))
    if rec is None or not _num(rec.get(key)):
        return 0.0, 0.0, gpu_s, None
    if u.wasted:
        return 0.0, gpu_s, 0.0, PER_STEP
    busy_s = min(float(u.seconds), (1.0 - min(1.0, max(0.0, float(rec[key])))) * float(rec["time_step_s"]))
    busy = busy_s * u.gpus
    return busy, gpu_s - busy, 0.0, PER_STEP


def split_usage(
    usages: Sequence[JobUsage], jobs: dict[str, dict[str, Any]], records: dict[str, dict[int, dict[str, Any]]]
) -> list[BusyRow]:
    """Busy / waiting GPU-seconds per (stage, kind) of the run's attempts (usages of jobs not in
    `jobs` are skipped), in stage, kind order."""
    rows: dict[tuple[str, str], BusyRow] = {}
    for u in usages:
        job = jobs.get(u.row.job_id.split("_")[0])
        if job is None:
            continue
        stage, kind = str(job.get("stage", "-")), str(job.get("kind", "-"))
        row = rows.setdefault((stage, kind), BusyRow(stage, kind))
        busy, waiting, not_split, rule = _split_one(u, job, records.get(stage, {}))
        row.job_ids.add(u.row.job_id)  # job or array task, as the other tables count them
        row.gpu_seconds += u.gpu_seconds
        row.busy += busy
        row.waiting += waiting
        row.not_split += not_split
        if rule:
            row.split_by.add(rule)
    return [rows[k] for k in sorted(rows)]


def busy_report(
    rows: Sequence[BusyRow], run_dir: Path, jobs: dict[str, dict[str, Any]], usages: Sequence[JobUsage]
) -> dict[str, Any]:
    """The split as plain data (the JSON output's "busy" entry)."""
    total = BusyRow("TOTAL", "")
    for r in rows:
        total.job_ids |= r.job_ids
        total.gpu_seconds += r.gpu_seconds
        total.busy += r.busy
        total.waiting += r.waiting
        total.not_split += r.not_split
    seen = {u.row.job_id.split("_")[0] for u in usages}
    return {
        "run_dir": str(run_dir),
        "rule": SPLIT_RULES,
        "rows": [r.as_dict() for r in rows],
        "totals": {k: v for k, v in total.as_dict().items() if k not in ("stage", "kind", "split_by")},
        "jobs_not_in_sacct": sorted(j for j in jobs if j not in seen),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_busy(report: dict[str, Any]) -> str:
    """Aligned text table: per stage and kind, GPU-hours busy, waiting and not split."""
    heads = ["stage", "kind", "jobs", "GPU-h", "busy GPU-h", "waiting GPU-h", "waiting", "not split GPU-h", "split by"]
    t = report["totals"]
    body = []
    for r in [*report["rows"], dict(t, stage="TOTAL", kind="", split_by=[])]:
        body.append(
            [
                r["stage"],
                r["kind"],
                str(r["jobs"]),
                _cell(r["gpu_hours"]),
                _cell(r["busy_gpu_hours"]) if r["split_by"] or r["stage"] == "TOTAL" else "-",
                _cell(r["waiting_gpu_hours"]) if r["split_by"] or r["stage"] == "TOTAL" else "-",
                "-" if r["waiting_share"] is None else f"{100 * r['waiting_share']:.0f}%",
                _cell(r["not_split_gpu_hours"]),
                ", ".join(r["split_by"]) or ("" if r["stage"] == "TOTAL" else "not split (no step timing)"),
            ]
        )
    cells = [heads, *body]
    widths = [max(len(c[i]) for c in cells) for i in range(len(heads))]
    left = {0, 1, len(heads) - 1}

    def line(c: list[str]) -> str:
        return "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))).rstrip()

    out = [f"Busy and waiting GPU-hours of run {report['run_dir']}", line(heads), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in body[:-1]]
    out += ["  ".join("-" * w for w in widths), line(body[-1])]
    if report["jobs_not_in_sacct"]:
        missing = report["jobs_not_in_sacct"]
        out.append(
            f"{len(missing)} of the run's Slurm jobs not in the sacct rows read (outside the window?): "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    out += textwrap.wrap("How: " + SPLIT_RULES.split(": ", 1)[1] + ".", width=100, subsequent_indent="  ")
    return "\n".join(out) + "\n"
