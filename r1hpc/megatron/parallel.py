"""Process groups, Megatron DDP and the distributed optimizer, from a torchrun environment.

On CPU (no CUDA) the backend is gloo and ``cpu_shims.apply_cpu_shims`` is applied first; on GPU it
is nccl with one device per local rank. The layout is TP x PP x EP with DP = what is left
(world / (tp * pp)); experts use expert-TP 1 under EP (else TP), expert-DP = world / (ep * etp * pp).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.models.gpt import GPTModel
from megatron.core.optimizer import MegatronOptimizer, OptimizerConfig, get_megatron_optimizer

from r1hpc.megatron.cpu_shims import apply_cpu_shims
from r1hpc.megatron.model import ParallelLayout

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer settings (Adam, constant LR)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    adam_beta2: float = 0.999
    distributed_optimizer: bool = True  # ZeRO-1 style sharding of optimizer state over DP


def init_parallel(layout: ParallelLayout, seed: int = 1234) -> None:
    """Initialise torch.distributed (from the torchrun env vars) and megatron's model-parallel groups.

    Also seeds the CPU/CUDA generators and megatron's TP/EP RNG tracker.
    """
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"init_parallel: environment lacks {missing}; launch with torchrun")
    world = int(os.environ["WORLD_SIZE"])
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        apply_cpu_shims()
    else:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    if world % (layout.tp * layout.pp) or world % (layout.ep * layout.etp * layout.pp):
        raise ValueError(
            f"world size {world} must be a multiple of tp*pp={layout.tp * layout.pp} and "
            f"ep*etp*pp={layout.ep * layout.etp * layout.pp}"
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        expert_model_parallel_size=layout.ep,
        expert_tensor_parallel_size=layout.etp,
    )
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy_parallel() -> None:
    """Tear down megatron's groups and the default process group."""
    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: GPTModel, optim: OptimConfig) -> DistributedDataParallel:
    """Megatron DDP: contiguous grad buffers reduced over DP (and expert-DP for expert params)."""
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=optim.distributed_optimizer,
    )
    return DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)


def build_optimizer(ddp_model: DistributedDataParallel, optim: OptimConfig) -> MegatronOptimizer:
    """Megatron's optimizer (DistributedOptimizer when ``optim.distributed_optimizer``), fp32 Adam.

    Also installs the hooks the forward-backward schedule calls: grad finalisation (DP/TP/PP
    all-reduces, the router expert-bias update) and no_sync for gradient accumulation.
    """
    config = OptimizerConfig(
        optimizer="adam",
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        adam_beta2=optim.adam_beta2,
        clip_grad=optim.clip_grad,
        use_distributed_optimizer=optim.distributed_optimizer,
        bf16=False,
        fp16=False,
    )
    optimizer = get_megatron_optimizer(config, [ddp_model])
    model_config = ddp_model.module.config
    model_config.finalize_model_grads_func = finalize_model_grads
    model_config.no_sync_func = ddp_model.no_sync
    model_config.grad_scale_func = optimizer.scale_loss
    return optimizer


def unwrap(model: torch.nn.Module) -> GPTModel:
    """The GPTModel inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore[return-value]
