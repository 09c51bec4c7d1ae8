"""Showing a run's view (r1hpc.live): render_view() (the block `r1hpc run` redraws in place on a
terminal and `r1hpc status` prints), EventLog (one line per event without a terminal, never the
same line twice), results_lines() (held-out pass@1 per evaluated stage, as in report.md) and
LiveDisplay, which polls the view every ~2 s from a thread while `r1hpc run` submits and waits.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from r1hpc import recipe
from r1hpc.fsio import StoreError, read_json
from r1hpc.live import (
    DONE,
    FAILED,
    RUNNING,
    STOPPED,
    WAITING,
    RunView,
    StageView,
    duration,
    is_number,
    last_step_figures,
    run_view,
)

__all__ = ["render_view", "results_lines", "EventLog", "LiveDisplay", "header"]

# ---------------------------------------------------------------- rendering


def _about(seconds: float) -> str:
    """A rough time: "under a minute", "about 6m", "about 1h20m"."""
    if seconds < 60:
        return "under a minute"
    minutes = int(round(seconds / 60))
    return f"about {minutes}m" if minutes < 60 else f"about {minutes // 60}h{minutes % 60:02d}m"


def _left_text(view: RunView) -> str:
    if view.finished:
        return "finished"
    if view.left_s is None:
        if any(s.state == FAILED for s in view.stages):
            return "a job failed"
        if any(s.state == STOPPED for s in view.stages):
            return "stopped"
        return "time left: estimating"
    return f"{_about(view.left_s)} left"


def _bar(done: int, planned: int, width: int = 10) -> str:
    filled = 0 if planned <= 0 else min(width, int(width * done / planned))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def header(view: RunView) -> str:
    """ "tiny: 4m12s elapsed, about 6m left  (runs/tiny)"."""
    if view.finished:
        return f"{view.name}: finished, {duration(view.elapsed_s)}  ({view.run_dir})"
    return f"{view.name}: {duration(view.elapsed_s)} elapsed, {_left_text(view)}  ({view.run_dir})"


def render_view(view: RunView, width: int | None = None) -> list[str]:
    """The block of lines `r1hpc run` redraws and `r1hpc status` prints (lines cut to `width`)."""
    lines = [header(view)]
    pad = max((len(s.name) for s in view.stages), default=8)
    for s in view.stages:
        detail = s.detail
        if s.kind == "grpo" and s.state in (RUNNING, STOPPED) and s.steps_planned:
            detail = f"{_bar(s.steps_done or 0, s.steps_planned)} {detail}"
        lines.append(f"  {s.state:<8} {s.name:<{pad}}  {detail}".rstrip())
    if view.not_in_run:
        lines.append(f"  (not in this run: {', '.join(view.not_in_run)})")
    if any(s.state == STOPPED for s in view.stages):
        lines.append("  nothing of this run runs any more: run the same `r1hpc run` command again to continue")
    if view.submitter:
        who = view.submitter
        lines.append(
            f"  `{who.get('owner') or 'r1hpc run'}` (pid {who.get('pid')} on {who.get('host')}) is waiting on it"
        )
    if width:
        lines = [line if len(line) <= width else line[: max(1, width - 1)] + "~" for line in lines]
    return lines


def _read_summaries(run_dir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for stage in recipe.evaluated():
        try:
            s = read_json(run_dir / "eval" / f"{stage}.json")
        except StoreError:
            continue
        if isinstance(s, dict) and is_number(s.get("pass_at_1")) and len(s.get("pass_at_1_ci") or []) == 2:
            found[stage] = s
    return found


def results_lines(run_dir: str | Path) -> list[str]:
    """Held-out pass@1 with its 95% interval per evaluated stage (the eval summaries report.md is
    built from), with the change from the model it starts from; [] before any summary exists."""
    summaries = _read_summaries(Path(run_dir))
    if not summaries:
        return []
    first = next(iter(summaries.values()))
    k, problems = first.get("k", "?"), first.get("problems", "?")
    pad = max(len(s) for s in summaries)
    lines = [
        f"held-out results ({problems} problems x k={k} samples): pass@1 [95% interval], cons@{k}, format rate",
    ]
    for stage, s in summaries.items():
        lo, hi = s["pass_at_1_ci"]
        row = f"  {stage:<{pad}}  {s['pass_at_1']:.3f} [{lo:.3f}, {hi:.3f}]"
        if is_number(s.get("cons_at_k")):
            row += f"  cons {s['cons_at_k']:.3f}"
        if is_number(s.get("format_rate")):
            row += f"  format {s['format_rate']:.2f}"
        before = recipe.stage(stage).init_from
        if before in summaries:
            row += f"  ({s['pass_at_1'] - summaries[before]['pass_at_1']:+.3f} vs {before})"
        lines.append(row)
    return lines


class EventLog:
    """One line per event, for a log (no terminal): update(view) returns the lines of what
    happened since the last view, each at most once. The first view reports what is already done or
    running (a resumed run) in one line per stage, not every past step."""

    def __init__(self) -> None:
        self.seen: set[tuple[Any, ...]] = set()
        self.first = True

    def _once(self, key: tuple[Any, ...], line: str, out: list[str]) -> None:
        if key not in self.seen:
            self.seen.add(key)
            out.append(line)

    def update(self, view: RunView) -> list[str]:
        out: list[str] = []
        stamp = f"[{duration(view.elapsed_s)}]"
        left = "" if view.left_s is None or view.finished else f" ({_left_text(view)})"
        first = self.first
        self.first = False
        for s in view.stages:
            news = [*self._steps(s, stamp, left, first), *self._evals(s, stamp, first)]
            if s.state == WAITING:
                out += news
                continue
            if first:  # what a resumed run already did: one line per stage
                self.seen |= {(s.name, RUNNING), (s.name, s.state)}
                past = {DONE: "done earlier", RUNNING: "running", FAILED: "FAILED", STOPPED: "stopped"}[s.state]
                out.append(f"{stamp} {s.name}: {past}" + (f" ({s.detail})" if s.detail else ""))
                continue
            if s.state != RUNNING or (s.name, DONE) not in self.seen:
                # started before its steps; done, failed or stopped after them
                self._once((s.name, RUNNING), f"{stamp} {s.name}: started", out)
            out += news
            if s.state != RUNNING:
                what = {DONE: "done", FAILED: "FAILED", STOPPED: "stopped"}[s.state]
                detail = (f" ({s.detail})" if s.state == DONE else f": {s.detail}") if s.detail else ""
                self._once(
                    (s.name, s.state), f"{stamp} {s.name}: {what}{detail}" + (left if s.state == DONE else ""), out
                )
        return out

    def _steps(self, s: StageView, stamp: str, left: str, first: bool) -> list[str]:
        out: list[str] = []
        for row in s.step_rows:
            key = ("step", s.name, row["step"])
            if first:
                self.seen.add(key)
                continue
            f = last_step_figures(row)
            figures = [
                text
                for name, text in (
                    ("reward", f"reward {f.get('reward', 0.0):.3f}"),
                    ("accuracy", f"accuracy {f.get('accuracy', 0.0):.2f}"),
                    ("length", f"response {f.get('length', 0.0):.0f} tokens"),
                )
                if name in f
            ]
            planned = "?" if s.steps_planned is None else s.steps_planned
            line = f"{stamp} {s.name}: step {row['step'] + 1}/{planned} done" + (
                ": " + ", ".join(figures) if figures else ""
            )
            self._once(key, line + left, out)
        return out

    def _evals(self, s: StageView, stamp: str, first: bool) -> list[str]:
        out: list[str] = []
        for m in s.evaluated:
            if first:
                self.seen.add(("eval", m))
                continue
            self._once(
                ("eval", m), f"{stamp} eval: {m} evaluated ({len(s.evaluated)}/{len(s.to_evaluate)} models)", out
            )
        return out


# ---------------------------------------------------------------- the live display of `r1hpc run`


class LiveDisplay:
    """Polls run_view() every `interval_s` from a thread while `r1hpc run` submits and waits.

    mode "live": one block redrawn in place (ANSI: cursor up, clear to the end of the screen;
    no curses); "log": EventLog lines; "off": nothing; "auto": live on a terminal (out.isatty()
    and TERM is not "dumb"), else log. message() prints a line above the block."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        stages: Sequence[str] | None = None,
        cfg: Any = None,
        mode: str = "auto",
        out: IO[str] | None = None,
        interval_s: float = 2.0,
        since: float | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.stages = stages
        self.cfg = cfg
        self.out = out if out is not None else sys.stdout
        if mode == "auto":
            tty = getattr(self.out, "isatty", lambda: False)()
            mode = "live" if tty and os.environ.get("TERM", "") != "dumb" else "log"
        if mode not in ("live", "log", "off"):
            raise ValueError(f"progress mode must be auto, live, log or off, got {mode!r}")
        self.mode = mode
        self.interval_s = interval_s
        self.since = since
        self.events = EventLog()
        self.view: RunView | None = None
        self._drawn = 0  # lines of the block now on the screen
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns

    def poll(self, live: bool = True) -> None:
        """Read the run directory once and draw (or log) what changed."""
        if self.mode == "off":
            return
        try:
            view = run_view(self.run_dir, stages=self.stages, cfg=self.cfg, since=self.since, live=live)
        except Exception:  # a file caught mid-write: the next poll reads it whole
            return
        with self._lock:
            self.view = view
            if self.mode == "live":
                self._redraw(render_view(view, self._width()))
            else:
                for line in self.events.update(view):
                    self.out.write(line + "\n")
            self.out.flush()

    def _redraw(self, lines: list[str]) -> None:
        up = f"\r\x1b[{self._drawn}A" if self._drawn else "\r"
        self.out.write(up + "\x1b[J" + "".join(line + "\n" for line in lines))
        self._drawn = len(lines)

    def message(self, text: str) -> None:
        """Print a line; on a terminal above the block (the block is drawn again below it)."""
        with self._lock:
            if self.mode == "live" and self._drawn:
                self.out.write(f"\r\x1b[{self._drawn}A\x1b[J")
                self._drawn = 0
            self.out.write(text + "\n")
            self.out.flush()
        if self.mode == "live" and self.view is not None:
            with self._lock:
                self._redraw(render_view(self.view, self._width()))
                self.out.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> LiveDisplay:
        if self.mode != "off" and self._thread is None:
            self.poll()
            self._thread = threading.Thread(target=self._loop, name="r1hpc-live", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and draw the final view (the block stays on the screen)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.poll()

    def __enter__(self) -> LiveDisplay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def finish(self) -> None:
        """After a successful run: the held-out results table (results_lines), if any."""
        lines = results_lines(self.run_dir) if self.mode != "off" else []
        with self._lock:
            for line in [""] + lines if lines else []:
                self.out.write(line + "\n")
            self.out.flush()
