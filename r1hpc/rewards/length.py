"""DAPO's soft overlong punishment.

With L = the completion's length, L_max = ``example["max_length"]`` and
L_cache = ``example["overlong_cache"]``:

    0                                   if L <= L_max - L_cache
    ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max    (linear from 0 to -1)
    -1                                  if L > L_max

Units: if ``example["completion_tokens"]`` (an int, set by the rollout, which knows the tokenizer)
is present, L is that token count and ``max_length`` / ``overlong_cache`` are in tokens; otherwise
L is ``len(completion)`` in characters and both limits are in characters. The two are never mixed.
An example without ``max_length`` is not subject to this reward: None.
"""

from __future__ import annotations


def _int_field(example: dict, key: str, minimum: int) -> int:
    value = example[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"example[{key!r}] must be an int >= {minimum}, got {value!r}")
    return value


def overlong_penalty(completion: str, example: dict) -> float | None:
    """Penalty in [-1, 0] for completions that run into the last ``overlong_cache`` units of
    ``max_length`` (see module doc); None when the example has no ``max_length``."""
    if "max_length" not in example:
        return None
    l_max = _int_field(example, "max_length", 1)
    if "overlong_cache" not in example:
        raise ValueError(
            "example has 'max_length' but no 'overlong_cache' (the soft-penalty window, same unit as max_length)"
        )
    l_cache = _int_field(example, "overlong_cache", 0)
    if l_cache > l_max:
        raise ValueError(f"example['overlong_cache'] = {l_cache} exceeds example['max_length'] = {l_max}")
    length = _int_field(example, "completion_tokens", 0) if "completion_tokens" in example else len(completion)
    if length > l_max:
        return -1.0
    free = l_max - l_cache
    if length <= free:
        return 0.0
    return (free - length) / l_cache  # l_cache > 0 here, since free < length <= l_max
