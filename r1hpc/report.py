"""The run report: runs/<name>/report.md and runs/<name>/plots/*.png, built only from files.

    python -m r1hpc.report runs/tiny

Sources: metrics/<stage>.jsonl (per-step training metrics), eval/<stage>.json (held-out
summaries written by r1hpc.stages.eval, with the reward model's score on the general held-out
prompts under "general") and its per-problem records rollouts/eval-<stage>/,
jobs.jsonl and the submitit logs (job wall time). The first section, "The R1 story in this run",
is r1hpc.report_story: the paper's claim per stage, its figure, paired interval and verdict.
Nothing is hard-coded about the results: every sentence of "What this shows" is computed from
those numbers, and a stage without its files is listed as "not run".

Job wall time: for Slurm jobs, sacct's ElapsedRaw of every attempt (requeued attempts included)
when sacct answers; otherwise, and for local jobs, the submitit log lines of each job or array
task (from "Starting with JobEnvironment" to the last line of each attempt: the Python job body,
without interpreter start-up). The report says which source each stage's time came from.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1hpc import recipe
from r1hpc.eval_metrics import paired_difference
from r1hpc.fsio import StoreError, atomic_write_text, read_json, read_jsonl
from r1hpc.report_story import story_lines
from r1hpc.report_tables import eval_tables, fmt_ci, general_table, student_table
from r1hpc.stages.common import read_metrics
from r1hpc.status import TIMING_SECONDS, TIMING_SHARES, step_time_summary

__all__ = ["build_report", "main", "job_times", "compare_sentences"]

# Every list of stages comes from the recipe's table (r1hpc.recipe), read when a report is built:
# recipe.evaluated() (models in recipe order, the student ones last so the distillation rows sit
# together), recipe.comparisons() (what each stage is compared with in "What this shows").


def _rl_stages() -> list[str]:
    return [s.name for s in recipe.of_kind("grpo")]


def _sft_stages() -> list[str]:
    return [s.name for s in recipe.of_kind("pretrain", "sft", "reward_model")]


_LOG_LINE = re.compile(r"^submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - (.*)$")


# ---------------------------------------------------------------- job wall time


def _log_seconds(log_dir: Path, task_id: str) -> float | None:
    """Wall seconds of one submitit job from its rank-0 log lines (summed over attempts); None if
    none. submitit may log to .out or .err: the larger of the two counts, never both."""
    files = sorted(log_dir.glob(f"*/{task_id}_0_log.*")) + sorted(log_dir.glob(f"{task_id}_0_log.*"))
    best: float | None = None
    for f in files:
        total, found = 0.0, False
        start = last = None
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _LOG_LINE.match(line)
            if not m:
                continue
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            if m.group(2).startswith("Starting with JobEnvironment"):
                if start is not None and last is not None:
                    total += (last - start).total_seconds()
                start = t
            last = t
        if start is not None and last is not None:
            total += (last - start).total_seconds()
            found = True
        if found and (best is None or total > best):
            best = total
    return best


def _sacct_seconds(job_ids: Sequence[str]) -> dict[str, list[float]]:
    """{task job id: [summed ElapsedRaw, summed ElapsedRaw x allocated GPUs]} from sacct; SacctError
    if sacct is absent or fails."""
    from r1hpc.accounting.sacct import FIELDS, SacctError, parse_dump, run_sacct
    from r1hpc.accounting.usage import parse_gpus

    if shutil.which("sacct") is None:
        raise SacctError("sacct not on PATH")
    base_ids = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for i in range(0, len(base_ids), 200):  # keep the command line short
        cmd = ["sacct", "-P", "-D", "-X", "--format=" + ",".join(FIELDS), "-j", ",".join(base_ids[i : i + 200])]
        for row in parse_dump(run_sacct(cmd, timeout=60), "sacct"):
            out[row.job_id][0] += row.elapsed_s
            out[row.job_id][1] += row.elapsed_s * parse_gpus(row)[0]
    return dict(out)


def job_times(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per stage: {"seconds": {kind: s}, "gpu_seconds": {kind: s}, "jobs": n, "tasks": n, "unknown": n,
    "sources": {...}}; gpu_seconds only from sacct (the logs do not say how many GPUs a job held)."""
    jobs = read_jsonl(run_dir / "jobs.jsonl", missing_ok=True)
    slurm_ids = [t for j in jobs if j.get("executor") == "slurm" for t in j.get("task_ids", [])]
    sacct: dict[str, list[float]] = {}
    sacct_error = ""
    if slurm_ids:
        try:
            sacct = _sacct_seconds(slurm_ids)
        except Exception as e:  # sacct unreachable: fall back to the logs, and say so
            sacct_error = str(e).splitlines()[0]
    out: dict[str, dict[str, Any]] = {}
    for i, job in enumerate(jobs, 1):
        stage, kind = job.get("stage"), job.get("kind", "job")
        if not isinstance(stage, str) or not isinstance(job.get("task_ids"), list):
            raise ValueError(f"{run_dir / 'jobs.jsonl'}:{i}: expected 'stage' (str) and 'task_ids' (list), got {job}")
        entry = out.setdefault(
            stage,
            {
                "seconds": defaultdict(float),
                "gpu_seconds": defaultdict(float),
                "jobs": 0,
                "tasks": 0,
                "unknown": 0,
                "sources": set(),
            },
        )
        entry["jobs"] += 1
        for tid in job["task_ids"]:
            entry["tasks"] += 1
            if str(tid) in sacct:
                entry["seconds"][kind] += sacct[str(tid)][0]
                entry["gpu_seconds"][kind] += sacct[str(tid)][1]
                entry["sources"].add("sacct ElapsedRaw")
                continue
            secs = _log_seconds(run_dir / "logs", str(tid))
            if secs is None:
                entry["unknown"] += 1
            else:
                entry["seconds"][kind] += secs
                entry["sources"].add(
                    "submitit log timestamps"
                    + (" (sacct: " + sacct_error + ")" if job.get("executor") == "slurm" and sacct_error else "")
                )
    for entry in out.values():
        entry["seconds"] = dict(entry["seconds"])
        entry["gpu_seconds"] = {k: v for k, v in entry["gpu_seconds"].items() if v > 0}
        entry["sources"] = sorted(entry["sources"])
    return out


# ---------------------------------------------------------------- reading the run


def _read_summaries(run_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Eval summaries present ({stage: summary}) and unreadable ones ({stage: why})."""
    found, bad = {}, {}
    names = list(recipe.evaluated()) + sorted(
        p.stem for p in (run_dir / "eval").glob("*.json") if p.stem not in recipe.evaluated()
    )
    for stage in names:
        path = run_dir / "eval" / f"{stage}.json"
        if not path.exists():
            continue
        try:
            s = read_json(path)
            for key in ("pass_at_1", "pass_at_1_ci", "cons_at_k", "format_rate", "k"):
                if key not in s:
                    raise StoreError(f"{path}: no {key!r} (expected an r1hpc.stages.eval summary)")
            found[stage] = s
        except StoreError as e:
            bad[stage] = str(e)
    return found, bad


def _edge_mean(rows: list[dict[str, Any]], key: str, last: bool) -> tuple[float, int] | None:
    """Mean of `key` over the first (or last) few steps: min(3, half the steps), less noisy than one."""
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    if not vals:
        return None
    n = max(1, min(3, len(vals) // 2))
    part = vals[-n:] if last else vals[:n]
    return sum(part) / n, n


# ---------------------------------------------------------------- "what this shows"


def compare_sentences(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per comparison of the recipe whose two stages were both evaluated."""
    out = []
    for after, before in recipe.comparisons():
        if after not in summaries or before not in summaries:
            continue
        a, b = summaries[after], summaries[before]
        (alo, ahi), (blo, bhi) = a["pass_at_1_ci"], b["pass_at_1_ci"]
        # Compared as printed (3 decimals): "raised from 0.383 to 0.383" would read as a contradiction.
        pa, pb = round(a["pass_at_1"], 3), round(b["pass_at_1"], 3)
        verb = "raised" if pa > pb else "lowered" if pa < pb else "left"
        overlap = alo <= bhi and blo <= ahi
        noise = (
            "the 95% intervals overlap, so this is not clearly beyond the noise of "
            f"{a['k']} samples x {a.get('problems', '?')} problems"
            if overlap
            else "the 95% intervals do not overlap: a difference beyond sampling noise"
        )
        if after == "distill" and before == "distill_rl":
            lead = f"On the student, distillation reached pass@1 {fmt_ci(a)} and RL directly {fmt_ci(b)}; "
            lead += (
                "distillation is ahead; "
                if a["pass_at_1"] > b["pass_at_1"]
                else "RL on the student is ahead; "
                if a["pass_at_1"] < b["pass_at_1"]
                else "they tie; "
            )
            out.append(lead + noise + ".")
            continue
        change = f"unchanged at {a['pass_at_1']:.3f}" if verb == "left" else f"from {fmt_ci(b)} to {fmt_ci(a)}"
        paired = paired_difference(a, b)
        if paired is not None:
            lo, hi = paired["ci"]
            beyond = "excludes 0: beyond the noise" if lo > 0 or hi < 0 else "includes 0"
            noise += (
                f"; paired over the same {paired['problems']} problems the change is "
                f"{paired['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}], an interval that {beyond}"
            )
        out.append(
            f"{after} {verb} held-out pass@1 {change} (vs {before}); {noise}. "
            f"Format rate {b['format_rate']:.2f} -> {a['format_rate']:.2f}, "
            f"cons@{a['k']} {b['cons_at_k']:.3f} -> {a['cons_at_k']:.3f}."
        )
    if summaries:
        best = max(summaries, key=lambda s: summaries[s]["pass_at_1"])
        out.append(f"Best held-out pass@1: {best} at {fmt_ci(summaries[best])}.")
    return out


def _training_sentences(rl: dict[str, list[dict[str, Any]]]) -> list[str]:
    out = []
    for stage, rows in rl.items():
        parts = []
        for key, what, fmt in (
            ("reward_mean", "mean reward", "{:.3f}"),
            ("reward_accuracy_math", "train accuracy", "{:.3f}"),
            ("response_length_mean", "mean response length", "{:.1f} tokens"),
        ):
            first, last = _edge_mean(rows, key, False), _edge_mean(rows, key, True)
            if first and last:
                if last[0] == first[0]:
                    parts.append(f"{what} stayed at {fmt.format(last[0])}")
                else:
                    move = "rose" if last[0] > first[0] else "fell"
                    parts.append(f"{what} {move} from {fmt.format(first[0])} to {fmt.format(last[0])}")
        if parts:
            n = _edge_mean(rows, "reward_mean", False)
            span = f" (means of the first and last {n[1]} steps)" if n and n[1] > 1 else ""
            out.append(f"{stage}, {len(rows)} GRPO steps: " + "; ".join(parts) + span + ".")
    return out


def _compute_sentence(times: dict[str, dict[str, Any]]) -> list[str]:
    totals = {s: sum(t["seconds"].values()) for s, t in times.items()}
    grand = sum(totals.values())
    if grand <= 0:
        return []
    top = max(totals, key=totals.get)
    gpu_hours = sum(v for t in times.values() for v in t.get("gpu_seconds", {}).values()) / 3600
    return [
        f"Compute: {grand / 60:.1f} job-minutes in all; {top} took the most "
        f"({totals[top] / 60:.1f} min, {100 * totals[top] / grand:.0f}%)"
        + (f"; {gpu_hours:.2f} GPU-hours from sacct." if gpu_hours > 0 else ".")
    ]


# ---------------------------------------------------------------- markdown


def _training_table(rl: dict[str, list[dict[str, Any]]], sft: dict[str, list[dict[str, Any]]]) -> list[str]:
    def mean(rows: list[dict[str, Any]], key: str) -> str:
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return f"{sum(vals) / len(vals):.1f}" if vals else "-"

    def first_last(rows: list[dict[str, Any]], key: str, digits: int = 3) -> str:
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return f"{vals[0]:.{digits}f} -> {vals[-1]:.{digits}f}" if vals else "-"

    lines = [
        "| RL stage | steps | reward | train accuracy | response length | KL | entropy | "
        "rollout / train / handoff s per step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage in _rl_stages():
        rows = rl.get(stage, [])
        if not rows:
            lines.append(f"| {stage} | not run | | | | | | |")
            continue
        lines.append(
            f"| {stage} | {len(rows)} | {first_last(rows, 'reward_mean')} | "
            f"{first_last(rows, 'reward_accuracy_math')} | {first_last(rows, 'response_length_mean', 1)} | "
            f"{first_last(rows, 'kl')} | {first_last(rows, 'entropy')} | "
            f"{mean(rows, 'time_rollout_s')} / {mean(rows, 'time_train_s')} / {mean(rows, 'time_handoff_s')} |"
        )
    lines += ["", "| SFT stage | logged steps | loss first -> last |", "|---|---|---|"]
    for stage in _sft_stages():
        rows = sft.get(stage, [])
        lines.append(f"| {stage} | {len(rows)} | {first_last(rows, 'loss')} |" if rows else f"| {stage} | not run | |")
    return lines


def _time_table(rl: dict[str, list[dict[str, Any]]]) -> list[str]:
    """'Where the time goes': per GRPO stage, the median of each phase per step and the idle shares;
    a stage whose metrics carry no timing (runs older than the per-step timing) says so."""
    heads = [f"{label} s" for _, label in TIMING_SECONDS] + [label for _, label in TIMING_SHARES]
    lines = ["| RL stage | timed steps | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for stage in _rl_stages():
        rows = rl.get(stage, [])
        t = step_time_summary(rows) if rows else None
        if not rows:
            lines.append(f"| {stage} | not run |" + " |" * len(heads))
        elif t is None:
            lines.append(f"| {stage} | no timing in metrics |" + " |" * len(heads))
        else:
            cells = ["-" if t[k] is None else f"{t[k]:.1f}" for k, _ in TIMING_SECONDS]
            cells += ["-" if t[k] is None else f"{100 * t[k]:.0f}%" for k, _ in TIMING_SHARES]
            lines.append(f"| {stage} | {t['steps']} | " + " | ".join(cells) + " |")
    return lines


def _time_sentences(rl: dict[str, list[dict[str, Any]]]) -> list[str]:
    out = []
    for stage, rows in rl.items():
        t = step_time_summary(rows)
        if not t or t["time_step_s"] is None:
            continue
        parts = [f"{stage}: a GRPO step took {t['time_step_s']:.1f} s (median)"]
        if t["overhead_frac"] is not None:
            parts.append(f"{100 * t['overhead_frac']:.0f}% of it overhead (job starts, handoffs, polling)")
        idle = [
            f"the {what} {100 * t[key]:.0f}%"
            for key, what in (("idle_train_frac", "train job"), ("idle_rollout_frac", "rollout tasks"))
            if t[key] is not None
        ]
        if idle:
            parts.append("idle: " + ", ".join(idle))
        out.append("; ".join(parts) + ".")
    return out


def _compute_table(times: dict[str, dict[str, Any]]) -> list[str]:
    if not times:
        return ["No jobs recorded (jobs.jsonl missing or empty)."]
    lines = ["| stage | jobs | tasks | wall time (min) | by kind (min) | source |", "|---|---|---|---|---|---|"]
    for stage, t in times.items():
        kinds = ", ".join(f"{k} {v / 60:.2f}" for k, v in sorted(t["seconds"].items()))
        unknown = f"; {t['unknown']} task(s) without a time" if t["unknown"] else ""
        lines.append(
            f"| {stage} | {t['jobs']} | {t['tasks']} | {sum(t['seconds'].values()) / 60:.2f} | "
            f"{kinds or '-'} | {', '.join(t['sources']) or 'none'}{unknown} |"
        )
    return lines


def _fork_lines(run_dir: Path) -> list[str]:
    """What a fork (r1hpc fork: forked_from.json) took over from its source run, so that nobody
    reads the kept stages' rows as trained with this run's settings or their time as missing."""
    path = run_dir / "forked_from.json"
    if not path.exists():
        return []
    try:
        fork = read_json(path)
        kept, dropped, source = list(fork["kept"]), list(fork["dropped"]), str(fork["source"])
    except (StoreError, KeyError, TypeError) as e:
        return [f"Forked from another run, but {path} is unreadable ({e}).", ""]
    evals = "with their evals" if fork.get("evals_kept", True) else "their evals redone here"
    return [
        f"Forked from `{source}` at {fork.get('from_stage', dropped[0] if dropped else '?')} (r1hpc fork): "
        f"{', '.join(kept)} were made there with its settings and taken over, {evals}; this run "
        f"trained {', '.join(dropped) or 'nothing'}. The compute tables count this run's jobs only.",
        "",
    ]


def build_report(run_dir: str | Path) -> Path:
    """Write runs/<name>/report.md and runs/<name>/plots/*.png; returns the report's path."""
    from r1hpc import plots

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory does not exist")
    rl = {s: rows for s in _rl_stages() if (rows := read_metrics(run_dir, s))}
    sft = {s: rows for s in _sft_stages() if (rows := read_metrics(run_dir, s))}
    summaries, bad = _read_summaries(run_dir)
    times = job_times(run_dir)
    k = next((s["k"] for s in summaries.values()), None)
    pdir = run_dir / "plots"
    plots.plot_rl_curves(rl, pdir / "reward_accuracy.png")
    plots.plot_rl_stages(rl, pdir / "rl_stages.png")
    plots.plot_series(
        rl,
        "response_length_mean",
        "mean response length (tokens)",
        "response length per RL step",
        pdir / "response_length.png",
    )
    plots.plot_series(sft, "loss", "loss", "SFT loss per step", pdir / "sft_loss.png")
    plots.plot_heldout(summaries, k, pdir / "heldout_pass1.png")
    plots.plot_compute(
        {s: t["seconds"] for s, t in times.items()},
        pdir / "compute_time.png",
        {s: t["gpu_seconds"] for s, t in times.items()},
    )
    plots.plot_step_times(rl, pdir / "step_time.png")

    first = next(iter(summaries.values()), {})
    shows = compare_sentences(summaries) + _training_sentences(rl) + _time_sentences(rl) + _compute_sentence(times)
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"Built {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')} from "
        "metrics/, eval/, rollouts/eval-*/, jobs.jsonl and logs/ by `python -m r1hpc.report`.",
        "",
        *_fork_lines(run_dir),
        *story_lines(run_dir, summaries, set(times)),
        "## What this shows",
        "",
    ]
    lines += [f"- {s}" for s in shows] or ["- Nothing evaluated or trained yet."]
    lines += [
        "",
        "## Held-out evaluation",
        "",
        f"Settings: k = {first.get('k', '?')} samples per problem, T = {first.get('temperature', '?')}, "
        f"top-p = {first.get('top_p', '?')}, at most {first.get('max_new_tokens', '?')} new tokens. "
        "pass@1 = mean over problems of (correct samples / k). The interval is a 95% normal "
        "approximation over problems (mean +- 1.96 sd / sqrt(n) of the per-problem pass rates), "
        "which covers both the finite problem set and the k samples per problem; where every "
        "problem scored the same (sd = 0) it is the Wilson interval for n problems. Non-overlapping "
        "intervals mean a difference beyond that noise; overlapping ones do not rule a difference out. "
        "cons@k = majority vote over the extracted answers (samples without one do not vote; ties "
        "score the fraction of tied answers that are correct). Mixed-language rate = share of samples "
        "whose <think> chain of thought has a word outside the prompt's language (script-based, math "
        "and one-letter variables excluded; samples without a chain of thought are not mixed).",
        "",
    ]
    lines += eval_tables(summaries, bad)
    lines += ["", "### General prompts scored by the reward model", ""] + general_table(summaries)
    lines += ["", "### Distillation vs RL on the student", ""] + student_table(summaries)
    lines += ["", "![held-out pass@1](plots/heldout_pass1.png)", "", "## Training", ""]
    lines += _training_table(rl, sft)
    lines += [
        "",
        "![reward and accuracy](plots/reward_accuracy.png)",
        "",
        "![accuracy and length per RL stage](plots/rl_stages.png)",
        "",
        "![response length](plots/response_length.png)",
        "",
        "![SFT loss](plots/sft_loss.png)",
        "",
        "## Where the time goes",
        "",
        "Per GRPO step, the median over the stage's steps: the whole step (from publishing the policy "
        "to publishing the next), generating the rollouts and scoring them (slowest shard), the update, "
        "the train job waiting for the step's rollouts, the rollout tasks reloading the new policy "
        "(slowest shard), publishing it, and the overhead: the step minus the generation, scoring and "
        "training on its critical path (job starts, handoffs, polling). The shares are medians of the "
        "per-step fractions: overhead / step, and the part of the step the train job was not updating "
        "and the rollout tasks were not reloading, generating or scoring. Busy and waiting GPU-hours: "
        "`r1hpc gpu-hours --run-dir <run>`.",
        "",
    ]
    lines += _time_table(rl) + ["", "![time per step](plots/step_time.png)"]
    lines += [
        "",
        "## Compute time",
        "",
        "Wall time of every job and array task, summed per stage (Slurm: sacct ElapsedRaw of every "
        "attempt; local jobs: submitit log timestamps, job body only).",
        "",
    ]
    lines += _compute_table(times) + ["", "![compute time](plots/compute_time.png)", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1hpc.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the run directory, e.g. runs/tiny")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.run_dir)
    except (FileNotFoundError, ValueError, StoreError) as e:
        print(f"r1hpc.report: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
