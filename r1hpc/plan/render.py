"""Text rendering of a Plan, and `main` of `r1hpc plan CONFIG [overrides] [--students PATH]`."""

from __future__ import annotations

import argparse
import sys

from r1hpc import recipe
from r1hpc.config import Config, ConfigError, load_config
from r1hpc.plan import flops, memory, stages
from r1hpc.plan.plan import Plan, PlanError, make_plan

__all__ = ["render", "sbatch_lines", "main"]

_G = 1e9


def _gib(x: float) -> str:
    return f"{x / 2**30:8.1f}"


def _section(title: str) -> list[str]:
    return ["", f"== {title} " + "=" * max(0, 70 - len(title))]


def sbatch_lines(cfg: Config, kind: str, stage: str, array_size: int = 0, dependency: str | None = None) -> list[str]:
    """The #SBATCH lines of the script the slurm executor would submit (r1hpc.launch.render_sbatch)
    and its engine note."""
    from r1hpc.launch import render_sbatch

    # The GRPO train job runs one process per rank (Megatron); the arrays one per engine worker.
    script = render_sbatch(
        cfg,
        kind=kind,
        stage=stage,
        step=0,
        array_size=array_size,
        dependency=dependency,
        distributed=kind == "train" and cfg.parallel.backend == "megatron",
    )
    return [line for line in script.splitlines() if line.startswith(("#SBATCH", "# engine"))]


def render(plan: Plan, cfg: Config) -> str:
    pc, lay, m = plan.params, plan.layout, cfg.model
    out = [f"r1hpc plan: {plan.name} on {lay.nodes} x {lay.gpus_per_node} {plan.gpu.name} (training job)"]
    out += _section("model")
    out.append(
        f"parameters {pc.total / _G:.2f}B total, {pc.active / _G:.2f}B active per token"
        + (f", + {pc.mtp / _G:.2f}B in {m.mtp_layers} MTP module(s)" if pc.mtp else "")
    )
    out.append(
        f"  embedding {pc.embedding / _G:.3f}B, head {pc.head / _G:.3f}B{' (tied)' if not pc.head else ''}, "
        f"attention ({m.attention}) {pc.attention_per_layer / 1e6:.1f}M/layer, "
        f"{pc.dense_layers} dense + {pc.moe_layers} MoE layers"
    )
    if pc.moe_layers:
        out.append(
            f"  experts {pc.experts / _G:.1f}B ({m.num_experts} x {pc.one_expert / 1e6:.1f}M per layer, "
            f"{m.experts_per_token} routed + {m.num_shared_experts} shared active)"
        )

    out += _section("layout")
    out.append(
        f"world {lay.world} = tp {lay.tp} x pp {lay.pp} x cp {lay.cp} x dp {lay.dp}"
        + (f"; experts: expert_tp {lay.expert_tp} x ep {lay.ep} x edp {lay.edp} x pp {lay.pp}" if pc.moe_layers else "")
    )
    out.append(
        f"layers per stage {list(lay.stage_layers)}; vpp {lay.vpp}; backend {cfg.parallel.backend}; "
        f"recompute {cfg.parallel.recompute}; sequence_parallel {cfg.parallel.sequence_parallel}"
    )
    out.append(
        f"largest micro-batch: {plan.workload}, {plan.micro_batch_size} x {plan.seq_len} tokens (grpo: prompt "
        f"{stages.PROMPT_TOKENS} + grpo.max_new_tokens; sft: max_len); {plan.micro_batches} micro-batches per dp rank "
        "per GRPO update"
    )

    out += _section("memory per GPU (GiB)")
    out.append("stage layers   params    weights   grads  optimizer activations logits    total  usable  fits")
    for s in plan.memory:
        out.append(
            f"{s.stage:5d} {s.layers:6d} {s.params / _G:7.2f}B {_gib(s.weights)} {_gib(s.grads)} {_gib(s.optimizer)}"
            f"  {_gib(s.activations)} {_gib(s.logits)} {_gib(s.total)} {_gib(s.capacity)}  {'yes' if s.fits else 'NO'}"
        )
    out.append(f"  states, bytes/param: {memory.STATES_NOTE}")
    out.append(
        f"  activations: Korthikanti et al. 2022 per-token terms, flash attention, recompute "
        f"{cfg.parallel.recompute!r}; {memory.RESERVE_GIB:g} GiB per GPU reserved (CUDA context, NCCL, fragmentation)"
    )

    for sm in plan.students:
        pk = sm.peak
        out.append(
            f"student {sm.name}: {sm.params.total / _G:.2f}B params, {sm.layout.nodes} x {sm.layout.gpus_per_node} "
            f"{sm.gpu.name}, dp {sm.layout.dp}, distill micro-batch {sm.micro_batch_size} x {sm.seq_len} tokens: "
            f"weights {_gib(pk.weights).strip()} "
            f"+ grads {_gib(pk.grads).strip()} + optimizer {_gib(pk.optimizer).strip()} + activations "
            f"{_gib(pk.activations).strip()} + logits {_gib(pk.logits).strip()} = {_gib(pk.total).strip()} GiB of "
            f"{_gib(pk.capacity).strip()}: {'fits' if pk.fits else 'DOES NOT FIT'}"
        )

    st = plan.step
    d = st.decode
    out += _section("one GRPO step (r1_zero response length)")
    out.append(
        f"{st.sequences} sequences (prompts_per_step x group_size), mean response {st.mean_response:.0f} tokens, "
        f"{st.train_tokens / 1e6:.2f}M training tokens"
    )
    ro = plan.engines["rollout"]
    out.append(
        f"rollout: {cfg.grpo.rollout_shards} tasks x {d.gpus} GPUs, one vLLM engine each: {ro.dtype} weights "
        f"{d.weight_bytes / _G:.0f} GB, KV {d.kv_bytes_per_token / 1e3:.1f} kB/token, batch {d.batch}, "
        f"{d.step_s * 1e3:.1f} ms/decode step, {d.tokens_per_s:.0f} tok/s/engine"
    )
    for kind, lay in plan.engines.items():
        out.append(f"  engine of the {kind} tasks: {lay.describe()}")
    out.append(
        f"  decode {st.rollout_decode_s:.0f} s, tail (one sequence to max_new_tokens) {st.rollout_tail_s:.0f} s, "
        f"start + weight load {st.rollout_io_s:.0f} s -> {st.rollout_s:.0f} s"
    )
    out.append(
        f"train: compute {st.train_compute_s:.0f} s at MFU {flops.TRAIN_MFU:.0%} (+{st.bubble:.0%} pipeline bubble), "
        f"start + checkpoint load/save/publish {st.train_io_s:.0f} s -> {st.train_s:.0f} s"
    )
    out.append(f"step: {st.wall_s:.0f} s wall, {st.gpu_hours:.1f} GPU-h")

    out += _section(f"R1 stages on {plan.gpu_type.upper()} (GPU-hours = GPUs x wall of every job)")
    out.append(f"{'stage':13s} {'tokens':>9s} {'wall h':>9s} {'GPU-h':>10s} {'GPUs':>5s}  assumption")
    total = 0.0
    for e in plan.stages:
        total += e.gpu_hours
        out.append(f"{e.name:13s} {e.tokens / _G:8.1f}B {e.wall_h:9.1f} {e.gpu_hours:10.0f} {e.gpus:5d}  {e.note}")
    rl = sum(e.gpu_hours for e in plan.stages if recipe.stage(e.name).kind == "grpo")
    out.append(f"{'total':13s} {'':9s} {'':9s} {total:10.0f}")
    out.append(f"  RL stages {rl:.0f} GPU-h (published R1 RL: about 147k H800 GPU-h)")
    out.append(
        "  assumptions: training FLOPs = 3 x (2 x matmul-active params + causal attention) per token; old-policy "
        "log-probs: +1 forward when grpo.mini_batches > 1, +1 for the reference model when grpo.kl_coef > 0; "
        f"decode: HBM efficiency {flops.DECODE_BW_EFF:.0%}, MFU {flops.DECODE_MFU:.0%}, floor "
        f"{flops.DECODE_STEP_FLOOR_S * 1e3:.0f} ms/step, vLLM memory {flops.VLLM_MEMORY_UTILIZATION:.0%}; "
        f"shared FS {stages.FS_GB_S:.0f} GB/s; {stages.JOB_START_S:.0f} s start-up per job; "
        f"mean prompt {stages.PROMPT_TOKENS} tokens"
    )
    out.append(plan.calibration.line())

    out += _section("sbatch: train job")
    out += sbatch_lines(cfg, "train", "r1_zero", dependency="afterok:<rollout array>")
    out += _section(f"sbatch: rollout array ({cfg.grpo.rollout_shards} tasks; rejection: {cfg.rejection.shards})")
    out += sbatch_lines(cfg, "rollout", "r1_zero", array_size=cfg.grpo.rollout_shards)
    out += _section(f"sbatch: eval array ({cfg.eval.shards} tasks)")
    out += sbatch_lines(cfg, "eval", "eval", array_size=cfg.eval.shards)

    out += _section("verdict")
    out += [f"WARNING: {w}" for w in plan.warnings]
    out.append("fits: yes" if plan.fits else "fits: NO (see the warnings)")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the plan; 0 if it fits, 1 if it does not, 2 for a config or layout error."""
    parser = argparse.ArgumentParser(prog="r1hpc plan", description=__doc__)
    parser.add_argument("config", help="a YAML config, e.g. configs/deepseek_v3_671b.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. parallel.pp=8")
    parser.add_argument(
        "--students", action="append", default=[], help="a student config (YAML) for the distill stage; repeatable"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
        students = tuple(load_config(path) for path in args.students)
        plan = make_plan(cfg, students)
    except (ConfigError, PlanError) as e:
        print(f"r1hpc plan: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(render(plan, cfg))
    return 0 if plan.fits else 1
