"""`r1hpc status RUN_DIR`: a run's stages, steps, results and jobs, with Slurm states.

Everything comes from the run directory (config.yaml, jobs.jsonl, models/, rollouts/, metrics/,
eval/) plus, for jobs submitted to Slurm, one `sacct` call (which also knows running and pending
jobs) and one `squeue` call for jobs sacct does not know yet. It prints the same view `r1hpc run`
shows while it waits (r1hpc.live: each stage done / running / waiting / failed / stopped, a GRPO
stage's step N of M with its last reward, accuracy and response length, the elapsed time and an
estimate of the time left), the held-out results once evaluated, where a GRPO step's time goes
(medians per step of generation, scoring, training, the train job's wait for rollouts, policy
reload, publish and overhead: job starts, handoffs, polling; and the share of the step each pool,
train job and rollout tasks, sat idle; see step_time_summary()), and the run's jobs with their
states per stage (every job with --jobs).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from r1hpc import recipe
from r1hpc.fsio import read_jsonl
from r1hpc.store import RunDir, list_versions

__all__ = [
    "main",
    "slurm_states",
    "queued_states",
    "summarize_run",
    "step_time_summary",
    "format_step_times",
    "TIMING_KEYS",
    "TIMING_SECONDS",
    "TIMING_SHARES",
]

# Per-step timing a GRPO metrics record carries (r1hpc.stages.grpo_train.step_timing), with how
# status and the report name them. Seconds first, then the idle shares (0..1).
TIMING_SECONDS = (
    ("time_step_s", "whole step"),
    ("time_rollout_s", "rollout"),
    ("time_score_s", "scoring"),
    ("time_train_s", "training"),
    ("time_wait_s", "wait for rollouts"),
    ("time_reload_s", "policy reload"),
    ("time_publish_s", "publish"),
    ("time_handoff_s", "overhead"),
)
TIMING_SHARES = (
    ("overhead_frac", "overhead share"),  # time_handoff_s / time_step_s, per step
    ("idle_train_frac", "train job idle"),
    ("idle_rollout_frac", "rollout tasks idle"),
)
TIMING_KEYS = tuple(k for k, _ in TIMING_SECONDS) + ("idle_train_frac", "idle_rollout_frac")


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def step_time_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians per step of a GRPO stage's timing (rows: its metrics records, one per step).

    {"steps": steps with any timing, "<key>": median or None for each of TIMING_KEYS and
    "overhead_frac" (the median over steps of time_handoff_s / time_step_s)}; None when no row
    has timing (an old run, or a stage that is not GRPO). Medians, not means: the first step of a
    job also counts its start-up and stands out."""
    timed = [r for r in rows if any(_num(r.get(k)) for k in TIMING_KEYS)]
    if not timed:
        return None
    out: dict[str, Any] = {"steps": len(timed)}
    for key in TIMING_KEYS:
        vals = [float(r[key]) for r in timed if _num(r.get(key))]
        out[key] = statistics.median(vals) if vals else None
    shares = [
        float(r["time_handoff_s"]) / float(r["time_step_s"])
        for r in timed
        if _num(r.get("time_handoff_s")) and _num(r.get("time_step_s")) and r["time_step_s"] > 0
    ]
    out["overhead_frac"] = statistics.median(shares) if shares else None
    return out


def _last_per_step(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics records with a rerun step collapsed to its last line (as stages.common.read_metrics,
    without importing the stages)."""
    by_step: dict[Any, dict[str, Any]] = {}
    for row in rows:
        by_step[row.get("step")] = row
    return list(by_step.values())


def slurm_states(job_ids: list[str]) -> dict[str, list[str]]:
    """job (or array) id -> states of its tasks, from sacct; {} when Slurm is not reachable."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    proc = subprocess.run(
        ["sacct", "-n", "-P", "-X", "--format=JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return _states_by_job(proc.stdout) if proc.returncode == 0 else {}


def _states_by_job(listing: str) -> dict[str, list[str]]:
    """ "<job id>|<state ...>" lines (sacct -P, squeue -o "%i|%T") -> job or array id -> states."""
    states: dict[str, list[str]] = {}
    for line in listing.splitlines():
        if "|" not in line:
            continue
        job, state = line.split("|", 1)
        base = job.split("_")[0]
        # Expanded array tasks look like 123_4; a not-yet-started array shows 123_[0-3] (all pending).
        states.setdefault(base, []).append(state.split()[0] if state.strip() else "UNKNOWN")
    return states


def queued_states(job_ids: list[str]) -> dict[str, list[str]]:
    """job (or array) id -> states of its tasks still in the queue (PENDING, RUNNING, ...), from
    squeue: unlike sacct, it knows a job the moment sbatch returns. {} when Slurm is not reachable."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    # All of this user's jobs in one call (squeue -j fails on ids that already left the queue).
    proc = subprocess.run(["squeue", "-h", "--me", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return {}
    wanted = set(job_ids)
    return {job: states for job, states in _states_by_job(proc.stdout).items() if job in wanted}


def summarize_run(run_dir: str | Path, ask_slurm: bool = True) -> dict[str, Any]:
    """Collect the run's state as plain data (the text view is built from it): "stages" (published
    versions, GRPO steps done of planned, last metrics, step_time_summary), "jobs" (jobs.jsonl with
    each task's state) and "view" (r1hpc.live.run_view, with the Slurm states)."""
    from r1hpc.job_states import job_task_states
    from r1hpc.live import run_view

    run = RunDir(run_dir)
    if not (Path(run_dir) / "config.yaml").exists() and not run.jobs_path.exists():
        raise FileNotFoundError(f"{run_dir}: not an r1hpc run directory (no config.yaml or jobs.jsonl)")
    jobs = read_jsonl(run.jobs_path, missing_ok=True)
    slurm_ids = [j["job_id"] for j in jobs if j.get("executor") == "slurm"]
    states = slurm_states(slurm_ids) if ask_slurm else {}
    if ask_slurm:  # jobs sacct does not know yet (just submitted)
        missing = [j for j in slurm_ids if j not in states]
        states.update(queued_states(missing))
    for job in jobs:
        job["states"] = job_task_states(Path(run_dir), job, states)
    planned = _planned_rl_steps(Path(run_dir))
    stages: dict[str, dict[str, Any]] = {}
    for stage in sorted(
        {j["stage"] for j in jobs} | _dirs(Path(run_dir) / "models") | _dirs(Path(run_dir) / "rollouts")
    ):
        versions = list_versions(run, stage) if (Path(run_dir) / "models" / stage).is_dir() else []
        steps = sorted(_dirs(Path(run_dir) / "rollouts" / stage))
        metrics = read_jsonl(run.metrics_path(stage, create=False), missing_ok=True)
        stages[stage] = {
            "versions": [v.name for v in versions],
            "rollout_steps": len(steps),
            "last_metrics": metrics[-1] if metrics else None,
            "step_times": step_time_summary(_last_per_step(metrics)),
        }
        if stage in planned:  # v(N) is published by step N-1's train job: N steps done
            stages[stage]["steps_done"] = max((v.version for v in versions), default=0)
            stages[stage]["steps_planned"] = planned[stage]
    view = run_view(run_dir, job_states=states if ask_slurm else None)
    return {"run_dir": str(run_dir), "jobs": jobs, "stages": stages, "view": view}


def _planned_rl_steps(run_dir: Path) -> dict[str, int]:
    """GRPO stage -> configured steps, from the run's resolved config ({} without one)."""
    from r1hpc.config import read_run_config

    if not (run_dir / "config.yaml").exists():
        return {}
    cfg = read_run_config(run_dir)
    return {s.name: getattr(cfg, s.section).steps for s in recipe.of_kind("grpo")}


def _dirs(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")} if path.is_dir() else set()


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 100 else f"{value:.1f} s"


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def format_step_times(stage: str, t: dict[str, Any], done: int | None = None, planned: int | None = None) -> list[str]:
    """A few plain sentences on where a GRPO stage's step time goes (t: step_time_summary())."""
    has = lambda key: t.get(key) is not None  # noqa: E731
    progress = f"step {done}/{planned}, " if planned is not None else ""
    head = f"  {stage}: {progress}median over {t['steps']} timed step{'s' if t['steps'] != 1 else ''}"
    if has("time_step_s"):
        head += f": {_seconds(t['time_step_s'])} per step"
    lines = [head]
    work = [
        f"{label} {_seconds(t[key])}"
        for key, label in (("time_rollout_s", "rollout"), ("time_score_s", "scoring"), ("time_train_s", "training"))
        if has(key)
    ]
    if has("time_handoff_s"):
        share = f" ({_percent(t['overhead_frac'])} of the step)" if has("overhead_frac") else ""
        work.append(f"overhead {_seconds(t['time_handoff_s'])}{share}: job starts, handoffs, polling")
    if work:
        lines.append("    " + ", ".join(work))
    train = []
    if has("time_wait_s"):
        train.append(f"waits {_seconds(t['time_wait_s'])} for the rollouts")
    if has("time_publish_s"):
        train.append(f"publishes the new policy in {_seconds(t['time_publish_s'])}")
    if has("idle_train_frac"):
        train.append(f"idle {_percent(t['idle_train_frac'])} of the step")
    if train:
        lines.append("    train job: " + ", ".join(train))
    rollout = []
    if has("time_reload_s"):
        rollout.append(f"reload the policy in {_seconds(t['time_reload_s'])}")
    if has("idle_rollout_frac"):
        rollout.append(f"idle {_percent(t['idle_rollout_frac'])} of the step")
    if rollout:
        lines.append("    rollout tasks: " + ", ".join(rollout))
    return lines


def _state_counts(states: list[str]) -> str:
    counts = Counter(states)
    return ", ".join(f"{s} x{n}" if n > 1 else s for s, n in sorted(counts.items()))


def format_status(summary: dict[str, Any], all_jobs: bool = False) -> str:
    """The view of r1hpc.live, the held-out results, where the GRPO step time goes, and the jobs
    (per stage, or every job with all_jobs)."""
    from r1hpc.live_display import render_view, results_lines

    view = summary.get("view")
    lines = render_view(view) if view is not None else [f"run {summary['run_dir']}"]
    results = results_lines(summary["run_dir"])
    if results:
        lines += ["", *results]
    timing: list[str] = []
    order = {name: i for i, name in enumerate(recipe.names())}
    for stage, info in sorted(summary["stages"].items(), key=lambda item: order.get(item[0], len(order))):
        if info.get("step_times"):
            timing += format_step_times(stage, info["step_times"], info.get("steps_done"), info.get("steps_planned"))
    if timing:
        lines += ["", "where the time goes (GRPO, per step):", *timing]
    jobs = summary["jobs"]
    if not jobs:
        return "\n".join([*lines, "", "jobs: none recorded yet (jobs.jsonl)"])
    where = "Slurm (sacct/squeue)" if any(j.get("executor") == "slurm" for j in jobs) else "local processes"
    if all_jobs:
        lines += [
            "",
            f"jobs (states from {where}):",
            f"  {'submitted':<26} {'stage':<14} {'step':>4} {'kind':<8} {'job':>10} {'tasks':>5}  states",
        ]
        for job in jobs:
            step = "-" if job.get("step") is None else job["step"]
            lines.append(
                f"  {job['time']:<26} {job['stage']:<14} {step:>4} {job['kind']:<8} {job['job_id']:>10} "
                f"{job.get('array_size') or 1:>5}  {_state_counts(job['states'])}"
            )
        return "\n".join(lines)
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for job in sorted(jobs, key=lambda j: order.get(str(j["stage"]), len(order))):  # stable: in time order
        by_stage.setdefault(str(job["stage"]), []).append(job)
    pad = max(14, *(len(s) for s in by_stage))
    lines += [
        "",
        f"jobs per stage (states from {where}; every job: r1hpc status {summary['run_dir']} --jobs):",
        f"  {'stage':<{pad}} {'jobs':>4} {'tasks':>5}  {'last job':>10}  states",
    ]
    for stage, stage_jobs in by_stage.items():
        states = [s for j in stage_jobs for s in j["states"]]
        lines.append(
            f"  {stage:<{pad}} {len(stage_jobs):>4} {len(states):>5}  {stage_jobs[-1]['job_id']:>10}  "
            f"{_state_counts(states)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="r1hpc status", description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--no-slurm", action="store_true", help="do not ask sacct for job states")
    parser.add_argument("--jobs", action="store_true", help="list every job (default: one line per stage)")
    args = parser.parse_args(argv)
    try:
        summary = summarize_run(args.run_dir, ask_slurm=not args.no_slurm)
    except FileNotFoundError as e:
        print(f"r1hpc status: {e}")
        return 2
    print(format_status(summary, all_jobs=args.jobs))
    return 0
