"""Batch filters and reward shaping from DAPO (Yu et al. 2025).

- Dynamic sampling: a group whose G rewards are all equal has advantage 0 for every member, so it
  adds nothing to the policy gradient but still dilutes the batch; DAPO drops such groups (and
  samples more prompts until the batch is full: that loop is the caller's).
- Overlong reward shaping: a soft length penalty in the last ``cache`` tokens before the maximum,
  so that truncated answers are not punished as abruptly as wrong ones.
"""

from __future__ import annotations

import torch

from r1hpc.algos._checks import check_int, check_positive_int
from r1hpc.algos.advantages import group_stats


def dynamic_sampling_mask(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Keep-mask that drops every group whose rewards are all equal (all-correct or all-wrong).

    A group of size 1 counts as all-equal and is dropped (its std is 0 in DAPO's terms).

    Args:
        rewards: (B,) float, one reward per output.
        group_ids: (B,) int group index per output (any order).

    Returns:
        (B,) bool, True for outputs whose group has at least two different rewards.
    """
    st = group_stats(rewards, group_ids)
    keep_group = st.max > st.min
    return keep_group[st.index]


def overlong_penalty(
    lengths: torch.Tensor,
    max_length: int,
    cache: int,
    factor: float = 1.0,
) -> torch.Tensor:
    """DAPO's soft overlong punishment, to be ADDED to the rewards.

    With L_max = ``max_length`` and L_cache = ``cache``::

        0                                   if L <= L_max - L_cache
        factor * (L_max - L_cache - L) / L_cache   if L_max - L_cache < L <= L_max   (0 down to -factor)
        -factor                             if L > L_max

    Args:
        lengths: (B,) int, response lengths in tokens.
        max_length: L_max, the maximum response length.
        cache: L_cache, the length of the penalty ramp; 1 <= cache <= max_length.
        factor: the penalty at (and beyond) L_max; verl's ``overlong_penalty_factor``.

    Returns:
        (B,) float32 penalty in [-factor, 0].
    """
    check_int("lengths", lengths, ndim=1)
    check_positive_int("max_length", max_length)
    check_positive_int("cache", cache)
    if cache > max_length:
        raise ValueError(f"cache ({cache}) must be <= max_length ({max_length})")
    if not factor >= 0.0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    if bool((lengths < 0).any()):
        raise ValueError("lengths must be >= 0")
    expected = max_length - cache
    over = (lengths - expected).to(torch.float32)
    return -(over / cache).clamp(min=0.0, max=1.0) * factor
