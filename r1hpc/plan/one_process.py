"""Train jobs that no backend shards, or shards over one node only: the stages that train the
teacher-sized model as one plain torch process on one device, or in the ranks of one node, checked
against the GPUs they get before anything is queued.

One process (r1hpc.stages, r1hpc.pipeline): the reward model always (teacher-sized unless
reward_model.init_from names another checkpoint: then not checked here); cold_start and sft with
backend torch; the GRPO train jobs with backend torch (megatron runs them in Megatron-core ranks on
every node of launch.train; deepspeed refuses them, r1hpc.inputs). Such a job holds fp32 weights,
gradients and both AdamW moments: 16 bytes per parameter (r1hpc.plan.memory, backend torch) before
any activation, so a model whose states alone exceed one GPU cannot train there: the job would wait
in the queue and then run out of memory.

One node: cold_start and sft with backend deepspeed or megatron train in launch.train.tasks_per_node
ranks of one node (r1hpc.stages.sft_ranks). Even sharded evenly over those ranks (ZeRO-3, or
TP x PP x EP covering them all) their states need the backend's bytes per parameter / ranks on each
GPU: a model above that is refused. A lower bound (activations and uneven shards add to it), so
nothing that could fit is refused.

The student's stages (distill, distill_rl) are not checked here: their size is a different model
(configs/students.yaml, `r1hpc plan --students`).
"""

from __future__ import annotations

from r1hpc import recipe
from r1hpc.config import Config
from r1hpc.plan.hardware import GpuSpec, gpu_spec
from r1hpc.plan.memory import state_bytes_per_param
from r1hpc.plan.params import count_params

__all__ = ["one_process_stages", "one_process_memory_problems", "one_node_stages"]


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
        elif entry.kind == "sft" and backend == "torch":
            out.append(entry.name)
        elif entry.kind == "grpo" and backend == "torch" and getattr(cfg, entry.section).steps > 0:
            out.append(entry.name)
    return out


def one_process_memory_problems(cfg: Config) -> list[tuple[str, str]]:
    """(key, what is wrong) when the model's training states alone exceed one GPU of launch.gpu_type
    for a stage of one_process_stages, or the GPUs of one node for a stage of one_node_stages. Not
    checked: an unknown or empty gpu_type (CPU runs)."""
    try:
        gpu = gpu_spec(cfg.launch.gpu_type)
    except ValueError:
        return []
    params = count_params(cfg.model).total
    return _one_process(cfg, gpu, params) + _one_node(cfg, gpu, params)


def one_node_stages(cfg: Config) -> list[str]:
    """The teacher-sized stages of the run that train in the ranks of one node under its backend."""
    if cfg.parallel.backend == "torch":
        return []
    return [e.name for e in recipe.STAGES if e.kind == "sft" and not e.student]


def _they(stages: list[str]) -> str:
    """'a, b train' / 'a trains': the stages as the subject of a sentence."""
    return f"{', '.join(stages)} {'trains' if len(stages) == 1 else 'train'}"


def _one_node(cfg: Config, gpu: GpuSpec, params: int) -> list[tuple[str, str]]:
    stages = one_node_stages(cfg)
    ranks = cfg.launch.train.tasks_per_node
    per_param = sum(state_bytes_per_param(cfg.parallel.backend, True, 1))
    need = params * per_param / ranks
    if not stages or need <= gpu.memory_bytes:
        return []
    return [
        (
            "launch.train.tasks_per_node",
            f"{_they(stages)} in the {ranks} ranks of one node (parallel.backend "
            f"{cfg.parallel.backend!r}): {params / 1e9:.1f}B parameters x {per_param:.0f} bytes (weights, "
            f"gradients, Adam states) / {ranks} ranks = {need / 1e9:.0f} GB per GPU even sharded evenly, more "
            f"than one {gpu.name} holds ({gpu.memory_bytes / 1e9:.0f} GB); these stages cannot run at this "
            f"model size yet (one node per SFT job)",
        )
    ]


def _one_process(cfg: Config, gpu: GpuSpec, params: int) -> list[tuple[str, str]]:
    stages = one_process_stages(cfg)
    per_param = sum(state_bytes_per_param("torch", False, 1))
    need = params * per_param
    if not stages or need <= gpu.memory_bytes:
        return []
    sharded = {
        "torch": "no backend shards them",
        "megatron": "Megatron-core trains the GRPO and SFT stages",
        "deepspeed": "DeepSpeed trains the SFT stages only",
    }[cfg.parallel.backend]
    return [
        (
            "parallel.backend",
            f"{_they(stages)} as one torch process on one GPU ({sharded}): {params / 1e9:.1f}B "
            f"parameters x {per_param:.0f} bytes (fp32 weights, gradients, AdamW moments) = {need / 1e9:.0f} GB, "
            f"more than one {gpu.name} holds ({gpu.memory_bytes / 1e9:.0f} GB); these stages cannot run "
            f"at this model size yet",
        )
    ]
