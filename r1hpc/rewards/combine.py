"""Weighted combination of per-reward values, configured from a plain dict (e.g. from YAML).

``reward_weights: {accuracy_math: 1.0, format: 0.5}`` means: compute these rewards, and the
scalar reward of a completion is ``sum(weight * value)``. A reward that is not applicable to an
example (the function returned None, e.g. the code reward on a math prompt) contributes 0, as
does a reward whose computation timed out or failed (those are counted by the scorer). A weight
of 0 keeps a reward computed and logged without letting it steer training.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any


def validate_weights(weights: Any, valid_names: Iterable[str], where: str = "reward_weights") -> dict[str, float]:
    """Check a ``{reward name: weight}`` dict; return it with float weights.

    Errors name the offending key (prefixed by ``where``, e.g. the config path) and, for an
    unknown name, suggest the closest valid one.
    """
    valid = sorted(valid_names)
    if not isinstance(weights, Mapping):
        raise ValueError(f"{where}: expected a mapping of reward name to weight, got {type(weights).__name__}")
    if not weights:
        raise ValueError(f"{where}: no rewards configured; valid names are {', '.join(valid)}")
    out: dict[str, float] = {}
    for name, w in weights.items():
        if not isinstance(name, str) or name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}.{name}: unknown reward {name!r}{hint} (valid: {', '.join(valid)})")
        # bool is a numbers.Real subclass; `accuracy_math: true` is a config mistake, not weight 1.
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
            raise ValueError(f"{where}.{name}: weight must be a finite number, got {w!r}")
        out[name] = float(w)
    return out


def combine(values: Mapping[str, float | None], weights: Mapping[str, float]) -> float:
    """``sum(weights[k] * values[k])`` over the weighted rewards; None (not applicable) counts 0.

    Every weighted reward must be present in ``values`` (a missing one is a scorer bug).
    """
    total = 0.0
    for name, w in weights.items():
        if name not in values:
            raise KeyError(f"combine: no value for weighted reward {name!r} (have {sorted(values)})")
        v = values[name]
        if v is not None:
            total += w * float(v)
    return total
