"""One GRPO update of a policy from a step's scored rollouts (plain torch / transformers).

The math is `r1hpc.algos`; this module batches the records, recomputes the sampling policy's and
the reference's log-probs with the trainer's own code, splits the step into `mini_batches`
optimizer updates (R1 splits each rollout into 16) with gradient accumulation over micro-batches,
and returns one flat dict of metrics.

Old (behaviour) log-probs: those of the policy that SAMPLED the records. With one-step overlap
(grpo.max_staleness = 1) that is v(N-1), passed as `behaviour`, not the v(N) being updated. When
the records are on-policy and the step is one optimizer update, the old log-probs equal the
current policy's, detached, so no separate pass computes them (as TRL and verl do); with several
mini-batches the policy moves between updates and the pass is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from r1hpc.algos import (
    GRPOSettings,
    dynamic_sampling_mask,
    group_advantages,
    grpo_loss,
    masked_mean,
    response_length_metrics,
    reward_metrics,
)
from r1hpc.train.batches import TokenBatch, pack
from r1hpc.train.logprobs import token_logprobs

__all__ = ["grpo_update", "sequence_logprobs"]


def sequence_logprobs(
    model: torch.nn.Module, batch: TokenBatch, micro_batch_size: int, temperature: float
) -> torch.Tensor:
    """(B, L-1) log-probs without grad, computed micro-batch by micro-batch."""
    out = torch.zeros(batch.labels.shape, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(batch), micro_batch_size):
            rows = torch.arange(start, min(start + micro_batch_size, len(batch)))
            part = batch.select(rows)
            out[rows, : part.labels.shape[1]] = token_logprobs(model, part, temperature=temperature)
    return out


def _micro_weight(mode: str, mask: torch.Tensor, rows: torch.Tensor) -> float:
    """Share of a micro-batch in its mini-batch's loss, so accumulated gradients equal the
    gradient of the loss over the whole mini-batch (tokens for token-mean, sequences otherwise)."""
    if mode == "token-mean":
        return float(mask[rows].sum()) / max(float(mask.sum()), 1.0)
    return len(rows) / mask.shape[0]


def grpo_update(
    policy: torch.nn.Module,
    ref: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    records: Sequence[dict[str, Any]],
    s: GRPOSettings,
    pad_id: int,
    generator: torch.Generator,
    behaviour: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Update `policy` in place from `records` (each: prompt_ids, response_ids, reward, group,
    optional gen_logprobs); return metrics. Deterministic given the generator's state.

    behaviour: the policy that sampled the records when it is not `policy` (a lagged rollout);
    None = the records are `policy`'s own samples (module docstring)."""
    rewards = torch.tensor([float(r["reward"]) for r in records], dtype=torch.float32)
    groups = torch.tensor([int(r["group"]) for r in records], dtype=torch.long)
    metrics: dict[str, float] = {k: float(v) for k, v in reward_metrics(rewards, groups).items() if v.dim() == 0}
    keep = dynamic_sampling_mask(rewards, groups) if s.dynamic_sampling else torch.ones(len(records), dtype=torch.bool)
    metrics["kept_fraction"] = float(keep.float().mean())
    full = pack([r["prompt_ids"] for r in records], [r["response_ids"] for r in records], pad_id)
    metrics.update({k: float(v) for k, v in response_length_metrics(full.loss_mask).items()})
    if not bool(keep.any()):
        metrics["updates"] = 0.0  # every group all-equal: no signal in this step
        return metrics
    idx = torch.nonzero(keep).squeeze(1)
    advantages = group_advantages(rewards, groups, scale_by_std=s.scale_adv_by_std)[idx]
    batch = full.select(idx)
    mask = batch.loss_mask

    policy.eval()  # no dropout: the old log-probs must be those of the sampling policy
    order = torch.randperm(len(idx), generator=generator)
    # Fewer kept rows than mini_batches (dynamic sampling) leaves some splits empty: those are no
    # update, and the per-update means below are over the updates that ran.
    minis = [mini for mini in torch.tensor_split(order, s.mini_batches) if len(mini)]
    # On-policy with one update: the current policy's detached log-probs are the old ones.
    reuse_current = behaviour is None and len(minis) == 1
    old = (
        None
        if reuse_current
        else sequence_logprobs(behaviour if behaviour is not None else policy, batch, s.micro_batch_size, s.temperature)
    )
    ref_lp = (
        sequence_logprobs(ref, batch, s.micro_batch_size, s.temperature) if ref is not None and s.kl_coef > 0 else None
    )
    trainer_lp = torch.zeros(batch.labels.shape, dtype=torch.float32) if reuse_current else old
    sums: dict[str, float] = {}
    for mini in minis:
        optimizer.zero_grad(set_to_none=True)
        mini_mask = mask[mini]
        for start in range(0, len(mini), s.micro_batch_size):
            rows = mini[start : start + s.micro_batch_size]
            part = batch.select(rows)
            t = part.labels.shape[1]
            new, entropy = token_logprobs(policy, part, temperature=s.temperature, with_entropy=True)
            if reuse_current:
                trainer_lp[rows, :t] = new.detach()
            old_rows = new.detach() if reuse_current else old[rows, :t]
            loss, m = grpo_loss(
                new,
                old_rows,
                None if ref_lp is None else ref_lp[rows, :t],
                advantages[rows],
                part.loss_mask,
                clip_low=s.clip_low,
                clip_high=s.clip_high,
                dual_clip=s.dual_clip or None,
                kl_coef=s.kl_coef,
                kl_estimator=s.kl_estimator,
                agg_mode=s.loss_agg,
                max_length=s.max_new_tokens,
            )
            weight = _micro_weight(s.loss_agg, mini_mask, torch.arange(start, start + len(rows)))
            (loss * weight).backward()
            m["entropy"] = masked_mean(entropy, part.loss_mask)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v) * weight / len(minis)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), s.max_grad_norm)
        if not math.isfinite(float(grad_norm)):
            raise FloatingPointError(
                f"non-finite gradient norm {float(grad_norm)} in a GRPO update; the step is not applied"
            )
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm) / len(minis)
        optimizer.step()
    metrics.update(sums)
    metrics["updates"] = float(len(minis))
    gen = [r.get("gen_logprobs") for r in (records[int(i)] for i in idx)]
    if all(g is not None for g in gen):
        # the behaviour policy's log-probs as the trainer computes them, against the generator's
        metrics.update(_mismatch(trainer_lp, mask, gen))
    return metrics


def _mismatch(trainer_lp: torch.Tensor, mask: torch.Tensor, gen: list[list[float]]) -> dict[str, float]:
    """How far the generator's sampled-token log-probs are from the trainer's (logged, not used)."""
    diffs = []
    for i, g in enumerate(gen):
        pos = torch.nonzero(mask[i]).squeeze(1)
        n = min(len(pos), len(g))
        if n:
            diffs.append((trainer_lp[i, pos[:n]] - torch.tensor(g[:n], dtype=torch.float32)).abs())
    if not diffs:
        return {}
    d = torch.cat(diffs)
    return {"gen_logprob_diff_mean": float(d.mean()), "gen_logprob_diff_max": float(d.max())}
