"""Per-step training metrics that are not by-products of the loss (those come from ``grpo_loss``).

All scalars are returned as detached 0-dim tensors (no host sync until the caller logs them);
per-group values as (G,) tensors ordered by ascending group id.
"""

from __future__ import annotations

import torch

from r1hpc.algos._checks import as_bool_mask, check_same_shape
from r1hpc.algos.advantages import group_stats
from r1hpc.algos.aggregation import masked_mean
from r1hpc.algos.kl import kl_per_token


def approx_kl(logp_new: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean k3 estimate of KL between the sampling policy and the current one.

    Args:
        logp_new: (B, T) log-probs under the current policy.
        logp_old: (B, T) log-probs under the sampling policy.
        mask: (B, T) response mask.

    Returns:
        () masked token mean of ``exp(old - new) - (old - new) - 1`` (clamped as in ``kl``).
    """
    check_same_shape(logp_new=logp_new, logp_old=logp_old, mask=mask)
    m = as_bool_mask("mask", mask)
    return masked_mean(kl_per_token(logp_new.detach(), logp_old.detach(), "k3"), m)


def reward_metrics(
    rewards: torch.Tensor, group_ids: torch.Tensor, correct_threshold: float = 1.0
) -> dict[str, torch.Tensor]:
    """Reward statistics overall and per group.

    Args:
        rewards: (B,) float.
        group_ids: (B,) int group index per output.
        correct_threshold: an output counts as correct when its reward >= this (1.0 fits the
            R1 accuracy reward of 0/1).

    Returns:
        ``reward_mean``, ``reward_std`` (unbiased; 0 for B = 1), ``frac_groups_all_correct``,
        ``frac_groups_all_wrong`` (0-dim); ``group_ids``, ``group_reward_mean``,
        ``group_reward_std`` ((G,); std 0 for a group of one).
    """
    st = group_stats(rewards, group_ids)
    r = rewards.detach().to(torch.float64)
    ok = (r >= correct_threshold).to(torch.float64)
    n_ok = torch.zeros_like(st.mean).index_add(0, st.index, ok)
    all_correct = (n_ok == st.count).to(torch.float64)
    all_wrong = (n_ok == 0).to(torch.float64)
    dt = rewards.dtype
    return {
        "reward_mean": r.mean().to(dt),
        "reward_std": (r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)).to(dt),
        "frac_groups_all_correct": all_correct.mean().to(dt),
        "frac_groups_all_wrong": all_wrong.mean().to(dt),
        "group_ids": st.ids,
        "group_reward_mean": st.mean.to(dt),
        "group_reward_std": st.std.to(dt),
    }


def response_length_metrics(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Response length statistics from the response mask.

    Args:
        mask: (B, T) response mask; a row's length is its number of true entries.

    Returns:
        ``response_length_mean``, ``response_length_max``, ``response_length_min`` (float32, 0-dim).
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] == 0:
        raise ValueError(f"mask must be a (B, T) tensor with B >= 1, got {getattr(mask, 'shape', type(mask))}")
    lengths = as_bool_mask("mask", mask).sum(dim=-1).to(torch.float32)
    return {
        "response_length_mean": lengths.mean(),
        "response_length_max": lengths.max(),
        "response_length_min": lengths.min(),
    }
