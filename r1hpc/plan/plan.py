"""`make_plan(cfg)`: parameters, layout, memory per GPU, step time and GPU-hours per R1 stage.

Pure arithmetic on the config (no GPUs, no files); `r1hpc.plan.render` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r1hpc.config import Config
from r1hpc.plan.engine import EngineLayout, JobShape, engine_layout, engine_memory_problems, job_shapes
from r1hpc.plan.flops import Calibration, calibrate
from r1hpc.plan.hardware import GpuSpec, gpu_spec
from r1hpc.plan.layout import Layout, LayoutError, make_layout
from r1hpc.plan.memory import StageMemory, stage_memory
from r1hpc.plan.params import ParamCount, count_params
from r1hpc.plan.stages import PROMPT_TOKENS, R1_STAGES, GrpoStep, StageEstimate, estimate_stages, grpo_step

__all__ = ["Plan", "PlanError", "StudentMemory", "make_plan", "student_memory", "training_workloads"]


class PlanError(ValueError):
    """The config cannot be planned; the message names the keys to change."""


@dataclass(frozen=True)
class StudentMemory:
    """A distillation student's peak memory per GPU on its own layout (its distill micro-batch)."""

    name: str
    gpu: GpuSpec
    params: ParamCount
    layout: Layout
    micro_batch_size: int
    seq_len: int
    peak: StageMemory


def training_workloads(cfg: Config) -> list[tuple[str, int, int]]:
    """(name, micro_batch_size, sequence length) of every training micro-batch the policy sees."""
    g = cfg.grpo
    return [
        ("grpo", g.micro_batch_size, min(PROMPT_TOKENS + g.max_new_tokens, cfg.model.max_seq_len)),
        ("cold_start.sft", cfg.cold_start.sft.micro_batch_size, min(cfg.cold_start.sft.max_len, cfg.model.max_seq_len)),
        ("sft", cfg.sft.micro_batch_size, min(cfg.sft.max_len, cfg.model.max_seq_len)),
    ]


def student_memory(student: Config) -> StudentMemory:
    """Peak memory of a student config training on its distill micro-batches."""
    gpu, layout, pc = _resolve(student)
    d = student.distill
    seq = min(d.max_len, student.model.max_seq_len)
    per_update = max(1, d.batch_size // (layout.dp * d.micro_batch_size))
    stages = [stage_memory(student, layout, pc, gpu, i, d.micro_batch_size, seq, per_update) for i in range(layout.pp)]
    return StudentMemory(student.name, gpu, pc, layout, d.micro_batch_size, seq, max(stages, key=lambda s: s.total))


@dataclass(frozen=True)
class Plan:
    name: str
    gpu_type: str
    gpu: GpuSpec
    params: ParamCount
    layout: Layout
    workload: str  # the training micro-batch with the most tokens, which the memory table is for
    micro_batch_size: int
    seq_len: int
    micro_batches: int  # per data-parallel rank per GRPO optimizer update
    memory: list[StageMemory]  # one per pipeline stage
    step: GrpoStep  # one step of the configured GRPO shape (r1_zero's response length)
    stages: list[StageEstimate]
    calibration: Calibration
    students: list[StudentMemory] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    engines: dict[str, EngineLayout] = field(default_factory=dict)  # rollout, eval: config engine on launch.<kind>
    jobs: dict[str, JobShape] = field(default_factory=dict)  # the jobs these figures assume (train, rollout, ...)
    engine_problems: list[str] = field(default_factory=list)  # r1hpc.plan.engine.engine_memory_problems

    @property
    def fits(self) -> bool:
        return (
            all(s.fits for s in self.memory)
            and self.step.decode.fits
            and all(st.peak.fits for st in self.students)
            and not self.engine_problems
        )

    @property
    def peak_stage(self) -> StageMemory:
        return max(self.memory, key=lambda s: s.total)


def _resolve(cfg: Config) -> tuple[GpuSpec, Layout, ParamCount]:
    try:
        gpu = gpu_spec(cfg.launch.gpu_type)
    except ValueError as e:
        raise PlanError(str(e)) from None
    try:
        layout = make_layout(cfg)
    except LayoutError as e:
        raise PlanError(str(e)) from None
    return gpu, layout, count_params(cfg.model)


def make_plan(cfg: Config, students: tuple[Config, ...] = ()) -> Plan:
    """The plan of `cfg`; `students` are dense student configs for the distill stage."""
    gpu, layout, pc = _resolve(cfg)
    g, m = cfg.grpo, cfg.model
    workload, mbs, seq_len = max(training_workloads(cfg), key=lambda w: w[1] * w[2])
    micro_batches = max(1, g.prompts_per_step * g.group_size // (g.mini_batches * layout.dp * g.micro_batch_size))
    memory = [stage_memory(cfg, layout, pc, gpu, i, mbs, seq_len, micro_batches) for i in range(layout.pp)]
    r1_zero = next(s for s in R1_STAGES if s.name == "r1_zero")
    step = grpo_step(cfg, layout, gpu, pc, r1_zero.length_fraction)
    resolved_students = []
    for student in students:
        sgpu, slayout, spc = _resolve(student)
        resolved_students.append((student, slayout, spc, sgpu))
    stages = estimate_stages(cfg, layout, gpu, pc, tuple(resolved_students))

    warnings: list[str] = []
    if m.num_layers % layout.pp and not (cfg.parallel.first_stage_layers or cfg.parallel.last_stage_layers):
        warnings.append(
            f"model.num_layers={m.num_layers} is not divisible by parallel.pp={layout.pp}: Megatron needs the "
            f"split given explicitly: set parallel.first_stage_layers / parallel.last_stage_layers "
            f"(the plan assumed {list(layout.stage_layers)})"
        )
    for s in memory:
        if not s.fits:
            warnings.append(
                f"pipeline stage {s.stage} needs {s.total / 2**30:.1f} GiB per GPU, more than the "
                f"{s.capacity / 2**30:.1f} GiB usable on {gpu.name}: raise parallel.tp/pp/ep, set "
                "parallel.recompute, lower grpo.micro_batch_size or use more GPUs"
            )
    student_mem = [student_memory(s) for s in students]
    for sm in student_mem:
        if not sm.peak.fits:
            warnings.append(
                f"student {sm.name}: {sm.peak.total / 2**30:.1f} GiB per GPU, more than the "
                f"{sm.peak.capacity / 2**30:.1f} GiB usable on {sm.gpu.name}"
            )
    engines = {kind: engine_layout(cfg, kind) for kind in ("rollout", "eval")}
    if not step.decode.fits:
        warnings.append(
            f"rollout: the {engines['rollout'].dtype} weights ({step.decode.weight_bytes / 1e9:.0f} GB) leave no "
            f"KV-cache room on {step.decode.gpus} GPU(s) (config engine on launch.rollout); give each task more GPUs"
        )
    engine_problems = [f"{key}: {msg}" for key, msg in engine_memory_problems(cfg)]
    warnings += engine_problems
    if micro_batches < layout.pp:
        warnings.append(
            f"{micro_batches} micro-batches per step for {layout.pp} pipeline stages: the bubble is "
            f"{step.bubble:.0%} of compute; lower grpo.micro_batch_size or parallel.pp"
        )
    return Plan(
        cfg.name,
        cfg.launch.gpu_type.lower(),
        gpu,
        pc,
        layout,
        workload,
        mbs,
        seq_len,
        micro_batches,
        memory,
        step,
        stages,
        calibrate(),
        student_mem,
        warnings,
        engines,
        job_shapes(cfg, layout),
        engine_problems,
    )
