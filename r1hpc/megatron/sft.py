"""SFT with megatron-core (TP / PP / EP / DP): the Megatron twin of r1hpc.train.sft.train_sft, for
the teacher-sized models no single process holds (the cold start and SFT of an MoE base).

Same inputs, data order, loss, learning-rate schedule, clipping and resume semantics as train_sft:
the global batch of step k is the same rows (``batches.batch_rows``), packed the same way
(``batches.pack``: cut at max_len, padded to the batch's longest row); data-parallel rank r trains
rows [r*B/D, (r+1)*B/D) of it in equal micro-batches. The loss is the token mean over the whole
global batch (``grpo_step.sft_train_step``: megatron divides the summed per-token losses by the
token count summed over micro-batches and DP ranks), so the update equals train_sft's up to float
summation order. Differences: megatron's Adam skips weight decay on biases and norms (the SFT
settings default to no decay), and its optimizer keeps fp32 main weights.

Checkpoints: ``<state_dir>/megatron_step_NNNN`` (weights and Adam state after NNNN steps, the dist
checkpoint format of r1hpc.megatron.checkpoint: it reloads at any layout) every ``save_every``
steps, and at the step boundary where ``stop()`` says the job is being stopped (then
preemption.SavedAndStopped is raised); the newest two are kept. A rerun resumes from the newest
complete one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from r1hpc.megatron import checkpoint
from r1hpc.megatron.grpo_step import sft_train_step
from r1hpc.megatron.model import MegatronModelConfig
from r1hpc.megatron.rollout_batch import even_micro_batch_size
from r1hpc.preemption import SavedAndStopped
from r1hpc.train.batches import batch_rows, check_pairs, pack
from r1hpc.train.sft import SFTSettings, lr_factor

__all__ = ["sft_micro_batches", "train_megatron_sft", "KEEP_CHECKPOINTS"]

KEEP_CHECKPOINTS = 2


def sft_micro_batches(
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    pad_id: int,
    max_len: int,
    dp_rank: int,
    dp_size: int,
    micro_batch_size: int,
    pad_multiple: int = 1,
) -> tuple[list[dict[str, torch.Tensor]], int]:
    """One global batch of (prompt, target) pairs as this DP rank's Megatron micro-batches, and the
    number of target tokens the whole batch trains (after the cut at max_len).

    The batch is packed as train_sft packs it (B rows of L tokens); position t predicts token t+1:
    input_ids, labels (b, S) int64 with S = L - 1 rounded up to ``pad_multiple`` (TP size under
    sequence parallel); mask (b, S) bool, True where labels[:, t] is a target token (train_sft's
    loss_mask); token_mask (b, S) bool, True where labels[:, t] is a real token (False at padding,
    for the MoE routers). Every micro-batch has the same shape (b = the largest divisor of B/D that
    is <= micro_batch_size).
    """
    n = len(prompts)
    if n % dp_size:
        raise ValueError(f"a batch of {n} rows does not split over data-parallel size {dp_size}")
    full = pack(prompts, targets, pad_id, max_len=max_len)
    s = full.labels.shape[1]
    width = -(-s // pad_multiple) * pad_multiple
    fields = {
        "input_ids": full.input_ids[:, :-1],
        "labels": full.labels,
        "mask": full.loss_mask,
        "token_mask": full.attention_mask[:, 1:].bool(),
    }
    pad_values = {"input_ids": pad_id, "labels": pad_id, "mask": False, "token_mask": False}
    if width > s:
        fields = {k: torch.nn.functional.pad(v, (0, width - s), value=pad_values[k]) for k, v in fields.items()}
    per_rank = n // dp_size
    micro = even_micro_batch_size(per_rank, micro_batch_size)
    rows = torch.arange(dp_rank * per_rank, (dp_rank + 1) * per_rank)
    return [{k: v[chunk] for k, v in fields.items()} for chunk in rows.split(micro)], int(full.loss_mask.sum())


def _set_lr(optimizer: Any, lr: float) -> None:
    for group in optimizer.param_groups:  # a chained optimizer (EP > 1) lists every group it holds
        group["lr"] = lr


def train_megatron_sft(
    model: Any,
    optimizer: Any,
    mcfg: MegatronModelConfig,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    s: SFTSettings,
    pad_id: int,
    seed: int,
    state_dir: Path,
    pad_multiple: int = 1,
    log: Callable[[dict[str, float]], None] = lambda m: None,
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, float]:
    """Train the Megatron DDP `model` (with its Megatron `optimizer`) on (prompt, target) token
    pairs; only target tokens are in the loss. Collective: every rank calls it with the same data.

    Resumes from the newest complete checkpoint in state_dir (weights and Adam state). `log` is
    called on global rank 0 with each step's metrics. `stop` is called on every rank after each
    step and must answer the same on all (a collective, sft_ranks.stop_request): True saves the
    state and raises preemption.SavedAndStopped (unless that was the last step). Returns the last
    step's metrics ({} when a resumed job had no step left).
    """
    check_pairs(prompts, targets, "train_megatron_sft")
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    if s.batch_size % dp:
        raise ValueError(
            f"batch_size={s.batch_size} must be divisible by the data-parallel size {dp} "
            f"(every rank trains the same number of rows per step)"
        )
    n = len(prompts)
    total = max(1, math.ceil(s.epochs * n / s.batch_size))
    saved = [checkpoint.complete_steps(state_dir)]
    dist.broadcast_object_list(saved, src=0)  # every rank restores what rank 0 saw
    start = saved[0][-1] if saved[0] else 0
    if start:
        checkpoint.load_checkpoint(model, mcfg, checkpoint.step_dir(state_dir, start), optimizer=optimizer)
    orders: dict[int, torch.Tensor] = {}
    model.train()
    metrics: dict[str, float] = {}
    for step in range(start, total):
        t0 = time.time()
        _set_lr(optimizer, s.lr * lr_factor(step, total, s.warmup_steps))
        rows = batch_rows(step, n, s.batch_size, seed, orders)
        mbs, tokens = sft_micro_batches(
            [prompts[i] for i in rows],
            [targets[i] for i in rows],
            pad_id,
            s.max_len,
            dp_rank,
            dp,
            s.micro_batch_size,
            pad_multiple,
        )
        step_metrics = sft_train_step(model, optimizer, mbs)
        if not math.isfinite(step_metrics.get("grad_norm", 0.0)):
            raise FloatingPointError(f"non-finite gradient norm at Megatron SFT step {step}")
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, step_metrics)  # only the last pipeline stage has the loss
        reported = next((m for m in gathered if m), {})
        metrics = {
            "step": step + 1,
            "loss": reported.get("loss", float("nan")),
            "grad_norm": reported.get("grad_norm", float("nan")),
            "lr": optimizer.param_groups[0]["lr"],
            "tokens": float(tokens),
            "step_time_s": time.time() - t0,
        }
        if dist.get_rank() == 0:
            log(metrics)
        if step + 1 == total:
            break
        stopping = stop()
        if stopping or (step + 1) % s.save_every == 0:
            checkpoint.save_checkpoint(
                model, mcfg, checkpoint.step_dir(state_dir, step + 1), step=step + 1, optimizer=optimizer
            )
            if dist.get_rank() == 0:
                checkpoint.prune_steps(state_dir, keep=KEEP_CHECKPOINTS)
            dist.barrier()
        if stopping:
            raise SavedAndStopped(step + 1)
    model.eval()
    return metrics
