"""Time and GPU-hours per R1 stage from stated token counts (every number here is printed).

A GRPO step on Slurm is a rollout array (grpo.rollout_shards tasks, one vLLM engine each: config
engine on launch.rollout's GPUs, r1hpc.plan.engine) followed by a train job on launch.train's
GPUs; each is its own Slurm job, so each step also pays job start-up and the checkpoint traffic
through the shared filesystem: the train job loads and saves its state (bf16 weights + fp32
master, m, v = 14 bytes/param) and publishes bf16 weights; every rollout engine loads them.
GPU-hours = GPUs x wall of each job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from r1hpc import recipe
from r1hpc.config import Config
from r1hpc.plan.engine import engine_decode, engine_layout
from r1hpc.plan.flops import TRAIN_MFU, Decode, forward_flops_per_token, train_flops_per_token
from r1hpc.plan.hardware import GpuSpec
from r1hpc.plan.layout import Layout
from r1hpc.plan.params import ParamCount

__all__ = [
    "StageAssumption",
    "R1_STAGES",
    "StageEstimate",
    "GrpoStep",
    "grpo_step",
    "estimate_stages",
    "sft_examples",
    "PROMPT_TOKENS",
    "FS_GB_S",
    "JOB_START_S",
]

PROMPT_TOKENS = 512  # mean prompt length (a math/code question plus the R1 template)
FS_GB_S = 100.0  # aggregate shared-filesystem bandwidth, GB/s (parallel FS at this scale)
JOB_START_S = 60.0  # Slurm start, container/python imports, NCCL init, per job
CKPT_BYTES_PER_PARAM = 14.0  # Megatron/DeepSpeed train state: bf16 weights + fp32 master, m, v


@dataclass(frozen=True)
class StageAssumption:
    """How long the outputs of one R1 stage are (the config gives the counts; these the lengths)."""

    name: str
    kind: str  # grpo | sft | generate
    length_fraction: float  # mean response (grpo, generate) or example (sft) / the stage's max length
    note: str


# The recipe's stages the planner estimates, with their mean lengths as a fraction of the stage's
# configured maximum (r1hpc.recipe; assumed, R1 does not report means).
R1_STAGES: tuple[StageAssumption, ...] = tuple(
    StageAssumption(s.name, s.kind if s.kind in ("grpo", "sft") else "generate", s.plan_length, s.plan_note)
    for s in recipe.STAGES
    if s.plan_length is not None
)


@dataclass(frozen=True)
class GrpoStep:
    """One GRPO step of the configured shape, split into its jobs (seconds)."""

    sequences: int
    mean_response: float
    train_tokens: float
    train_compute_s: float
    bubble: float  # pipeline bubble fraction added to compute
    train_io_s: float  # job start + load + save + publish
    rollout_decode_s: float
    rollout_tail_s: float  # the longest response decoding alone to max_new_tokens
    rollout_io_s: float
    decode: Decode
    train_gpus: int
    rollout_gpus: int  # all tasks of the array

    @property
    def train_s(self) -> float:
        return self.train_compute_s * (1 + self.bubble) + self.train_io_s

    @property
    def rollout_s(self) -> float:
        return max(self.rollout_decode_s, self.rollout_tail_s) + self.rollout_io_s

    @property
    def wall_s(self) -> float:
        return self.train_s + self.rollout_s

    @property
    def gpu_hours(self) -> float:
        return (self.train_gpus * self.train_s + self.rollout_gpus * self.rollout_s) / 3600.0


@dataclass(frozen=True)
class StageEstimate:
    name: str
    note: str
    tokens: float  # trained or generated
    wall_h: float
    gpu_hours: float
    gpus: int  # largest job of the stage


def _train_seconds(
    cfg: Config, layout: Layout, gpu: GpuSpec, pc: ParamCount, tokens: float, seq_len: float, forwards: int = 0
) -> float:
    per_token = train_flops_per_token(cfg.model, pc, seq_len) + forwards * forward_flops_per_token(
        cfg.model, pc, seq_len
    )
    return tokens * per_token / (layout.world * gpu.bf16_tflops * 1e12 * TRAIN_MFU)


def grpo_step(cfg: Config, layout: Layout, gpu: GpuSpec, pc: ParamCount, response_fraction: float) -> GrpoStep:
    """One step: grpo.prompts_per_step x group_size sequences generated, then grpo.mini_batches updates."""
    g, launch = cfg.grpo, cfg.launch
    seqs = g.prompts_per_step * g.group_size
    resp = response_fraction * g.max_new_tokens
    tokens = seqs * (PROMPT_TOKENS + resp)
    # Extra forwards: the reference model when the KL term is on; the old policy when a step makes
    # several updates (with one update the old policy is the current one: same forward).
    forwards = (1 if g.kl_coef > 0 else 0) + (1 if g.mini_batches > 1 else 0)
    compute = _train_seconds(cfg, layout, gpu, pc, tokens, PROMPT_TOKENS + resp, forwards)
    micro_batches = max(1, seqs // (g.mini_batches * layout.dp * g.micro_batch_size))
    bubble = (layout.pp - 1) / (layout.vpp * micro_batches) if layout.pp > 1 else 0.0
    fs = FS_GB_S * 1e9
    train_io = JOB_START_S + (2 * CKPT_BYTES_PER_PARAM * (pc.total + pc.mtp) + 2 * pc.total) / fs

    per_task = math.ceil(seqs / g.rollout_shards)
    engine = engine_layout(cfg, "rollout")
    rgpus = engine.gpus
    decode = engine_decode(cfg, engine, gpu, PROMPT_TOKENS + resp / 2, per_task)
    decode_s = per_task * resp / decode.tokens_per_s if decode.fits else math.inf
    tail = g.max_new_tokens * decode.single_step_s
    waves = math.ceil(g.rollout_shards / (launch.rollout.array_parallelism or g.rollout_shards))
    rollout_io = JOB_START_S + g.rollout_shards * decode.weight_bytes / fs
    return GrpoStep(
        seqs,
        resp,
        tokens,
        compute,
        bubble,
        train_io,
        waves * decode_s,
        waves * tail,
        rollout_io,
        decode,
        layout.world,
        g.rollout_shards * rgpus,
    )


def _generate(
    name: str, note: str, cfg: Config, gpu: GpuSpec, resources: str, engines: int, outputs: float, mean_tokens: float
) -> StageEstimate:
    engine = engine_layout(cfg, resources)
    gpus = max(engine.gpus, 1)
    decode = engine_decode(cfg, engine, gpu, PROMPT_TOKENS + mean_tokens / 2, 10**9)
    tokens = outputs * mean_tokens
    secs = tokens / (engines * decode.tokens_per_s) + JOB_START_S if decode.fits else math.inf
    return StageEstimate(
        name,
        f"{outputs:.0f} outputs x {mean_tokens:.0f} tokens ({note}); {engines} engines x {gpus} GPUs "
        f"(engine on launch.{resources})",
        tokens,
        secs / 3600,
        secs * engines * gpus / 3600,
        engines * gpus,
    )


def _sft(
    name: str,
    note: str,
    runs: tuple[tuple[Config, Layout, ParamCount, GpuSpec], ...],
    examples: float,
    epochs: float,
    mean_tokens: float,
) -> StageEstimate:
    tokens = examples * epochs * mean_tokens
    wall = gh = 0.0
    for scfg, slayout, spc, sgpu in runs:
        secs = _train_seconds(scfg, slayout, sgpu, spc, tokens, mean_tokens) + JOB_START_S
        wall, gh = wall + secs / 3600, gh + secs * slayout.world / 3600
    return StageEstimate(
        name,
        f"{examples:.0f} examples x {epochs:g} epochs x {mean_tokens:.0f} tokens ({note})",
        tokens * len(runs),
        wall,
        gh,
        max(r[1].world for r in runs),
    )


def sft_examples(cfg: Config) -> int:
    """Size of the SFT set the rejection stage builds: kept reasoning samples + general examples."""
    r = cfg.rejection
    return r.prompts * r.keep_per_prompt + r.general_prompts


def estimate_stages(
    cfg: Config,
    layout: Layout,
    gpu: GpuSpec,
    pc: ParamCount,
    students: tuple[tuple[Config, Layout, ParamCount, GpuSpec], ...] = (),
    stages: tuple[StageAssumption, ...] = R1_STAGES,
) -> list[StageEstimate]:
    """Per-stage estimates from the stage sections of cfg; `distill` runs on `students`."""
    out: list[StageEstimate] = []
    own = ((cfg, layout, pc, gpu),)
    for st in stages:
        f = st.length_fraction
        if st.kind == "grpo":
            step = grpo_step(cfg, layout, gpu, pc, f)
            steps = getattr(cfg, st.name).steps
            out.append(
                StageEstimate(
                    st.name,
                    f"{st.name}.steps={steps}; mean response {f:.0%} of grpo.max_new_tokens ({st.note})",
                    steps * step.train_tokens,
                    steps * step.wall_s / 3600,
                    steps * step.gpu_hours,
                    max(step.train_gpus, step.rollout_gpus),
                )
            )
        elif st.name == "cold_start":
            c = cfg.cold_start
            out.append(
                _sft(
                    st.name,
                    f"{f:.0%} of cold_start.sft.max_len; {st.note}",
                    own,
                    c.examples,
                    c.sft.epochs,
                    f * c.sft.max_len,
                )
            )
        elif st.name == "sft":
            out.append(
                _sft(
                    st.name,
                    f"{f:.0%} of sft.max_len; {st.note}",
                    own,
                    sft_examples(cfg),
                    cfg.sft.epochs,
                    f * cfg.sft.max_len,
                )
            )
        elif st.name == "distill":
            if not students:
                out.append(
                    StageEstimate(st.name, "no student config given (r1hpc plan --students PATH)", 0.0, 0.0, 0.0, 0)
                )
                continue
            d = cfg.distill
            out.append(
                _sft(
                    st.name,
                    f"{f:.0%} of distill.max_len; {len(students)} student(s)",
                    students,
                    sft_examples(cfg),
                    d.epochs,
                    f * d.max_len,
                )
            )
        elif st.name == "rejection":
            r = cfg.rejection
            out.append(
                _generate(
                    st.name,
                    f"rejection.prompts x samples_per_prompt + general_prompts; {f:.0%} of grpo.max_new_tokens",
                    cfg,
                    gpu,
                    "rollout",
                    r.shards,
                    r.prompts * r.samples_per_prompt + r.general_prompts,
                    f * cfg.grpo.max_new_tokens,
                )
            )
        elif st.name == "eval":
            e = cfg.eval
            # eval.problems = 0 is every held-out problem: data.heldout_problems stands in for their count
            problems, which = (
                (e.problems, "eval.problems")
                if e.problems
                else (cfg.data.heldout_problems, "data.heldout_problems (eval.problems=0)")
            )
            # eval.general: the general held-out prompts are sampled k times too (scored by the RM)
            general = cfg.data.general_heldout if e.general else 0
            out.append(
                _generate(
                    st.name,
                    f"({which} + data.general_heldout) x k; {f:.0%} of eval.max_new_tokens"
                    if general
                    else f"{which} x k; {f:.0%} of eval.max_new_tokens",
                    cfg,
                    gpu,
                    "eval",
                    e.shards,
                    (problems + general) * e.k,
                    f * e.max_new_tokens,
                )
            )
        else:
            raise ValueError(f"stage {st.name!r} has no estimate")
    return out
