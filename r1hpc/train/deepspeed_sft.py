"""SFT of a dense model with DeepSpeed ZeRO (stage 3 by default): the data-parallel twin of
r1hpc.train.sft.train_sft, for students too large for one device.

Same inputs, data order, loss, learning-rate schedule, clipping and resume semantics as train_sft:
the global batch of step k is the same rows in the same order; rank r trains rows
[r*B/W, (r+1)*B/W) of it in micro-batches. Each micro-batch's loss is weighted by its share of the
global batch's trained tokens, so the summed gradient equals train_sft's (up to float summation
order). Call it in every rank of the job (srun / torchrun / submitit tasks; r1hpc.distributed
sets up the process group); on CPU it runs with gloo and DS_BUILD_OPS=0, on GPUs with nccl.

    launch: srun python -m your_stage_job ...    (one task per GPU)
        or: torchrun --nproc_per_node=8 your_stage_job.py ...

Checkpoints: every `save_every` steps and at the step where `stop()` asks (the job is being
stopped), `<state_dir>/step_000040/` written by DeepSpeed's save_checkpoint (every rank writes
its ZeRO partition), then each rank fsyncs, then rank 0 adds COMPLETE.json and points `latest` at
the tag. Resume uses the newest tag with COMPLETE.json; a tag a killed job left half-written is
ignored. `latest` + the tags are what DeepSpeed's zero_to_fp32.py reads offline.

Export: the final weights are gathered (GatheredParameters on the ZeRO-3 partitions) into an
HF directory (safetensors + config) that transformers loads.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from tqdm import tqdm

from r1hpc.distributed import init_from_env
from r1hpc.fsio import atomic_write_json, atomic_write_text, fsync_dir, read_json, remove_tree
from r1hpc.preemption import SavedAndStopped
from r1hpc.train.batches import TokenBatch, batch_rows, check_pairs, pack
from r1hpc.train.sft import SFTSettings, lr_factor, sft_loss

__all__ = ["train_deepspeed_sft", "deepspeed_config", "complete_checkpoints", "export_hf"]

TAG_PREFIX = "step_"
COMPLETE = "COMPLETE.json"


class _SFTLoss(torch.nn.Module):
    """Wraps the causal LM so that the whole loss runs inside one module's forward.

    r1hpc.train.logprobs reads `lm_head.weight` directly (chunked logits, never the full (B, L, V)
    tensor), outside any submodule's forward; under ZeRO-3 that weight would be an empty
    partition there. Registering it as an external parameter of this wrapper makes DeepSpeed
    gather it for the wrapper's forward and backward.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean NLL of the loss_mask tokens: () scalar. Shapes as in TokenBatch."""
        return sft_loss(self.model, TokenBatch(input_ids, attention_mask, labels, loss_mask))


def deepspeed_config(
    s: SFTSettings, world_size: int, zero_stage: int = 3, zero_overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The DeepSpeed config for settings `s` on `world_size` data-parallel ranks (fp32)."""
    if s.batch_size % world_size:
        raise ValueError(
            f"SFTSettings.batch_size={s.batch_size} must be divisible by the data-parallel world size "
            f"{world_size} (every rank trains the same number of rows per step)"
        )
    if zero_stage not in (1, 2, 3):
        # Stage 0 is plain data parallelism (and DeepSpeed reports no gradient norm there):
        # use r1hpc.train.sft.train_sft / torch DDP instead.
        raise ValueError(f"zero_stage must be 1, 2 or 3, got {zero_stage}")
    per_rank = s.batch_size // world_size
    micro = min(s.micro_batch_size, per_rank)
    return {
        # DeepSpeed only counts micro-batches to find the step boundary: the last one of a step may
        # hold fewer rows (per_rank not divisible by micro), as in train_sft.
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": math.ceil(per_rank / micro),
        "gradient_clipping": s.max_grad_norm,
        "zero_optimization": {"stage": zero_stage, **(zero_overrides or {})},
        # A plain torch AdamW (the client optimizer): DeepSpeed's CPUAdam / FusedAdam need compiled
        # ops, and the same optimizer as train_sft keeps the two trainers comparable.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


# --- checkpoints -----------------------------------------------------------------------------


def complete_checkpoints(state_dir: Path) -> list[int]:
    """Steps of the checkpoints in state_dir that every rank finished writing, oldest first."""
    if not state_dir.is_dir():
        return []
    steps = []
    for p in state_dir.iterdir():
        if p.name.startswith(TAG_PREFIX) and p.name[len(TAG_PREFIX) :].isdigit() and (p / COMPLETE).is_file():
            steps.append(int(p.name[len(TAG_PREFIX) :]))
    return sorted(steps)


def _tag(step: int) -> str:
    return f"{TAG_PREFIX}{step:06d}"


def _save(engine: Any, state_dir: Path, step: int, zero_stage: int, keep: int) -> None:
    tag = _tag(step)
    engine.save_checkpoint(str(state_dir), tag=tag, client_state={"step": step}, save_latest=False)
    # Each rank makes its own files durable (on NFS/Lustre only the writer's fsync flushes them).
    for path in sorted((state_dir / tag).rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(state_dir / tag)
    dist.barrier()  # every partition is on disk before the checkpoint is declared complete
    if dist.get_rank() == 0:
        atomic_write_json(
            state_dir / tag / COMPLETE, {"step": step, "world_size": dist.get_world_size(), "zero_stage": zero_stage}
        )
        atomic_write_text(state_dir / "latest", tag)  # for DeepSpeed's zero_to_fp32.py
        done = complete_checkpoints(state_dir)
        for old in done[:-keep]:
            remove_tree(state_dir / _tag(old))
        for p in state_dir.glob(f"{TAG_PREFIX}*"):  # half-written tags older than the newest complete one
            if p.is_dir() and not (p / COMPLETE).exists() and p.name < tag:
                remove_tree(p)
    dist.barrier()


def _resume(engine: Any, state_dir: Path) -> int:
    """Load the newest complete checkpoint; return its step (0 when there is none)."""
    steps = complete_checkpoints(state_dir)
    if not steps:
        return 0
    tag = _tag(steps[-1])
    meta = read_json(state_dir / tag / COMPLETE)
    if meta.get("world_size") != dist.get_world_size():
        raise RuntimeError(
            f"{state_dir / tag}: written by {meta.get('world_size')} ranks, this job has "
            f"{dist.get_world_size()}; ZeRO partitions only load into the same world size "
            f"(convert with deepspeed.checkpoint.ds_to_universal to change it)"
        )
    path, client = engine.load_checkpoint(
        str(state_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if path is None or client.get("step") != steps[-1]:
        raise RuntimeError(f"{state_dir / tag}: DeepSpeed could not load this checkpoint (got {path}, {client})")
    return int(client["step"])


# --- export ----------------------------------------------------------------------------------


def export_hf(model: torch.nn.Module, export_dir: Path) -> None:
    """Gather the ZeRO-partitioned weights of `model` and write an HF directory on rank 0.

    Collective: call in every rank. The directory appears by one rename (a reader never sees a
    half-written export); an existing one is replaced.
    """
    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()} if dist.get_rank() == 0 else None
    if dist.get_rank() == 0:
        assert state is not None
        with torch.device("meta"):
            fresh = type(model)(model.config)
        fresh.load_state_dict(state, assign=True, strict=True)
        fresh.tie_weights()
        fresh.generation_config = model.generation_config
        tmp = export_dir.with_name(f".{export_dir.name}.tmp-{os.getpid()}")
        remove_tree(tmp)
        fresh.save_pretrained(str(tmp), safe_serialization=True)
        fsync_dir(tmp)
        if export_dir.exists():
            remove_tree(export_dir)
        tmp.rename(export_dir)
        fsync_dir(export_dir.parent)
    dist.barrier()


def _no_cpu_shm_comm_op() -> None:
    """Keep DeepSpeed from JIT-compiling its shared-memory comm op on CPU-only machines.

    With DS_BUILD_OPS=0 nothing is prebuilt, and DeepSpeed's comm backend compiles
    `deepspeed_shm_comm` with ninja + g++ on first use when the accelerator is the CPU (measured:
    ~2 min on 2 loaded cores, and a hard failure on a node without a compiler). That op serves
    only `inference_all_reduce` (AutoTP inference); ZeRO training uses torch.distributed's
    reduce-scatter / all-gather on gloo. Marking it incompatible takes DeepSpeed's own fallback.
    """
    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


# --- training --------------------------------------------------------------------------------


def train_deepspeed_sft(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    s: SFTSettings,
    pad_id: int,
    seed: int,
    state_dir: Path,
    export_dir: Path | None = None,
    log: Callable[[dict], None] = lambda m: None,
    progress: bool = True,
    zero_stage: int = 3,
    zero_overrides: dict[str, Any] | None = None,
    keep_checkpoints: int = 2,
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, float]:
    """Train on (prompt, target) token pairs with DeepSpeed ZeRO; only target tokens are in the loss.

    Every rank passes the same model (rank 0's weights are broadcast), data and settings. Resumes
    from the newest complete checkpoint in state_dir; writes the final weights to export_dir (an
    HF directory) when given. `log` is called on rank 0 only. `stop` is called on every rank after
    each step and must answer the same on all (a collective, sft_ranks.stop_request): True saves
    the state and raises preemption.SavedAndStopped (unless that was the last step). Returns the
    last step's metrics (loss summed over ranks: the global token-mean NLL, as train_sft reports).
    Afterwards `model` holds ZeRO partitions (use export_dir, or deepspeed.zero.GatheredParameters,
    to read it).
    """
    check_pairs(prompts, targets, "train_deepspeed_sft")
    if not dist.is_initialized():
        init_from_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    config = deepspeed_config(s, world, zero_stage, zero_overrides)
    micro, gas = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
    per_rank = s.batch_size // world
    with torch.no_grad():  # every rank starts from the same weights, whatever built them
        for p in model.parameters():
            dist.broadcast(p.data, src=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    _no_cpu_shm_comm_op()
    wrapper = _SFTLoss(model)
    if zero_stage == 3:
        deepspeed.zero.register_external_parameter(wrapper, model.lm_head.weight)
    engine, ds_optimizer, _, _ = deepspeed.initialize(model=wrapper, optimizer=optimizer, config=config)
    n = len(prompts)
    total = max(1, math.ceil(s.epochs * n / s.batch_size))
    start = _resume(engine, state_dir)
    orders: dict[int, torch.Tensor] = {}
    engine.train()
    metrics: dict[str, float] = {}
    bar = tqdm(
        range(start, total), desc="ds-sft", initial=start, total=total, disable=not progress or rank != 0, mininterval=2
    )
    for step in bar:
        t0 = time.time()
        for group in ds_optimizer.param_groups:
            group["lr"] = s.lr * lr_factor(step, total, s.warmup_steps)
        rows = batch_rows(step, n, s.batch_size, seed, orders)
        # Packed like train_sft (the global batch, then each micro-batch trimmed to its longest row).
        full = pack([prompts[i] for i in rows], [targets[i] for i in rows], pad_id, max_len=s.max_len)
        tokens = float(full.loss_mask.sum())
        loss_sum = torch.zeros(())
        for m in range(gas):
            lo = rank * per_rank + m * micro
            part = full.select(torch.arange(lo, min(lo + micro, (rank + 1) * per_rank)))
            share = float(part.loss_mask.sum()) / max(tokens, 1.0)
            loss = engine(part.input_ids, part.attention_mask, part.labels, part.loss_mask) * share
            # ZeRO averages gradients over the ranks; the shares already sum to 1 over all ranks.
            engine.backward(loss * world, scale_wrt_gas=False)
            engine.step()  # applies the update only at the last micro-batch (the GAS boundary)
            loss_sum += loss.detach().float()
        dist.all_reduce(loss_sum)
        grad_norm = float(engine.get_global_grad_norm())
        if not math.isfinite(grad_norm):  # the update is already applied (fp32: DeepSpeed skips nothing);
            # failing here keeps the bad weights out of every later checkpoint and of the export
            raise FloatingPointError(f"non-finite gradient norm at DeepSpeed SFT step {step} (rank {rank})")
        metrics = {
            "step": step + 1,
            "loss": float(loss_sum),
            "grad_norm": grad_norm,
            "lr": ds_optimizer.param_groups[0]["lr"],
            "tokens": tokens,
            "step_time_s": time.time() - t0,
        }
        if rank == 0:
            log(metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if step + 1 == total:
            break
        stopping = stop()
        if stopping or (step + 1) % s.save_every == 0:
            _save(engine, state_dir, step + 1, zero_stage, keep_checkpoints)
        if stopping:
            raise SavedAndStopped(step + 1)
    engine.eval()
    if export_dir is not None:
        export_hf(model, Path(export_dir))
    return metrics
