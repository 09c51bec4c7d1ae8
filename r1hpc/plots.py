"""The run report's figures (matplotlib, Agg backend: no display needed on a compute node).

Every function writes one PNG and returns its path; with nothing to draw it still writes a
figure saying so, so the report's image links never dangle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "plot_rl_curves",
    "plot_rl_stages",
    "plot_series",
    "plot_heldout",
    "plot_paired_intervals",
    "plot_compute",
    "plot_step_times",
]

_DPI = 110


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)  # a reader never sees a half-written image
    return path


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no data yet: {what}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _lines(ax: Any, metrics: Mapping[str, Sequence[Mapping[str, Any]]], key: str, ylabel: str) -> bool:
    drawn = False
    for stage, rows in metrics.items():
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r.get("step") is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=stage)
            drawn = True
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if drawn:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, key)
    return drawn


def plot_rl_curves(metrics: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Reward (weighted total) and math accuracy per GRPO step, one line per RL stage."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    _lines(axes[0], metrics, "reward_mean", "mean reward")
    _lines(axes[1], metrics, "reward_accuracy_math", "accuracy reward (train prompts)")
    axes[0].set_title("reward per step")
    axes[1].set_title("accuracy per step")
    return _save(fig, path)


def plot_rl_stages(metrics: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """R1's figures 2 and 3 per RL stage: accuracy (train prompts) over response length per step,
    one column per stage, so each stage reads on its own scale."""
    stages = [s for s, rows in metrics.items() if rows]
    cols = max(1, len(stages))
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 6.5), squeeze=False, constrained_layout=True)
    if not stages:
        _no_data(axes[0][0], "no RL metrics")
        _no_data(axes[1][0], "no RL metrics")
        return _save(fig, path)
    for col, stage in enumerate(stages):
        _lines(axes[0][col], {stage: metrics[stage]}, "reward_accuracy_math", "accuracy (train prompts)")
        _lines(axes[1][col], {stage: metrics[stage]}, "response_length_mean", "response length (tokens)")
        axes[0][col].set_title(f"{stage}: accuracy")
        axes[1][col].set_title(f"{stage}: response length")
        for ax in (axes[0][col], axes[1][col]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_series(
    metrics: Mapping[str, Sequence[Mapping[str, Any]]], key: str, ylabel: str, title: str, path: Path
) -> Path:
    """One metric per step, one line per stage (response length, SFT loss, ...)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _lines(ax, metrics, key, ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_heldout(summaries: Mapping[str, Mapping[str, Any]], k: int | None, path: Path) -> Path:
    """Held-out pass@1 per evaluated stage as a point with its 95% interval (cons@k as open diamonds)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(summaries) + 2), 3.8))
    stages = list(summaries)
    if not stages:
        _no_data(ax, "no eval/<stage>.json")
        return _save(fig, path)
    xs = list(range(len(stages)))
    p = [summaries[s]["pass_at_1"] for s in stages]
    lo = [summaries[s]["pass_at_1"] - summaries[s]["pass_at_1_ci"][0] for s in stages]
    hi = [summaries[s]["pass_at_1_ci"][1] - summaries[s]["pass_at_1"] for s in stages]
    # points, not bars: a bar draws the eye to its area from 0, the interval is what matters
    ax.errorbar(
        xs, p, yerr=[lo, hi], fmt="o", color="tab:blue", ecolor="black", capsize=4, label="pass@1, 95% interval"
    )
    ax.plot(
        [x + 0.2 for x in xs],
        [summaries[s]["cons_at_k"] for s in stages],
        "D",
        color="tab:orange",
        markerfacecolor="none",
        label=f"cons@{k}" if k else "cons@k",
    )
    ax.set_xticks(xs, stages, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out score")
    ax.set_title("held-out pass@1 per stage")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


_VERDICT_COLORS = {"shown": "tab:green", "contradicted": "tab:red"}  # anything else: grey


def plot_paired_intervals(rows: Sequence[tuple[str, float, float, float, str]], path: Path) -> Path:
    """The report's story as one forest plot: per claim (label, mean, lo, hi, verdict) the paired
    difference with its 95% interval, coloured by verdict, against a line at 0. Rates (pass@1,
    format) share the axis as they are; a row in other units (tokens) is scaled to fit it."""
    fig, ax = plt.subplots(figsize=(7.5, max(2.0, 0.45 * len(rows) + 1.2)))
    if not rows:
        _no_data(ax, "no paired differences (fewer than two evaluated stages)")
        return _save(fig, path)
    # a token row would flatten the rate rows: shrink any row whose ends pass +-1 to fit the axis
    for y, (_label, mean, lo, hi, verdict) in enumerate(rows):
        scale = max(1.0, abs(lo), abs(hi))
        color = _VERDICT_COLORS.get(verdict, "0.5")
        ax.errorbar(
            [mean / scale], [y], xerr=[[(mean - lo) / scale], [(hi - mean) / scale]], fmt="o", color=color, capsize=4
        )
        ax.annotate(f"{mean:+.3g} [{lo:+.3g}, {hi:+.3g}]", (1.05, y), va="center", fontsize=7, color=color)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-1.1, 1.9)
    ax.set_xticks([-1, -0.5, 0, 0.5, 1])
    ax.set_xlabel("paired difference (rows in tokens scaled to fit); green: shown, red: contradicted, grey: not shown")
    ax.set_title("the paper's claims in this run: paired 95% intervals")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _stacked(ax: Any, values: Mapping[str, Mapping[str, float]], stages: list[str], scale: float) -> None:
    kinds = sorted({k for s in stages for k in values.get(s, {})})
    left = [0.0] * len(stages)
    for kind in kinds:
        vals = [values.get(s, {}).get(kind, 0.0) / scale for s in stages]
        ax.barh(range(len(stages)), vals, left=left, label=kind)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(stages)), stages)
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def plot_compute(
    seconds: Mapping[str, Mapping[str, float]],
    path: Path,
    gpu_seconds: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Job wall time per stage (summed over jobs and array tasks), stacked by job kind; with
    gpu_seconds (from sacct's AllocTRES), a second panel of GPU-hours per stage."""
    gpu = {s: v for s, v in (gpu_seconds or {}).items() if sum(v.values()) > 0}
    stages = [s for s in seconds if sum(seconds[s].values()) > 0]
    fig, axes = plt.subplots(
        1, 2 if gpu else 1, figsize=(7 * (2 if gpu else 1), max(2.5, 0.4 * len(seconds) + 1.2)), squeeze=False
    )
    ax = axes[0][0]
    if not stages:
        _no_data(ax, "no job times (jobs.jsonl / logs)")
        return _save(fig, path)
    _stacked(ax, seconds, stages, 60)
    ax.set_xlabel("job wall time (minutes, summed over jobs and array tasks)")
    ax.set_title("compute time per stage")
    if gpu:
        _stacked(axes[0][1], gpu, stages, 3600)
        axes[0][1].set_xlabel("GPU-hours (sacct: elapsed x allocated GPUs)")
        axes[0][1].set_title("GPU-hours per stage")
    return _save(fig, path)


_PHASES = (
    ("time_step_s", "whole step"),
    ("time_rollout_s", "rollout"),
    ("time_score_s", "scoring"),
    ("time_train_s", "training"),
    ("time_wait_s", "train job waiting"),
    ("time_handoff_s", "overhead"),
)


def plot_step_times(metrics: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Seconds per GRPO step by phase (whole step, rollout, scoring, training, waiting, overhead),
    one panel per RL stage that logged timing."""
    timed = {
        stage: rows
        for stage, rows in metrics.items()
        if any(isinstance(r.get(k), (int, float)) for r in rows for k, _ in _PHASES)
    }
    fig, axes = plt.subplots(1, max(1, len(timed)), figsize=(5.5 * max(1, len(timed)), 3.6), squeeze=False)
    if not timed:
        _no_data(axes[0][0], "no per-step timing in metrics/")
        return _save(fig, path)
    for ax, (stage, rows) in zip(axes[0], timed.items()):
        for key, label in _PHASES:
            pts = [
                (r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r.get("step") is not None
            ]
            if pts:
                style = {"color": "black", "linewidth": 2} if key == "time_step_s" else {}
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label, **style)
        ax.set_xlabel("step")
        ax.set_ylabel("seconds")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{stage}: time per step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)
