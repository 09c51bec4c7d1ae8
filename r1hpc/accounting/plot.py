"""Stacked bar chart of GPU-hours per day, one colour per value of a group key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from r1hpc.accounting.report import group
from r1hpc.accounting.usage import JobUsage


def plot_daily(usages: Sequence[JobUsage], key: str | None, path: Path, title: str = "") -> None:
    """Write a PNG: x = day, bars stacked by ``key`` (None: one series)."""
    import matplotlib  # only for --plot: ~0.5 s of start-up every other gpu-hours run would pay

    matplotlib.use("Agg")  # no display on login/compute nodes
    import matplotlib.pyplot as plt  # after use("Agg"), which must precede it

    keys = ["day"] if key is None else ["day", key]
    rows = group(usages, keys)
    days = sorted({g.keys["day"] for g in rows})
    series = sorted({g.keys.get(key, "all") if key else "all" for g in rows})
    hours = {(g.keys["day"], g.keys.get(key, "all") if key else "all"): g.gpu_seconds / 3600 for g in rows}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(days) + 3), 4.5))
    bottom = [0.0] * len(days)
    for s in series:
        vals = [hours.get((d, s), 0.0) for d in days]
        ax.bar(days, vals, bottom=bottom, label=s)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("GPU-hours")
    ax.set_xlabel("day")
    ax.set_title(title or f"GPU-hours per day{'' if key is None else f' by {key}'}")
    if key is not None and series:
        ax.legend(title=key, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
