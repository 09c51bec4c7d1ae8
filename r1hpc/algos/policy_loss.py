"""The clipped surrogate policy loss (PPO/GRPO) and the combined GRPO loss with KL penalty.

Per token (loss = minus the objective):

    ratio = exp(logp_new - logp_old)                      (log-ratio clamped to [-20, 20] first)
    loss  = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))
    dual clip, A < 0 only:  loss = min(loss, -A * c)     (c > 1; Ye et al. 2019, verl's clip_ratio_c)

``clip_low = clip_high = 0.2`` is standard PPO/GRPO; DAPO's clip-higher is 0.2 / 0.28. Without
dual clip a negative-advantage token with a huge ratio gets an unbounded loss; dual clip caps it at
``-A * c`` (and stops its gradient). The formulas follow verl's ``compute_policy_loss_vanilla``.
"""

from __future__ import annotations

import torch

from r1hpc.algos._checks import as_bool_mask, check_float, check_same_shape, check_tensor
from r1hpc.algos.aggregation import agg_loss, masked_mean
from r1hpc.algos.kl import LOG_RATIO_CLAMP, kl_per_token


def _check_clip(clip_low: float, clip_high: float, dual_clip: float | None) -> None:
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
    if not clip_high >= 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (e.g. 3.0) or None, got {dual_clip}")


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate loss.

    Args:
        logp_new: (B, T) log-probs of the sampled tokens under the current policy (with grad).
        logp_old: (B, T) log-probs under the policy that generated the samples (no grad needed).
        advantages: (B, T) per-token advantages (see ``advantages.token_advantages``).
        mask: (B, T) response mask (bool or 0/1).
        clip_low, clip_high: the ratio is clipped to [1 - clip_low, 1 + clip_high].
        dual_clip: the constant c > 1 of dual-clip PPO for A < 0, or None for no dual clip.

    Returns:
        loss: (B, T) per-token loss, 0 outside the mask.
        metrics: detached 0-dim tensors, averaged over masked tokens:
            ``clip_frac_high`` (A > 0 and ratio > 1 + clip_high: the clip is active),
            ``clip_frac_low`` (A < 0 and ratio < 1 - clip_low),
            ``dual_clip_frac`` (A < 0 and ratio > c; 0 without dual clip),
            ``ratio_mean``, ``ratio_max``, ``approx_kl`` (mean k3 of pi_old vs pi_new).
    """
    check_float("logp_new", logp_new, ndim=2)
    check_float("logp_old", logp_old, ndim=2)
    check_float("advantages", advantages, ndim=2)
    check_tensor("mask", mask)
    check_same_shape(logp_new=logp_new, logp_old=logp_old, advantages=advantages, mask=mask)
    m = as_bool_mask("mask", mask)
    _check_clip(clip_low, clip_high, dual_clip)

    log_ratio = (logp_new - logp_old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(loss_unclipped, loss_clipped)
    neg = advantages < 0
    if dual_clip is not None:
        loss = torch.where(neg, torch.minimum(loss, -advantages * dual_clip), loss)
    loss = torch.where(m, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))

    with torch.no_grad():
        r = ratio.detach()
        dual = (neg & (r > dual_clip)) if dual_clip is not None else torch.zeros_like(m)
        metrics = {
            "clip_frac_high": masked_mean(((advantages > 0) & (r > 1.0 + clip_high)).to(r.dtype), m),
            "clip_frac_low": masked_mean((neg & (r < 1.0 - clip_low)).to(r.dtype), m),
            "dual_clip_frac": masked_mean(dual.to(r.dtype), m),
            "ratio_mean": masked_mean(r, m),
            "ratio_max": r[m].max() if bool(m.any()) else torch.zeros((), dtype=r.dtype, device=r.device),
            "approx_kl": masked_mean(kl_per_token(logp_new.detach(), logp_old.detach(), "k3"), m),
        }
    return loss, metrics


def grpo_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    kl_coef: float = 0.001,
    kl_estimator: str = "k3",
    agg_mode: str = "token-mean",
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss: clipped surrogate + kl_coef * KL(pi || pi_ref), aggregated to a scalar.

    Defaults are R1's reported ones where it reports them (KL coefficient 0.001, k3 estimator).

    Args:
        logp_new: (B, T) log-probs under the current policy (with grad).
        logp_old: (B, T) log-probs under the sampling policy.
        logp_ref: (B, T) log-probs under the reference policy, or None when ``kl_coef == 0``.
        advantages: (B,) per output, or (B, T) per token.
        mask: (B, T) response mask (bool or 0/1).
        clip_low, clip_high, dual_clip: see ``clipped_surrogate``.
        kl_coef: weight of the KL penalty (>= 0; 0 turns it off).
        kl_estimator: "k1", "k2" or "k3" (see ``kl.kl_per_token``).
        agg_mode: see ``aggregation.AGG_MODES``.
        max_length: the constant normaliser for ``seq-mean-token-sum-norm``.

    Returns:
        loss: () scalar to call ``backward()`` on.
        metrics: detached 0-dim tensors: ``loss``, ``pg_loss``, ``kl`` (masked token mean of the
            estimator; present when logp_ref is given), ``kl_loss`` (aggregated like the loss),
            plus the ``clipped_surrogate`` metrics.
    """
    if not kl_coef >= 0.0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if kl_coef > 0.0 and logp_ref is None:
        raise ValueError("kl_coef > 0 needs logp_ref (the reference policy's log-probs); got None")
    check_float("advantages", advantages)
    check_tensor("mask", mask)
    if advantages.dim() == 1:
        if mask.dim() != 2 or mask.shape[0] != advantages.shape[0]:
            raise ValueError(
                f"shape mismatch: advantages {tuple(advantages.shape)}, mask {tuple(mask.shape)}; "
                "expected (B,) or (B, T) and (B, T)"
            )
        advantages = advantages[:, None].expand(mask.shape)
    pg_tok, metrics = clipped_surrogate(
        logp_new, logp_old, advantages, mask, clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip
    )
    m = as_bool_mask("mask", mask)
    pg_loss = agg_loss(pg_tok, m, agg_mode, max_length)
    loss = pg_loss
    if logp_ref is not None:
        check_same_shape(logp_new=logp_new, logp_ref=logp_ref)
        # Without a KL term the estimate is only a metric: keep it out of the autograd graph.
        kl_tok = kl_per_token(logp_new if kl_coef > 0.0 else logp_new.detach(), logp_ref, kl_estimator)
        metrics["kl"] = masked_mean(kl_tok.detach(), m)
        if kl_coef > 0.0:
            kl_loss = agg_loss(kl_tok, m, agg_mode, max_length)
            loss = pg_loss + kl_coef * kl_loss
            metrics["kl_loss"] = kl_loss.detach()
    metrics["pg_loss"] = pg_loss.detach()
    metrics["loss"] = loss.detach()
    return loss, metrics
