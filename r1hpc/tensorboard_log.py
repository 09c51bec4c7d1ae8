"""Scalar metrics as TensorBoard event files: runs/<name>/tensorboard/<stage>/events.out.tfevents.*

    with TBWriter(run_dir, "r1_zero") as tb:
        tb.log(step, {"reward_mean": 0.4, "kl": 0.01, "time": 1795433957.2})

    log_scalars(run_dir, "sft", record)   # from a metrics logger: one cached writer per process

One subdirectory per stage, so TensorBoard shows each stage as a run and overlays the same tag
(reward_mean, loss, ...) of different stages on one chart. Numeric values are logged (nested
dicts become "a/b" tags); `step` and `time` are not tags (time becomes the event's wall time);
strings, None, NaN and infinities are skipped.

Reruns: a requeued job repeats steps. Each writer opens its own event file with a "session
start" marker at the first step it logs (SummaryWriter's purge_step), which tells TensorBoard to
drop the events of that step and later ones from earlier files: a rerun step replaces the old
one. TensorBoard orders files by name, whose first field is the creation second, so a writer
that would share its second with an existing file waits for the next second (only ever on a
rerun within the same second). `read_scalars` applies the same rule and keeps the last value
per step.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TBWriter", "log_scalars", "tensorboard_dir", "scalars_of", "read_scalars"]

_EVENT_FILE = re.compile(r"^events\.out\.tfevents\.(\d+)\.")
_NOT_TAGS = ("step", "time")


def tensorboard_dir(run_dir: str | Path, stage: str) -> Path:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", stage):
        raise ValueError(f"invalid stage name {stage!r}: expected letters, digits, '_', '-', '.'")
    return Path(run_dir) / "tensorboard" / stage


def scalars_of(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numeric values of a metrics record as {tag: value} (nested dicts: 'a/b')."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if not prefix and key in _NOT_TAGS:
            continue
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalars_of(value, f"{tag}/"))
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[tag] = float(value)  # bools count as 0/1
    return out


def _wait_for_fresh_second(log_dir: Path) -> None:
    """Sleep into the next second if an event file was already created in this one (see doc)."""
    if not log_dir.is_dir():
        return
    seconds = {int(m.group(1)) for name in os.listdir(log_dir) if (m := _EVENT_FILE.match(name))}
    while int(time.time()) in seconds:
        time.sleep(1.001 - time.time() % 1)


class TBWriter:
    """Writes scalars of one stage of one run. Opens its event file on the first `log` call."""

    def __init__(self, run_dir: str | Path, stage: str) -> None:
        self.log_dir = tensorboard_dir(run_dir, stage)
        self._writer: Any = None

    def log(self, step: int, record: Mapping[str, Any]) -> int:
        """Write every scalar of `record` at `step` and flush; returns how many were written."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"TBWriter.log: step must be an int >= 0, got {step!r}")
        scalars = scalars_of(record)
        wall = record.get("time")
        wall = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else time.time()
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # late: pulls in tensorboard's protos

            self.log_dir.mkdir(parents=True, exist_ok=True)
            _wait_for_fresh_second(self.log_dir)
            self._writer = SummaryWriter(str(self.log_dir), purge_step=step, flush_secs=30)
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=step, walltime=wall)
        self._writer.flush()
        return len(scalars)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TBWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WRITERS: dict[tuple[str, str], TBWriter] = {}


def log_scalars(run_dir: str | Path, stage: str, record: Mapping[str, Any]) -> int:
    """TBWriter.log(record["step"], record) through one writer per (run, stage) in this process,
    so that a job logging many steps writes one event file (each new writer opens a new file)."""
    step = record.get("step")
    if step is None:
        raise ValueError(f"log_scalars({stage!r}): the record has no 'step' (keys: {sorted(record)})")
    key = (str(Path(run_dir).resolve()), stage)
    if key not in _WRITERS:
        _WRITERS[key] = TBWriter(run_dir, stage)
    return _WRITERS[key].log(step, record)


def read_scalars(run_dir: str | Path, stage: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} in step order, the last value written for each step wins
    (after TensorBoard's purge of steps that a later writer restarted from)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tensorboard_dir(run_dir, stage)
    if not log_dir.is_dir():
        return {}
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0 = keep every event
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        last: dict[int, float] = {}
        for event in acc.Scalars(tag):
            last[event.step] = event.value
        out[tag] = sorted(last.items())
    return out
