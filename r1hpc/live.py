"""What a run is doing, read from its directory alone: the live view of `r1hpc run` and `r1hpc status`.

run_view(run_dir) reads config.yaml, jobs.jsonl, models/, metrics/, rollouts/, done/, eval/ and
report.md (plus, for jobs of the local executor, whether their process still lives; and, when the
caller passes them, the Slurm states of the run's jobs) and returns a RunView: each stage of the
recipe (r1hpc.recipe) in one of these states

    done      its outputs are complete: every planned model version published (a GRPO stage: its
              configured steps; the others: v0000), the data or rejection done marker written,
              every evaluated model's eval shards (or its eval summary) written, report.md written
              after everything else was done
    running   it started (a job of it was recorded, or some output of it exists) and is not done
    waiting   nothing of it exists yet: its jobs wait for earlier stages (or in the Slurm queue)
    failed    its latest job failed (local: submitit's result holds an error; Slurm: FAILED,
              TIMEOUT, OUT_OF_MEMORY, CANCELLED, ...)
    stopped   (`r1hpc status` only) started and not done, but nothing of the run runs or waits any
              more: no job process lives, no Slurm job is queued or running, no `r1hpc run` holds
              the run. Running the same `r1hpc run` command again continues it.

with, for a GRPO stage, its step N of M (N = the newest published version: v(N) is published by
step N-1) and the last step's mean reward, accuracy and response length; the run's elapsed time
and an estimate of the time left (estimate below). Nothing here writes to the run directory, so it
works the same for a local run, a Slurm run on a shared filesystem, and for a run started elsewhere.

How the time left is estimated (rough by design; it is never negative):
  * each stage's duration is measured from file times: it ends when its last output appeared
    (mtime of the last version's MANIFEST, of the done marker, of the last eval shard, of
    report.md) and starts when its first job was recorded in jobs.jsonl, or when the stages it
    waits on ended, whichever is later (a GRPO stage starts when its v0000 appeared);
  * a GRPO stage still has (M - N) steps left at its median step time (time_step_s of its
    metrics, else the time between consecutive published versions; the first step, which pays
    the jobs' start-up, is left out once there are others); until it has 3 steps, a GRPO stage
    uses the median step time of the run's other GRPO stages (those with 3 steps) when there is one;
  * each model's eval takes the median time from a model's end to its eval's end so far;
  * any other stage takes the median duration of the run's finished stages of its kind, else of
    the finished stages of the other kinds (not GRPO, eval, data, report, nor pretraining, whose
    shortest run counts only while nothing else finished: it is by far the longest stage); a
    running stage has that duration minus the time it has run, but at least a tenth of it (one
    running longer than its peers is taken as nearly done); the report counts as instant;
  * stages finish along the recipe's DAG (r1hpc.recipe `after`; each model's eval after the
    model; the report after everything): a stage's finish is the latest finish of what it waits
    on plus its own remaining time, as if every stage that may run side by side does, and the time
    left is the latest finish. Slurm queue waits are not counted.
  Until a duration it needs is known (no GRPO step done yet, no stage of a kind finished), the
  estimate is None ("estimating"); a failed or stopped run has none either.

Showing it (the terminal block, the event log, the results table, the polling display of
`r1hpc run`) is r1hpc.live_display.
"""

from __future__ import annotations

import datetime
import re
import shlex
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1hpc import recipe
from r1hpc.fsio import StoreError, read_jsonl
from r1hpc.job_states import job_task_states, submitter, task_class

__all__ = [
    "DONE",
    "RUNNING",
    "WAITING",
    "FAILED",
    "STOPPED",
    "StageView",
    "RunView",
    "run_view",
    "duration",
    "is_number",
    "last_step_figures",
]

DONE, RUNNING, WAITING, FAILED, STOPPED = "done", "running", "waiting", "failed", "stopped"

_VERSION = re.compile(r"^v(\d{4,})$")
_SHARD = re.compile(r"^shard_\d{3,}\.jsonl$")


def _iso_seconds(value: Any) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


# ---------------------------------------------------------------- the view


@dataclass
class StageView:
    """One stage of the recipe as the view shows it."""

    name: str
    kind: str
    state: str  # DONE, RUNNING, WAITING, FAILED or STOPPED
    detail: str = ""  # one readable phrase: progress, what it waits on, why it failed
    steps_done: int | None = None  # GRPO: published steps (v(N) = N steps done)
    steps_planned: int | None = None  # GRPO: configured steps
    last: dict[str, float] = field(default_factory=dict)  # GRPO: reward, accuracy, length of the last step
    step_rows: list[dict[str, Any]] = field(default_factory=list)  # GRPO: metrics, one per step, in order
    started: float | None = None  # epoch seconds (see the module doc)
    finished: float | None = None
    evaluated: list[str] = field(default_factory=list)  # eval: models whose eval is complete
    to_evaluate: list[str] = field(default_factory=list)  # eval: every model this run evaluates


@dataclass
class RunView:
    run_dir: str
    name: str
    stages: list[StageView]
    not_in_run: list[str]  # stages of the recipe this run does not include
    now: float
    started: float | None
    elapsed_s: float
    left_s: float | None  # estimated seconds left; None while unknown (module doc)
    finished: bool
    active: bool | None  # a job runs or waits, or a `r1hpc run` holds the run (None: unknown)
    submitter: dict[str, Any] | None = None

    def stage(self, name: str) -> StageView:
        return next(s for s in self.stages if s.name == name)


def _chosen_stages(cfg: Any) -> list[str] | None:
    """The --stages of the command that wrote config.yaml (its provenance), or None (all)."""
    command = getattr(getattr(cfg, "provenance", None), "command", "") or ""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for i, word in enumerate(words):
        value = None
        if word == "--stages" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--stages="):
            value = word.split("=", 1)[1]
        if value is not None:
            return [s.strip() for s in value.split(",") if s.strip()]
    return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _versions(root: Path, stage: str) -> dict[int, float]:
    """Published versions of models/<stage> -> when their MANIFEST (written last) appeared."""
    out: dict[int, float] = {}
    d = root / "models" / stage
    if not d.is_dir():
        return out
    for p in d.iterdir():
        m = _VERSION.match(p.name)
        if m and (t := _mtime(p / "MANIFEST.json")) is not None:
            out[int(m.group(1))] = t
    return out


def _shards(root: Path, stage: str, step: int = 0) -> dict[str, float]:
    """Published shard files of rollouts/<stage>/step_NNNN -> their mtimes (published by rename)."""
    d = root / "rollouts" / stage / f"step_{step:04d}"
    if not d.is_dir():
        return {}
    return {p.name: t for p in d.iterdir() if _SHARD.match(p.name) and (t := _mtime(p)) is not None}


def _rows_by_step(root: Path, stage: str) -> list[dict[str, Any]]:
    """metrics/<stage>.jsonl, a rerun's repeated step collapsed to its last line, in step order."""
    try:
        rows = read_jsonl(root / "metrics" / f"{stage}.jsonl", missing_ok=True)
    except StoreError:
        return []
    by_step: dict[Any, dict[str, Any]] = {}
    for row in rows:
        by_step[row.get("step")] = row
    return sorted(
        (r for r in by_step.values() if isinstance(r.get("step"), int)),
        key=lambda r: r["step"],
    )


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def last_step_figures(row: dict[str, Any]) -> dict[str, float]:
    out = {}
    accuracy = "reward_accuracy_math" if "reward_accuracy_math" in row else "reward_code"
    named = (
        ("reward_mean", "reward"),
        (accuracy, "accuracy"),
        ("response_length_mean", "length"),
        ("reward_model_general", "rm_general"),  # rl_all: the reward model on its general prompts
    )
    for key, name in named:
        if is_number(row.get(key)):
            out[name] = float(row[key])
    return out


def _step_seconds(rows: list[dict[str, Any]], versions: dict[int, float], done: int) -> tuple[float, int] | None:
    """A GRPO stage's seconds per step and how many steps that comes from: the median time_step_s
    of its metrics, else the median time between consecutive published versions; the first step
    (which also pays the jobs' start-up) counts only while it is the only one."""
    timed = [float(r["time_step_s"]) for r in rows if is_number(r.get("time_step_s")) and r["time_step_s"] > 0]
    if not timed:
        timed = [versions[k] - versions[k - 1] for k in range(1, done + 1) if k in versions and k - 1 in versions]
    if not timed:
        return None
    later = timed[1:] or timed
    return max(0.0, statistics.median(later)), len(timed)


class _Reader:
    """The files of one run directory, read once per view."""

    def __init__(self, root: Path, cfg: Any, job_states: dict[str, list[str]] | None) -> None:
        self.root = root
        self.cfg = cfg
        try:
            self.jobs = read_jsonl(root / "jobs.jsonl", missing_ok=True)
        except StoreError:
            self.jobs = []
        self.job_states = job_states
        # The current records of each stage: the newest per job (step, kind, target, evaluated model);
        # an older attempt that a rerun replaced does not make the stage failed.
        current: dict[tuple[Any, ...], dict[str, Any]] = {}
        for job in self.jobs:
            key = ("stage", "step", "kind", "target", "model_stage")
            current[tuple(job.get(k) for k in key)] = job
        self.current: dict[str, list[dict[str, Any]]] = {}
        for job in current.values():
            self.current.setdefault(str(job.get("stage")), []).append(job)
        # A stage starts with its first current job: a rerun that resubmitted it starts it again.
        self.first_job: dict[str, float] = {}
        for job in current.values():
            t = _iso_seconds(job.get("time"))
            if t is not None:
                stage = str(job.get("stage"))
                self.first_job[stage] = min(self.first_job.get(stage, t), t)
        self._task_states: dict[int, list[str]] = {}

    def task_states(self, job: dict[str, Any]) -> list[str]:
        key = id(job)
        if key not in self._task_states:
            self._task_states[key] = job_task_states(self.root, job, self.job_states)
        return self._task_states[key]

    def planned_steps(self, entry: recipe.Stage) -> int | None:
        if self.cfg is None or entry.kind != "grpo":
            return None
        return int(getattr(self.cfg, entry.section).steps)

    def eval_shards(self) -> int | None:
        return None if self.cfg is None else int(self.cfg.eval.shards)

    def rejection_shards(self, entry: recipe.Stage) -> int | None:
        section = getattr(self.cfg, entry.section, None) if self.cfg is not None and entry.section else None
        return getattr(section, "shards", None)

    def has_output(self, stage: str) -> bool:
        r = self.root
        return any(
            p.exists()
            for p in (
                r / "models" / stage,
                r / "metrics" / f"{stage}.jsonl",
                r / "rollouts" / stage,
                r / "done" / stage,
                r / "train_state" / stage,
            )
        )


def _eval_end(reader: _Reader, model: str) -> float | None:
    """When the eval of `model` was complete (its summary, or its last shard when all are there)."""
    summary = _mtime(reader.root / "eval" / f"{model}.json")
    shards = _shards(reader.root, f"eval-{model}")
    need = reader.eval_shards()
    if need is not None and len(shards) >= need and shards:
        done = max(shards.values())
        return done if summary is None else min(done, summary)
    return summary


def run_view(
    run_dir: str | Path,
    *,
    stages: Sequence[str] | None = None,
    cfg: Any = None,
    job_states: dict[str, list[str]] | None = None,
    now: float | None = None,
    since: float | None = None,
    live: bool = False,
) -> RunView:
    """The run's view (module doc), from the run directory only.

    stages: the stages this run includes (`r1hpc run --stages`); None: those of the command that
    wrote config.yaml (all by default); stages with jobs or outputs are included either way.
    cfg: the run's config (read from config.yaml when None). job_states: Slurm job id -> states of
    its tasks (r1hpc.status.slurm_states); None: Slurm not asked. now: the clock (tests).
    since: when the run started (`r1hpc run`: when this command started; else the first job).
    live: a `r1hpc run` of this run is waiting right now (nothing is "stopped")."""
    root = Path(run_dir)
    now = time.time() if now is None else now
    if cfg is None and (root / "config.yaml").exists():
        from r1hpc.config import read_run_config

        try:
            cfg = read_run_config(root)
        except Exception:  # a config this version cannot read: the view without planned steps
            cfg = None
    reader = _Reader(root, cfg, job_states)
    known = recipe.names()
    chosen = list(stages) if stages is not None else _chosen_stages(cfg)
    in_run = set(known if chosen is None else chosen)
    in_run |= {s for s in reader.first_job if s in known}
    # (kinds are named by recipe.of_kind: several kinds share their name with a stage)
    outputs = recipe.of_kind("data", "pretrain", "sft", "reward_model", "grpo", "rejection")
    in_run |= {e.name for e in outputs if reader.has_output(e.name)}
    if (root / "eval").is_dir() and any((root / "eval").glob("*.json")):
        in_run |= {e.name for e in recipe.of_kind("eval")}

    views: dict[str, StageView] = {}
    for entry in recipe.STAGES:
        if entry.name in in_run:
            views[entry.name] = _stage_view(reader, entry, in_run, views, now)
    sub = submitter(root) if not live else None
    states = [t for jobs in reader.current.values() for j in jobs for t in reader.task_states(j)]
    classes = {task_class(t) for t in states}
    if live or sub is not None or classes & {"active", "queued"}:
        active: bool | None = True
    elif "submitted" in classes or not states:  # job states unknown, or no job recorded
        active = None
    else:
        active = False
    if active is False:
        for v in views.values():
            if v.state == RUNNING:
                v.state = STOPPED
                v.detail = (v.detail + "; " if v.detail else "") + "nothing runs it now"
    finished = bool(views) and all(v.state == DONE for v in views.values())
    starts = list(reader.first_job.values()) or [t for t in [_mtime(root / "config.yaml")] if t is not None]
    started = since if since is not None else (min(starts) if starts else None)
    ends = [v.finished for v in views.values() if v.finished is not None]
    until = max(ends) if finished and ends else now
    elapsed = max(0.0, until - started) if started is not None else 0.0
    left = 0.0 if finished else _estimate_left(reader, views, in_run, now)
    return RunView(
        run_dir=str(root),
        name=getattr(cfg, "name", None) or root.name,
        stages=list(views.values()),
        not_in_run=[s for s in known if s not in in_run],
        now=now,
        started=started,
        elapsed_s=elapsed,
        left_s=left,
        finished=finished,
        active=active,
        submitter=sub,
    )


def _deps(entry: recipe.Stage, in_run: set[str]) -> list[str]:
    return [d for d in entry.after if d in in_run]


def _stage_view(
    reader: _Reader, entry: recipe.Stage, in_run: set[str], earlier: dict[str, StageView], now: float
) -> StageView:
    root, name = reader.root, entry.name
    view = StageView(name, entry.kind, WAITING)
    dep_ends = [earlier[d].finished for d in _deps(entry, in_run) if d in earlier]
    dep_end = max((t for t in dep_ends if t is not None), default=None)
    first_job = reader.first_job.get(name)
    started_at = max((t for t in (first_job, dep_end) if t is not None), default=None)
    end: float | None = None
    progress = False
    if entry.kind == "grpo":
        versions = _versions(root, name)
        planned = reader.planned_steps(entry)
        rows = _rows_by_step(root, name)
        done_steps = max(versions, default=0)
        view.steps_done, view.steps_planned, view.step_rows = done_steps, planned, rows
        view.last = last_step_figures(rows[-1]) if rows else {}
        if 0 in versions:
            started_at = versions[0]
        if planned is not None and versions and done_steps >= planned:
            end = versions.get(planned, versions[done_steps])
        progress = bool(versions) or bool(rows)
        view.detail = _grpo_detail(view)
    elif entry in recipe.of_kind("pretrain", "sft", "reward_model"):
        versions = _versions(root, name)
        if versions:
            end = versions[max(versions)]
        rows = _rows_by_step(root, name)
        progress = reader.has_output(name)
        if rows and end is None and is_number(rows[-1].get("loss")):
            view.detail = f"step {rows[-1]['step']}, loss {rows[-1]['loss']:.3f}"
    elif entry in recipe.of_kind("data", "rejection"):
        markers = sorted((root / "done" / name).glob("*.json")) if (root / "done" / name).is_dir() else []
        # The data stage's one marker; the rejection round's merge marker (its array writes shards).
        wanted = [m for m in markers if entry.kind == "data" or m.stem == "merge"]
        if wanted:
            end = _mtime(wanted[-1])
        progress = reader.has_output(name)
        if entry.kind == "rejection" and end is None:
            need = reader.rejection_shards(entry)
            got = len(_shards(root, name))
            if got:
                view.detail = f"{got}/{need} shards sampled" if need else f"{got} shards sampled"
    elif entry.kind == "eval":
        models = [m for m in recipe.evaluated() if m in in_run or _versions(root, m)]
        ends = {m: _eval_end(reader, m) for m in models}
        view.to_evaluate = models
        view.evaluated = [m for m in models if ends[m] is not None]
        progress = any((root / "rollouts" / f"eval-{m}").exists() for m in models)
        if models and len(view.evaluated) == len(models):
            end = max(t for t in ends.values() if t is not None)
        if first_job is not None:
            started_at = first_job
        elif models and (firsts := [earlier[m].finished for m in models if m in earlier]):
            started_at = min((t for t in firsts if t is not None), default=None)
        view.detail = f"{len(view.evaluated)}/{len(models)} models evaluated"
    elif entry.kind == "report":
        others = [v for v in earlier.values()]
        report = _mtime(root / "report.md")
        latest = max((v.finished or 0.0 for v in others), default=0.0)
        if report is not None and all(v.state == DONE for v in others) and report >= latest - 1.0:
            end = report
        if others and all(v.state == DONE for v in others):
            started_at = max(first_job or 0.0, latest) or None
    else:  # a kind this view does not know: done once it published a model
        versions = _versions(root, name)
        end = versions[max(versions)] if versions else None
        progress = reader.has_output(name)
    view.started, view.finished = started_at, end

    jobs = reader.current.get(name, [])
    if end is not None:
        view.state = DONE
        took = duration(end - started_at) if started_at is not None and end >= started_at else ""
        if entry.kind == "grpo":
            view.detail = _grpo_detail(view) + (f", took {took}" if took else "")
        elif entry.kind == "eval":
            view.detail += f", took {took}" if took else ""
        else:
            view.detail = f"took {took}" if took else ""
        return view
    tasks = [(j, s) for j in jobs for s in reader.task_states(j)]
    classes = {task_class(s) for _, s in tasks}
    failed = [(j, s) for j, s in tasks if task_class(s) == "failed"]
    if failed:
        job, state = failed[0]
        logs = root / "logs" / str(job.get("job_id"))
        view.state = FAILED
        progress_text = view.detail + "; " if entry.kind == "grpo" and progress and view.detail else ""
        view.detail = progress_text + f"job {job.get('job_id')} ({job.get('kind')}) {state}"
        view.detail += f": see {logs}" if logs.is_dir() else ""
    elif progress or classes & {"active", "ok", "gone"}:
        view.state = RUNNING
    elif entry.kind == "eval":
        view.detail = f"0/{len(view.to_evaluate)} models evaluated"
    elif "queued" in classes:
        view.detail = "queued on Slurm (" + ", ".join(f"job {j.get('job_id')}" for j in jobs[:3]) + ")"
    else:
        if entry.kind == "report":
            pending = [v.name for v in earlier.values() if v.state != DONE]
            pending = pending if len(pending) <= 3 else [f"the other stages ({len(pending)} to go)"]
        else:
            pending = [d for d in _deps(entry, in_run) if d in earlier and earlier[d].state != DONE]
        view.detail = f"after {_names(pending)}" if pending else ""
        if jobs:
            view.detail = (view.detail + "; " if view.detail else "") + "submitted"
    if view.state == WAITING:
        view.started = None
    return view


def _names(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _grpo_detail(view: StageView) -> str:
    if view.steps_done is None:
        return ""
    parts = [f"step {view.steps_done}/{view.steps_planned if view.steps_planned is not None else '?'}"]
    last = view.last
    figures = []
    if "reward" in last:
        figures.append(f"reward {last['reward']:.3f}")
    if "accuracy" in last:
        figures.append(f"accuracy {last['accuracy']:.2f}")
    if "length" in last:
        figures.append(f"response {last['length']:.0f} tokens")
    if "rm_general" in last:
        figures.append(f"reward model on general prompts {last['rm_general']:.2f}")
    return ", ".join(parts + figures)


def _estimate_left(reader: _Reader, views: dict[str, StageView], in_run: set[str], now: float) -> float | None:
    """Seconds left (module doc: durations by kind, GRPO step times, finishes along the DAG)."""
    if any(v.state in (FAILED, STOPPED) for v in views.values()):
        return None
    measured: dict[str, list[float]] = {}  # kind -> durations of its finished stages
    for v in views.values():
        if v.state == DONE and v.started is not None and v.finished is not None and v.kind not in ("grpo", "eval"):
            measured.setdefault(v.kind, []).append(max(0.0, v.finished - v.started))
    # Each evaluated model's eval span, measured from the model's end to its eval's end.
    eval_spans = []
    if "eval" in views:
        for m in views["eval"].evaluated:
            if m in views and views[m].finished is not None:
                end = _eval_end(reader, m)
                if end is not None:
                    eval_spans.append(max(0.0, end - views[m].finished))
    # A kind not measured yet takes the median of the other kinds; pretraining (its shortest run)
    # only while nothing else is measured (it is the longest stage by far when it runs at all).
    shared = {e.kind for e in recipe.of_kind("sft", "reward_model", "rejection")}
    general = [d for kind, spans in measured.items() if kind in shared for d in spans]
    general = general or sorted(measured.get("pretrain", []))[:1]
    measured_rates = {}
    for v in views.values():
        if v.kind == "grpo" and v.steps_done:
            rate = _step_seconds(v.step_rows, _versions(reader.root, v.name), v.steps_done)
            if rate is not None:
                measured_rates[v.name] = rate
    # A stage's own rate once it has 3 steps; before that the other stages' (when they have one).
    settled = [r for r, n in measured_rates.values() if n >= 3]
    pooled = statistics.median(settled or [r for r, _ in measured_rates.values()]) if measured_rates else None
    rates = {name: r if n >= 3 or not settled else pooled for name, (r, n) in measured_rates.items()}

    def typical(kind: str) -> float | None:
        if kind == "report":
            return 0.0
        spans = measured.get(kind) or (general if kind != "data" else [])
        return statistics.median(spans) if spans else None

    def remaining(v: StageView) -> float | None:
        if v.state == DONE:
            return 0.0
        if v.kind == "grpo":
            if v.steps_planned is None:
                return None
            rate = rates.get(v.name, pooled)
            return None if rate is None else max(0, v.steps_planned - (v.steps_done or 0)) * rate
        base = typical(v.kind)
        if base is None:
            return None
        if v.state == RUNNING and v.started is not None:
            return max(base - max(0.0, now - v.started), 0.1 * base)
        return base

    finish: dict[str, float] = {}
    for v in views.values():
        entry = recipe.stage(v.name)
        if v.kind == "eval":
            per_eval = statistics.median(eval_spans) if eval_spans else None
            latest = 0.0
            for m in v.to_evaluate:
                if m in v.evaluated:
                    continue
                if per_eval is None:
                    return None
                own = per_eval
                if m in views and views[m].state == DONE and views[m].finished is not None:
                    own = max(per_eval - max(0.0, now - views[m].finished), 0.1 * per_eval)
                latest = max(latest, finish.get(m, 0.0) + own)
            finish[v.name] = latest
            continue
        rest = remaining(v)
        if rest is None:
            return None
        after = [finish[d] for d in _deps(entry, in_run) if d in finish]
        if v.kind == "report":
            after = list(finish.values())
        finish[v.name] = max(after, default=0.0) + rest
    return max(finish.values(), default=0.0)


def duration(seconds: float) -> str:
    """42s, 4m12s, 1h02m."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
