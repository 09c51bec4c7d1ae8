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

__all__ = ["plot_rl_curves", "plot_series", "plot_heldout", "plot_compute", "plot_step_times"]

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


def plot_series(
    metrics: Mapping[str, Sequence[Mapping[str, Any]]], key: str, ylabel: str, title: str, path: Path
) -> Path:
    """One metric per step, one line per stage (response length, SFT loss, ...)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _lines(ax, metrics, key, ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_heldout(summaries: Mapping[str, Mapping[str, Any]], k: int | None, path: Path) -> Path:
    """Held-out pass@1 per evaluated stage with its 95% interval as error bars (cons@k as dots)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(summaries) + 2), 3.8))
    stages = list(summaries)
    if not stages:
        _no_data(ax, "no eval/<stage>.json")
        return _save(fig, path)
    xs = range(len(stages))
    p = [summaries[s]["pass_at_1"] for s in stages]
    lo = [summaries[s]["pass_at_1"] - summaries[s]["pass_at_1_ci"][0] for s in stages]
    hi = [summaries[s]["pass_at_1_ci"][1] - summaries[s]["pass_at_1"] for s in stages]
    ax.bar(xs, p, color="tab:blue", alpha=0.75, label="pass@1")
    ax.errorbar(xs, p, yerr=[lo, hi], fmt="none", ecolor="black", capsize=4, label="95% interval")
    ax.plot(
        xs, [summaries[s]["cons_at_k"] for s in stages], "D", color="tab:orange", label=f"cons@{k}" if k else "cons@k"
    )
    ax.set_xticks(list(xs), stages, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out score")
    ax.set_title("held-out pass@1 per stage")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_compute(seconds: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Job wall time per stage (summed over jobs and array tasks), stacked by job kind."""
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.4 * len(seconds) + 1.2)))
    stages = [s for s in seconds if sum(seconds[s].values()) > 0]
    if not stages:
        _no_data(ax, "no job times (jobs.jsonl / logs)")
        return _save(fig, path)
    kinds = sorted({k for s in stages for k in seconds[s]})
    left = [0.0] * len(stages)
    for kind in kinds:
        vals = [seconds[s].get(kind, 0.0) / 60 for s in stages]
        ax.barh(range(len(stages)), vals, left=left, label=kind)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(stages)), stages)
    ax.invert_yaxis()
    ax.set_xlabel("job wall time (minutes, summed over jobs and array tasks)")
    ax.set_title("compute time per stage")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
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
