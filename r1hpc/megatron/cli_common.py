"""Command-line plumbing shared by the Megatron scripts: arguments, setup (model, DDP, optimizer,
reference model, checkpoint load), a fixed-batch evaluation, and the final save.

Each process prints JSON lines prefixed ``GRPO`` / ``EVAL`` from one reporting rank; tests parse them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import torch
from megatron.core import parallel_state

from r1hpc.algos import masked_sum
from r1hpc.megatron import checkpoint
from r1hpc.megatron.model import MegatronModelConfig, ParallelLayout, build_model
from r1hpc.megatron.parallel import OptimConfig, build_optimizer, destroy_parallel, init_parallel, wrap_ddp
from r1hpc.megatron.rollout_batch import RolloutBatch, shard_for_rank, synthetic_rollouts
from r1hpc.megatron.schedule import compute_logprobs, is_reporting_rank

EVAL_STEP = 1_000_000  # the synthetic-batch index of the fixed evaluation batch


@dataclass
class Setup:
    layout: ParallelLayout
    cfg: MegatronModelConfig
    model: Any  # DDP-wrapped GPTModel (this rank's stage)
    ref: Any  # frozen reference GPTModel or None
    optimizer: Any
    start_step: int


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--no-mla", action="store_true", help="standard attention instead of MLA")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="optimizer updates per rollout batch")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--kl-coef", type=float, default=0.001)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--n-prompts", type=int, default=2)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=8)
    p.add_argument("--response-len", type=int, default=8)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--load", default=None, help="checkpoint to start from (any layout; weights only)")
    p.add_argument("--resume", default=None, help="checkpoint to continue: weights, Adam state and step")
    p.add_argument("--ref-load", default=None, help="reference model checkpoint (default: --load)")
    p.add_argument("--save", default=None, help="save the final weights and optimizer state here (must not exist)")
    p.add_argument("--save-init", default=None, help="save the initial weights here before training")
    return p.parse_args(argv)


def setup(args: argparse.Namespace) -> Setup:
    """Process groups, policy (+ checkpoint), frozen reference copy, DDP and optimizer."""
    layout = ParallelLayout(tp=args.tp, pp=args.pp, ep=args.ep)
    cfg = MegatronModelConfig(
        multi_latent_attention=not args.no_mla, max_seq_len=args.prompt_len + args.response_len + 8
    )
    init_parallel(layout, seed=args.seed)
    model = build_model(cfg, layout)
    step = checkpoint.load_checkpoint(model, cfg, args.load) if args.load else 0
    if args.save_init:
        checkpoint.save_checkpoint(model, cfg, args.save_init, step=step)
    ref = None
    if args.kl_coef > 0:
        ref = build_model(cfg, layout)
        ref_dir = args.ref_load or args.load
        if ref_dir and ref_dir != args.load:
            checkpoint.load_checkpoint(ref, cfg, ref_dir)
        else:
            ref.load_state_dict(model.state_dict())  # the starting policy is the reference
        ref.requires_grad_(False)
        ref.eval()
    optim = OptimConfig(lr=args.lr)
    ddp = wrap_ddp(model, optim)
    optimizer = build_optimizer(ddp, optim)
    if args.resume:
        step = checkpoint.load_checkpoint(ddp, cfg, args.resume, optimizer=optimizer)
    return Setup(layout, cfg, ddp, ref, optimizer, step)


def synthetic_batch(args: argparse.Namespace, step: int, layout: ParallelLayout) -> RolloutBatch:
    return synthetic_rollouts(
        step,
        n_prompts=args.n_prompts,
        group_size=args.group_size,
        prompt_len=args.prompt_len,
        response_len=args.response_len,
        vocab_size=MegatronModelConfig().vocab_size,
        seed=args.seed,
        pad_multiple=layout.tp,  # sequence parallel splits the sequence over TP
    )


def evaluate(args: argparse.Namespace, s: Setup, tag: str) -> dict[str, float] | None:
    """Mean response-token log-prob and its sum on the fixed eval batch; printed as ``EVAL {...}``."""
    batch = synthetic_batch(args, EVAL_STEP, s.layout)
    mbs = shard_for_rank(
        batch,
        parallel_state.get_data_parallel_rank(),
        parallel_state.get_data_parallel_world_size(),
        args.micro_batch_size,
    )
    logps = compute_logprobs(s.model, mbs)
    if not logps:
        return None
    sums = torch.zeros(2, dtype=torch.float64)
    for mb, lp in zip(mbs, logps):
        sums += torch.stack([masked_sum(lp.double(), mb["mask"]), mb["mask"].sum().double()])
    torch.distributed.all_reduce(sums, group=parallel_state.get_data_parallel_group())
    rec = {"tag": tag, "logp_mean": float(sums[0] / sums[1]), "n_tokens": int(sums[1])}
    if is_reporting_rank():
        print("EVAL " + json.dumps(rec), flush=True)
    return rec


def finish(args: argparse.Namespace, s: Setup) -> None:
    evaluate(args, s, "final")
    if args.save:
        checkpoint.save_checkpoint(s.model, s.cfg, args.save, step=s.start_step + args.steps, optimizer=s.optimizer)
    destroy_parallel()
