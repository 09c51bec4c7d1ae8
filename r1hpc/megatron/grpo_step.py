"""GRPO and SFT steps inside Megatron's forward-backward schedule (TP / PP / EP / DP, micro-batches).

The model's last stage returns vocab-parallel logits (b, s, V/tp); they are divided by the sampling
temperature and megatron's vocab-parallel cross entropy gives ``-log p(label)`` (the full-vocab
logits are never gathered under TP). The GRPO
math itself is ``r1hpc.algos`` (group_advantages, grpo_loss), not re-implemented here.

Loss normalisation: every micro-batch's loss_func returns ``(sum, count, metrics)`` with
``calculate_per_token_loss`` on, and megatron divides the gradients by the count summed over all
micro-batches and DP ranks. For ``token-mean`` the count is tokens, for the ``seq-mean-*`` modes it
is non-empty sequences, so the loss is the same global mean at any layout / micro-batch split.

Padding: micro-batches built by ``rollout_batch`` carry ``token_mask`` (False at pad positions);
``~token_mask`` goes to the model as megatron's ``padding_mask``, so the MoE routers still route pad
tokens (their outputs never reach a loss) but leave them out of the expert-bias update counts and
any aux loss. Without it, how much a batch is padded (to its longest row, to a multiple of TP)
changes the update: TP1 at S = 15 and TP2 at S = 16 (one pad column) were 5e-3 apart in loss after
2 steps, the bias update of one layer having flipped sign.

Launch (CPU, tiny model, 2 processes, TP=2):

    torchrun --nproc-per-node 2 -m r1hpc.megatron.grpo_step --tp 2 --steps 3
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from r1hpc.algos import GRPOSettings, group_advantages, grpo_loss, masked_sum
from r1hpc.megatron import cli_common
from r1hpc.megatron.rollout_batch import RolloutBatch, shard_for_rank
from r1hpc.megatron.schedule import compute_logprobs, is_reporting_rank, run_schedule

__all__ = [
    "grpo_train_step",
    "sft_train_step",
    "prepare_grpo_micro_batches",
    "compute_logprobs",
    "is_reporting_rank",
    "main",
]

Metrics = dict[str, float]


def _normaliser(mask: torch.Tensor, agg_mode: str) -> torch.Tensor:
    """The count a micro-batch's aggregated loss is multiplied by to give a sum. mask: (b, s)."""
    if agg_mode == "token-mean":
        return mask.sum()
    if agg_mode in ("seq-mean-token-mean", "seq-mean-token-sum"):
        return mask.any(dim=-1).sum()
    raise ValueError(f"agg_mode {agg_mode!r} is not supported by the Megatron step; use token-mean or seq-mean-token-*")


def _reduce_metrics(outs: list[dict[str, Any]]) -> Metrics:
    """Sum (value_sum, count) pairs over micro-batches and the DP group; {} off the last PP stage."""
    if not outs:
        return {}
    names = sorted(k for k in outs[0] if isinstance(outs[0][k], torch.Tensor) and outs[0][k].shape == (2,))
    stacked = torch.stack([torch.stack([o[k] for o in outs]).sum(0) for k in names]).double()
    dist.all_reduce(stacked, group=parallel_state.get_data_parallel_group())
    return {k: float(v[0] / v[1].clamp(min=1)) for k, v in zip(names, stacked)}


def grpo_train_step(
    model: torch.nn.Module,
    optimizer: Any,
    micro_batches: list[dict[str, torch.Tensor]],
    hyper: GRPOSettings,
) -> Metrics:
    """One optimizer step of GRPO on micro-batches that carry ``old_logp``, ``ref_logp``, ``adv``.

    Each micro-batch: input_ids, labels (b, s) int64; mask (b, s) bool; old_logp, ref_logp (b, s)
    float (ref_logp may be absent when kl_coef == 0); adv (b,) float; token_mask (b, s) bool
    (optional: without it pad tokens count in the routers' expert-bias update).
    Returns global metrics (last PP stage; {} elsewhere): loss, pg_loss, kl, clip fractions, grad_norm.
    """

    def loss_fn(mb, logp):  # noqa: ANN001, ANN202
        loss, m = grpo_loss(
            logp, mb["old_logp"], mb.get("ref_logp"), mb["adv"], mb["mask"],
            clip_low=hyper.clip_low,
            clip_high=hyper.clip_high,
            kl_coef=hyper.kl_coef,
            dual_clip=hyper.dual_clip or None,
            kl_estimator=hyper.kl_estimator, agg_mode=hyper.loss_agg,
        )  # fmt: skip
        count = _normaliser(mb["mask"], hyper.loss_agg)
        n_tok = mb["mask"].sum().to(torch.float64)
        reported = {k: torch.stack([v.double() * count, count.double()]) for k, v in m.items() if k != "ratio_max"}
        reported["logp_mean"] = torch.stack([masked_sum(logp.detach().double(), mb["mask"]), n_tok])
        return loss * count, count.to(torch.int), reported

    return _optimizer_step(model, optimizer, micro_batches, loss_fn, temperature=hyper.temperature)


def sft_train_step(model: torch.nn.Module, optimizer: Any, micro_batches: list[dict[str, torch.Tensor]]) -> Metrics:
    """One optimizer step of SFT: token-mean cross-entropy over ``mask`` (the target tokens).

    Micro-batches: input_ids, labels (b, s) int64; mask (b, s) bool; token_mask (b, s) bool, False
    at padding (optional, as in ``grpo_train_step``). Returns {"loss", "grad_norm"}.
    """

    def loss_fn(mb, logp):  # noqa: ANN001, ANN202
        n = mb["mask"].sum()
        total = masked_sum(-logp, mb["mask"])
        return total, n.to(torch.int), {"loss": torch.stack([total.detach().double(), n.double()])}

    return _optimizer_step(model, optimizer, micro_batches, loss_fn)


def _optimizer_step(
    model: torch.nn.Module,
    optimizer: Any,
    micro_batches: list[dict[str, torch.Tensor]],
    loss_fn: Any,
    **schedule_kwargs: Any,
) -> Metrics:
    """Zero grads, run forward+backward over the micro-batches in Megatron's schedule, step, reduce metrics."""
    optimizer.zero_grad()
    for chunk in _model_chunks(model):
        chunk.zero_grad_buffer()
    outs = run_schedule(model, micro_batches, loss_fn, forward_only=False, **schedule_kwargs)
    ok, grad_norm, _ = optimizer.step()
    if not ok:
        raise RuntimeError("optimizer step was skipped (non-finite gradients)")
    metrics = _reduce_metrics(outs)
    if metrics:
        metrics["grad_norm"] = float(grad_norm)
    return metrics


def _model_chunks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [model] if hasattr(model, "zero_grad_buffer") else []


def prepare_grpo_micro_batches(
    policy: torch.nn.Module, ref: torch.nn.Module | None, batch: RolloutBatch, hyper: GRPOSettings
) -> list[dict[str, torch.Tensor]]:
    """This DP rank's micro-batches with advantages, old log-probs (policy) and ref log-probs.

    Advantages are computed on the whole global batch (every rank holds it), so groups split
    across DP ranks still get their full-group baseline.
    """
    adv = group_advantages(batch.rewards, batch.group_ids, scale_by_std=hyper.scale_adv_by_std)  # (B,)
    mbs = shard_for_rank(
        batch,
        parallel_state.get_data_parallel_rank(),
        parallel_state.get_data_parallel_world_size(),
        hyper.micro_batch_size,
    )
    old = compute_logprobs(policy, mbs, hyper.temperature)
    refs = compute_logprobs(ref, mbs, hyper.temperature) if ref is not None else []
    for i, mb in enumerate(mbs):
        mb["adv"] = adv[mb["index"]]
        if old:  # only the last pipeline stage has log-probs; the others never call loss_fn
            mb["old_logp"] = old[i]
            if refs:
                mb["ref_logp"] = refs[i]
    return mbs


def main(argv: list[str] | None = None) -> None:
    """Train a few GRPO steps on synthetic scored rollouts; print one JSON line per step."""
    args = cli_common.parse_args(argv, description="GRPO steps with megatron-core on synthetic rollouts")
    setup = cli_common.setup(args)
    hyper = GRPOSettings(kl_coef=args.kl_coef, micro_batch_size=args.micro_batch_size)
    cli_common.evaluate(args, setup, "init")
    for step in range(setup.start_step, setup.start_step + args.steps):
        t0 = time.perf_counter()
        batch = cli_common.synthetic_batch(args, step, setup.layout)
        mbs = prepare_grpo_micro_batches(setup.model, setup.ref, batch, hyper)
        per_epoch = [grpo_train_step(setup.model, setup.optimizer, mbs, hyper) for _ in range(args.epochs)]
        dt = time.perf_counter() - t0
        if is_reporting_rank():
            rec = {"step": step, "reward": float(batch.rewards.mean()), "time_s": round(dt, 3)}
            rec.update({f"{k}_e{e}": v for e, m in enumerate(per_epoch) for k, v in m.items()})
            print("GRPO " + json.dumps(rec), flush=True)
    cli_common.finish(args, setup)


if __name__ == "__main__":
    main()
