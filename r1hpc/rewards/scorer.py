"""Score a batch of completions with the configured rewards, every call inside the worker pool.

This is the only way the trainer / rollout processes compute rewards: each (completion, reward)
pair is one pool item with its own wall-time limit, so one hostile completion costs at most one
item's time limit for one reward, and the others are unaffected. A reward that timed out, ran
out of memory or raised scores 0 for that item and is counted per reward in ``counts``.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from r1hpc.rewards.combine import combine, validate_weights
from r1hpc.rewards.isolation import DEFAULT_ITEM_TIMEOUT_S, Outcome, WorkerPool

STATUSES = ("ok", "not_applicable", "timeout", "memory", "error")
_MAX_MESSAGES_PER_REWARD = 5


@dataclass
class ScoreResult:
    """Rewards of a batch of N completions.

    values[name]: N floats, None where the reward does not apply; 0.0 where it failed.
    statuses[name]: N of "ok" / "not_applicable" / "timeout" / "memory" / "error".
    totals: N weighted sums (``combine.combine``).
    counts[name][status]: how many items ended with each status.
    messages[name]: the first few failure messages (item index first), for the log.
    """

    weights: dict[str, float]
    values: dict[str, list[float | None]]
    statuses: dict[str, list[str]]
    totals: list[float]
    counts: dict[str, dict[str, int]]
    messages: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_failed(self) -> int:
        """Items x rewards that timed out, ran out of memory or raised."""
        return sum(c["timeout"] + c["memory"] + c["error"] for c in self.counts.values())


def _check_value(value: object) -> tuple[float | None, str]:
    """A reward's return value as float | None, or an error message."""
    if value is None:
        return None, ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return None, f"returned {value!r}; expected a finite number or None"
    return float(value), ""


def score_batch(
    completions: Sequence[str],
    examples: Sequence[dict],
    reward_weights: Mapping[str, float],
    *,
    pool: WorkerPool | None = None,
    reward_funcs: Mapping[str, Callable[[str, dict], float | None]] | None = None,
    progress: bool = True,
    item_timeout_s: float = DEFAULT_ITEM_TIMEOUT_S,
    num_workers: int | None = None,
    timeouts: Mapping[str, float] | None = None,
) -> ScoreResult:
    """Run every reward named in ``reward_weights`` on every (completion, example) in the pool.

    ``pool``: a long-lived ``WorkerPool`` (the trainer keeps one); without it a pool is started
    for this call with ``num_workers`` / ``item_timeout_s`` and closed afterwards.
    ``timeouts``: per-reward wall-time limits in seconds overriding the pool's (the code reward
    runs several sandboxed tests per item and needs more than a math check).
    ``reward_funcs``: the name -> function table; defaults to ``r1hpc.rewards.REWARD_FUNCS``.
    Functions must be module-level (they are sent to workers by name).
    """
    if reward_funcs is None:
        from r1hpc.rewards import REWARD_FUNCS  # late: the package imports every reward module

        reward_funcs = REWARD_FUNCS
    weights = validate_weights(reward_weights, reward_funcs.keys())
    if len(completions) != len(examples):
        raise ValueError(f"score_batch: {len(completions)} completions but {len(examples)} examples")
    for i, (c, e) in enumerate(zip(completions, examples)):
        if not isinstance(c, str):
            raise TypeError(f"score_batch: completions[{i}] is {type(c).__name__}, expected str")
        if not isinstance(e, dict):
            raise TypeError(f"score_batch: examples[{i}] is {type(e).__name__}, expected dict")

    timeouts = dict(timeouts or {})
    for name, t in timeouts.items():
        if name not in weights:
            raise ValueError(f"timeouts.{name}: not one of the configured rewards {sorted(weights)}")
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < float(t) < math.inf:
            raise ValueError(f"timeouts.{name}: expected a positive number of seconds, got {t!r}")
    names = list(weights)
    n = len(completions)
    calls = [
        (reward_funcs[name], (completions[i], examples[i]), timeouts.get(name)) for i in range(n) for name in names
    ]
    values: dict[str, list[float | None]] = {name: [None] * n for name in names}
    statuses: dict[str, list[str]] = {name: ["ok"] * n for name in names}
    messages: dict[str, list[str]] = {name: [] for name in names}

    start = time.monotonic()
    own_pool = pool is None
    if pool is None:
        pool = WorkerPool(num_workers, item_timeout_s=item_timeout_s)
    try:
        with tqdm(total=len(calls), desc="rewards", unit="call", disable=not progress) as bar:
            for k, outcome in pool.imap(calls):
                i, j = divmod(k, len(names))  # calls are item-major: item i, reward names[j]
                _record(names[j], i, outcome, values, statuses, messages)
                bar.update(1)
    finally:
        if own_pool:
            pool.close()

    counts = {name: {s: statuses[name].count(s) for s in STATUSES} for name in names}
    totals = [combine({name: values[name][i] for name in names}, weights) for i in range(n)]
    return ScoreResult(weights, values, statuses, totals, counts, messages, time.monotonic() - start)


def _record(
    name: str,
    i: int,
    outcome: Outcome,
    values: dict[str, list[float | None]],
    statuses: dict[str, list[str]],
    messages: dict[str, list[str]],
) -> None:
    status, message = outcome.status, outcome.message
    value: float | None = None
    if status == "ok":
        value, message = _check_value(outcome.value)
        if message:
            status = "error"
        elif value is None:
            status = "not_applicable"
    if status in ("timeout", "memory", "error"):
        value = 0.0  # a failed reward scores 0 (and is counted), it never gets "not applicable"
        if len(messages[name]) < _MAX_MESSAGES_PER_REWARD:
            messages[name].append(f"item {i}: {status}: {message}")
    values[name][i] = value
    statuses[name][i] = status
