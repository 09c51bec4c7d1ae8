"""Batch filters from DAPO (Yu et al. 2025).

- Dynamic sampling: a group whose G rewards are all equal has advantage 0 for every member, so it
  adds nothing to the policy gradient but still dilutes the batch; DAPO drops such groups (and
  samples more prompts until the batch is full: that loop is the caller's).

DAPO's overlong reward shaping is a reward, ``r1hpc.rewards.length``.
"""

from __future__ import annotations

import torch

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
