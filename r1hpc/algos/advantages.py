"""Group-relative advantages (GRPO, DeepSeekMath / DeepSeek-R1) from one scalar reward per output.

For the G outputs o_1..o_G sampled for one prompt, every token of o_i gets
``A_i = (r_i - mean(r)) / (std(r) + eps)`` with the unbiased std (n - 1) and eps = 1e-6, as in
verl's ``compute_grpo_outcome_advantage``. With ``scale_by_std=False`` (Dr. GRPO) ``A_i = r_i - mean(r)``.

A group of size 1 gets mean 0 and std 1 (verl's rule), so its advantage is the raw reward
(divided by 1 + eps when scaling by std). A lone sample has no baseline to compare against; keeping
the raw reward matches verl, and dynamic sampling (``filters.dynamic_sampling_mask``) drops such
groups anyway. A group whose rewards are all equal gets advantage 0 for every member.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from r1hpc.algos._checks import as_bool_mask, check_float, check_int


class GroupStats(NamedTuple):
    """Per-group reward statistics; G = number of distinct group ids, in ascending id order."""

    ids: torch.Tensor  # (G,) the distinct group ids
    index: torch.Tensor  # (B,) position of each sample's group in ``ids``
    count: torch.Tensor  # (G,) samples per group
    mean: torch.Tensor  # (G,) mean reward
    std: torch.Tensor  # (G,) unbiased std of the reward (0 for a group of one)
    min: torch.Tensor  # (G,)
    max: torch.Tensor  # (G,)


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> GroupStats:
    """Mean / unbiased std / min / max of the rewards of each group.

    Args:
        rewards: (B,) float, one scalar reward per output; finite.
        group_ids: (B,) int, the prompt (group) index of each output; groups need not be
            contiguous or numbered from 0.

    Returns:
        GroupStats with (G,) tensors, and ``index`` (B,) mapping samples to groups.
    """
    check_float("rewards", rewards, ndim=1)
    check_int("group_ids", group_ids, ndim=1)
    if rewards.shape != group_ids.shape:
        raise ValueError(f"shape mismatch: rewards {tuple(rewards.shape)}, group_ids {tuple(group_ids.shape)}")
    if rewards.numel() == 0:
        raise ValueError("rewards is empty; expected at least one sample")
    if group_ids.device != rewards.device:
        raise ValueError(f"group_ids is on {group_ids.device} but rewards on {rewards.device}")
    r = rewards.detach().to(torch.float64)  # rewards are data, not parameters; fp64 keeps std exact
    ids, index, count = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n_groups = ids.numel()
    zeros = torch.zeros(n_groups, dtype=r.dtype, device=r.device)
    mean = zeros.index_add(0, index, r) / count
    # Two-pass variance: subtract the group mean first, which avoids cancellation.
    sq = zeros.index_add(0, index, (r - mean[index]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    gmin = zeros.scatter_reduce(0, index, r, reduce="amin", include_self=False)
    gmax = zeros.scatter_reduce(0, index, r, reduce="amax", include_self=False)
    return GroupStats(ids, index, count, mean, std, gmin, gmax)


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO outcome advantages, one per output.

    Args:
        rewards: (B,) float, one scalar reward per output.
        group_ids: (B,) int group (prompt) index per output; any order, any ids.
        scale_by_std: divide by (std + eps) as in GRPO; False gives Dr. GRPO's mean-only baseline.
        eps: added to the std before dividing (verl: 1e-6).

    Returns:
        (B,) advantages in the dtype of ``rewards`` (no grad).
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    st = group_stats(rewards, group_ids)
    single = st.count == 1
    mean = torch.where(single, torch.zeros_like(st.mean), st.mean)
    std = torch.where(single, torch.ones_like(st.std), st.std)
    adv = rewards.detach().to(torch.float64) - mean[st.index]
    if scale_by_std:
        adv = adv / (std[st.index] + eps)
    return adv.to(rewards.dtype)


def token_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Broadcast per-output advantages to every response token.

    Args:
        advantages: (B,) float.
        mask: (B, T) response mask (bool or 0/1).

    Returns:
        (B, T) with ``advantages[i]`` at response tokens of row i and 0 elsewhere.
    """
    check_float("advantages", advantages, ndim=1)
    if mask.dim() != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"shape mismatch: advantages {tuple(advantages.shape)}, mask {tuple(mask.shape)}; expected (B,) and (B, T)"
        )
    m = as_bool_mask("mask", mask)
    return torch.where(m, advantages[:, None], torch.zeros((), dtype=advantages.dtype, device=advantages.device))
