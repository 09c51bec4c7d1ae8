"""Supervised fine-tuning (and causal-LM pretraining) of a small model: NLL of the trained tokens.

Used by the base, cold_start, sft and distill stages. Resumable: a checkpoint every
`save_every` optimizer steps; a rerun of a killed job continues from the newest one with the
same data order, so its final weights equal those of an undisturbed run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from r1hpc import preemption
from r1hpc.algos import masked_mean
from r1hpc.train.batches import TokenBatch, batch_rows, check_pairs, pack
from r1hpc.train.checkpoint import load_latest_checkpoint, save_periodically
from r1hpc.train.logprobs import token_logprobs

__all__ = ["SFTSettings", "sft_loss", "train_sft", "lr_factor"]


@dataclass(frozen=True)
class SFTSettings:
    epochs: float = 1.0  # may be fractional: total steps = ceil(epochs * examples / batch)
    batch_size: int = 32  # sequences per optimizer step
    micro_batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_len: int = 512
    save_every: int = 50


def sft_loss(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Mean negative log-likelihood over batch.loss_mask tokens: () scalar."""
    return -masked_mean(token_logprobs(model, batch), batch.loss_mask)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_sft(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    s: SFTSettings,
    pad_id: int,
    seed: int,
    state_dir: Path,
    log: Callable[[dict], None] = lambda m: None,
    progress: bool = True,
) -> dict[str, float]:
    """Train on (prompt, target) token pairs; only target tokens are in the loss.

    Resumes from the newest checkpoint in state_dir; saves one and stops when the job's time is up
    (r1hpc.preemption). Returns the last step's metrics.
    """
    check_pairs(prompts, targets, "train_sft")
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = len(prompts)
    total = max(1, math.ceil(s.epochs * n / s.batch_size))
    start = 0
    resumed = load_latest_checkpoint(state_dir, model, optimizer, generator)
    if resumed:
        start = resumed[0]
    # The data order is a function of (seed, epoch) only, so a resumed job sees the same batches.
    orders: dict[int, torch.Tensor] = {}

    model.train()
    metrics: dict[str, float] = {}
    bar = tqdm(range(start, total), desc="sft", initial=start, total=total, disable=not progress, mininterval=2)
    with preemption.saving_loop():
        for step in bar:
            t0 = time.time()
            for group in optimizer.param_groups:
                group["lr"] = s.lr * lr_factor(step, total, s.warmup_steps)
            rows = torch.tensor(batch_rows(step, n, s.batch_size, seed, orders))
            full = pack([prompts[i] for i in rows], [targets[i] for i in rows], pad_id, max_len=s.max_len)
            tokens = float(full.loss_mask.sum())
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for mstart in range(0, len(rows), s.micro_batch_size):
                part = full.select(torch.arange(mstart, min(mstart + s.micro_batch_size, len(rows))))
                share = float(part.loss_mask.sum()) / max(tokens, 1.0)
                loss = sft_loss(model, part) * share
                loss.backward()
                loss_sum += float(loss.detach())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm))
            if not math.isfinite(grad_norm):
                raise FloatingPointError(f"non-finite gradient norm at SFT step {step}")
            optimizer.step()
            metrics = {
                "step": step + 1,
                "loss": loss_sum,
                "grad_norm": grad_norm,
                "lr": optimizer.param_groups[0]["lr"],
                "tokens": tokens,
                "step_time_s": time.time() - t0,
            }
            log(metrics)
            bar.set_postfix(loss=f"{loss_sum:.3f}")
            save_periodically(state_dir, step + 1, total, s.save_every, model, optimizer, generator)
    model.eval()
    return metrics
