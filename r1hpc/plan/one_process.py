"""Train jobs that no backend shards: the stages that train the teacher-sized model as one plain
torch process on one device, checked against one GPU before anything is queued.

Which stages run so (r1hpc.stages, r1hpc.pipeline): the reward model always (teacher-sized unless
reward_model.init_from names another checkpoint: then not checked here); cold_start and sft
unless parallel.backend is deepspeed (r1hpc.stages.sft_deepspeed); the GRPO train jobs with backend
torch (megatron runs them in Megatron-core ranks; deepspeed refuses them, r1hpc.inputs). Such a job
holds fp32 weights, gradients and both AdamW moments: 16 bytes per parameter (r1hpc.plan.memory,
backend torch) before any activation, so a model whose states alone exceed one GPU cannot train
there: the job would wait in the queue and then run out of memory. The student's stages (distill,
distill_rl) are not checked here: their size is a different model (configs/students.yaml, `r1hpc plan
--students`).
"""

from __future__ import annotations

from r1hpc import recipe
from r1hpc.config import Config
from r1hpc.plan.hardware import gpu_spec
from r1hpc.plan.memory import state_bytes_per_param
from r1hpc.plan.params import count_params

__all__ = ["one_process_stages", "one_process_memory_problems"]


def one_process_stages(cfg: Config) -> list[str]:
    """The teacher-sized stages of the run that train as one torch process under its backend."""
    backend = cfg.parallel.backend
    out = []
    for entry in recipe.STAGES:
        if entry.student:
            continue
        if entry.kind == "reward_model":
            if not cfg.reward_model.init_from:  # else its backbone is that checkpoint, of its own size
                out.append(entry.name)
        elif entry.kind == "sft" and backend != "deepspeed":
            out.append(entry.name)
        elif entry.kind == "grpo" and backend == "torch" and getattr(cfg, entry.section).steps > 0:
            out.append(entry.name)
    return out


def one_process_memory_problems(cfg: Config) -> list[tuple[str, str]]:
    """(key, what is wrong) when the model's training states alone exceed one GPU of launch.gpu_type
    for a stage of one_process_stages. Not checked: an unknown or empty gpu_type (CPU runs)."""
    try:
        gpu = gpu_spec(cfg.launch.gpu_type)
    except ValueError:
        return []
    stages = one_process_stages(cfg)
    params = count_params(cfg.model).total
    per_param = sum(state_bytes_per_param("torch", False, 1))
    need = params * per_param
    if not stages or need <= gpu.memory_bytes:
        return []
    sharded = {
        "torch": "no backend shards them",
        "megatron": "Megatron-core trains the GRPO stages only",
        "deepspeed": "DeepSpeed trains the SFT stages only",
    }[cfg.parallel.backend]
    return [
        (
            "parallel.backend",
            f"{', '.join(stages)} train as one torch process on one GPU ({sharded}): {params / 1e9:.1f}B "
            f"parameters x {per_param:.0f} bytes (fp32 weights, gradients, AdamW moments) = {need / 1e9:.0f} GB, "
            f"more than one {gpu.name} holds ({gpu.memory_bytes / 1e9:.0f} GB); these stages cannot run "
            f"at this model size yet",
        )
    ]
