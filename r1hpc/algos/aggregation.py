"""Reduce a per-token loss matrix (B, T) to a scalar, the four ways GRPO variants do it.

Modes (names as in verl's ``agg_loss``):

- ``token-mean``: sum over all response tokens / number of response tokens (DAPO). Every token
  weighs the same, so long answers weigh more than short ones.
- ``seq-mean-token-mean``: mean over tokens within a sequence, then mean over sequences (the
  original GRPO objective, 1/G sum_i 1/|o_i| sum_t).
- ``seq-mean-token-sum``: sum over tokens within a sequence, then mean over sequences.
- ``seq-mean-token-sum-norm``: sum over tokens / a CONSTANT ``max_length``, then mean over
  sequences (Dr. GRPO: removes the 1/|o_i| length bias without changing the loss scale by batch).

Fully masked rows (padding rows added to even out micro-batches) are left out of the mean over
sequences; an all-masked batch yields a 0 loss that still backpropagates (zero gradients), never NaN.

Differences from verl, on purpose: verl's ``seq-mean-*`` modes divide by all B rows (and give NaN
for an empty row in ``seq-mean-token-mean``); its ``seq-mean-token-sum-norm`` divides the total by
``T`` only (no mean over sequences) and takes ``T`` from the padded mask width, which changes from
batch to batch. Here ``max_length`` must be given, which is what Dr. GRPO asks for.
"""

from __future__ import annotations

import torch

from r1hpc.algos._checks import as_bool_mask, check_float

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is true.

    Args:
        x: (B, T) any float values; entries outside the mask are ignored even if they are NaN.
        mask: (B, T) bool.
        dim: None for a scalar, or the dim to sum over.
    """
    # where() rather than x * mask: a NaN/inf in a padded slot must not leak into the sum.
    zeroed = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return zeroed.sum() if dim is None else zeroed.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the true entries of ``mask``; 0 where there are none (never NaN).

    Args:
        x: (B, T) float.
        mask: (B, T) bool.
        dim: None for a scalar, or the dim to average over (e.g. -1 gives (B,)).
    """
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def agg_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    max_length: int | None = None,
) -> torch.Tensor:
    """Aggregate a per-token loss into a scalar.

    Args:
        loss_mat: (B, T) per-token loss.
        mask: (B, T) response mask (bool or 0/1).
        mode: one of ``AGG_MODES`` (see the module docstring).
        max_length: the constant normaliser for ``seq-mean-token-sum-norm`` (the configured
            maximum response length); must be >= T. Ignored by the other modes.

    Returns:
        () scalar loss.
    """
    check_float("loss_mat", loss_mat, ndim=2)
    m = as_bool_mask("mask", mask, tuple(loss_mat.shape))
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {AGG_MODES}")
    if mode == "token-mean":
        return masked_mean(loss_mat, m)
    rows = m.any(dim=-1)  # (B,) rows with at least one response token
    n_rows = rows.sum().clamp(min=1).to(loss_mat.dtype)
    seq_sum = masked_sum(loss_mat, m, dim=-1)  # (B,)
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / m.sum(dim=-1).clamp(min=1).to(loss_mat.dtype)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum
    else:
        if max_length is None:
            raise ValueError("agg mode 'seq-mean-token-sum-norm' needs max_length (the configured max response length)")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < loss_mat.shape[-1]:
            raise ValueError(
                f"max_length must be an int >= the response width T={loss_mat.shape[-1]}, got {max_length!r}"
            )
        per_seq = seq_sum / max_length
    # Empty rows have per_seq == 0, so summing all rows and dividing by the non-empty count
    # leaves them out of the mean.
    return per_seq.sum() / n_rows
