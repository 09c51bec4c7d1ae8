"""The trainer's parallel layout: group sizes, the pipeline split, and every rule it breaks.

Megatron-core's rules (parallel_state.initialize_model_parallel, TransformerConfig, 0.16):
- dense part:  world = tp * cp * dp * pp            -> world % (tp*pp*cp) == 0
- expert part: world = expert_tp * ep * edp * pp    -> world % (expert_tp*ep*pp) == 0
  ("MoE parallel folding": EP is carved out of the same GPUs as DP*CP*TP, so ep may exceed dp;
  the expert data-parallel size edp is what the expert weights' optimizer states shard over.)
- num_experts % ep == 0; ep > 1 and tp > 1 need sequence_parallel; vpp > 1 needs pp > 1.
DeepSpeed (ZeRO) and plain torch here are data parallel only: tp = pp = ep = cp = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from r1hpc.config import Config

__all__ = ["Layout", "LayoutError", "make_layout", "pipeline_split", "layout_problems"]


class LayoutError(ValueError):
    """An impossible layout; the message lists every problem with the config key to change."""


@dataclass(frozen=True)
class Layout:
    world: int  # training GPUs
    tp: int
    pp: int
    cp: int
    dp: int
    ep: int
    expert_tp: int
    edp: int  # expert data-parallel size
    vpp: int
    stage_layers: tuple[int, ...]  # transformer layers on each pipeline stage
    gpus_per_node: int
    nodes: int


def pipeline_split(num_layers: int, pp: int, first: int = 0, last: int = 0) -> tuple[int, ...]:
    """Layers per pipeline stage. With `first`/`last` (parallel.first_stage_layers /
    last_stage_layers, Megatron's num_layers_in_first/last_pipeline_stage) those stages get them and
    the middle stages split the rest evenly. Without, balanced with the remainder on the middle
    stages, because the first stage also holds the embedding and the most in-flight activations
    and the last stage holds the head (+ MTP)."""
    if (first or last) and pp > 1:
        head = first or None
        tail = last or None
        inner = pp - (head is not None) - (tail is not None)
        rest = num_layers - (head or 0) - (tail or 0)
        if inner == 0:
            return tuple(x for x in (head, tail) if x is not None) if rest == 0 else ()
        if rest <= 0 or rest % inner:
            return ()  # layout_problems reports it
        return tuple(([head] if head else []) + [rest // inner] * inner + ([tail] if tail else []))
    base, extra = divmod(num_layers, pp)
    split = [base] * pp
    middle = list(range(1, pp - 1)) or list(range(pp))
    for i in range(extra):
        split[middle[i % len(middle)]] += 1
    return tuple(split)


def layout_problems(cfg: Config) -> list[tuple[str, str]]:
    """(key, what is wrong) for every rule of the module docstring the config breaks."""
    p, m, res = cfg.parallel, cfg.model, cfg.launch.train
    out: list[tuple[str, str]] = []

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            out.append((key, msg))

    if p.first_stage_layers or p.last_stage_layers:
        need(
            bool(pipeline_split(m.num_layers, p.pp, p.first_stage_layers, p.last_stage_layers)),
            "parallel.first_stage_layers",
            f"first {p.first_stage_layers} + last {p.last_stage_layers} layers leave "
            f"{m.num_layers - p.first_stage_layers - p.last_stage_layers} of model.num_layers={m.num_layers} "
            f"not divisible evenly over the middle stages of parallel.pp={p.pp}",
        )
    world = res.nodes * res.gpus_per_node
    need(
        world >= 1,
        "launch.train.gpus_per_node",
        f"the planner needs training GPUs; got nodes={res.nodes} x gpus_per_node={res.gpus_per_node}",
    )
    need(
        p.backend == "torch" or res.gpus_per_node == 0 or res.tasks_per_node == res.gpus_per_node,
        "launch.train.tasks_per_node",
        f"{res.tasks_per_node}: parallel.backend {p.backend!r} runs one rank per GPU; set it to "
        f"launch.train.gpus_per_node={res.gpus_per_node}",
    )
    sizes = {k: getattr(p, k) for k in ("tp", "pp", "cp", "ep", "expert_tp", "vpp")}
    bad = [k for k, v in sizes.items() if v < 1]
    for k in bad:
        out.append((f"parallel.{k}", f"must be >= 1, got {sizes[k]}"))
    if world < 1 or bad:
        return out
    if p.backend != "megatron":
        for k in ("tp", "pp", "cp", "ep", "expert_tp"):
            need(
                sizes[k] == 1,
                f"parallel.{k}",
                f"{sizes[k]} > 1 needs parallel.backend 'megatron' ({p.backend} is data parallel only)",
            )
    model = p.tp * p.pp * p.cp
    need(
        world % model == 0,
        "parallel.tp",
        f"training GPUs {world} (launch.train.nodes={res.nodes} x gpus_per_node={res.gpus_per_node}) are not divisible "
        f"by parallel.tp*pp*cp = {p.tp}*{p.pp}*{p.cp} = {model}",
    )
    if m.num_experts > 0:
        expert = p.expert_tp * p.ep * p.pp
        need(
            world % expert == 0,
            "parallel.ep",
            f"training GPUs {world} are not divisible by parallel.expert_tp*ep*pp = "
            f"{p.expert_tp}*{p.ep}*{p.pp} = {expert}",
        )
        need(m.num_experts % p.ep == 0, "parallel.ep", f"{p.ep} does not divide model.num_experts={m.num_experts}")
        fe = m.moe_intermediate_size or m.intermediate_size
        need(fe % p.expert_tp == 0, "parallel.expert_tp", f"{p.expert_tp} does not divide the expert size {fe}")
        need(
            not (p.ep > 1 and p.tp > 1) or p.sequence_parallel,
            "parallel.sequence_parallel",
            "Megatron requires sequence parallelism when both parallel.ep and parallel.tp are > 1",
        )
    else:
        need(p.ep == 1, "parallel.ep", f"{p.ep} > 1 but the model is dense (model.num_experts=0)")
        need(p.expert_tp == 1, "parallel.expert_tp", f"{p.expert_tp} > 1 but the model is dense")
    need(
        p.tp <= max(res.gpus_per_node, 1),
        "parallel.tp",
        f"{p.tp} spans more than one node (launch.train.gpus_per_node={res.gpus_per_node}); TP needs NVLink",
    )
    need(m.num_heads % p.tp == 0, "parallel.tp", f"{p.tp} does not divide model.num_heads={m.num_heads}")
    need(p.pp <= m.num_layers, "parallel.pp", f"{p.pp} stages for model.num_layers={m.num_layers}")
    need(p.vpp == 1 or p.pp > 1, "parallel.vpp", f"{p.vpp} virtual stages need parallel.pp > 1")
    if p.pp <= m.num_layers:
        smallest = min(pipeline_split(m.num_layers, p.pp))
        need(
            smallest % p.vpp == 0,
            "parallel.vpp",
            f"{p.vpp} does not divide the {smallest} layers of the smallest pipeline stage",
        )
    need(not p.sequence_parallel or p.tp > 1, "parallel.sequence_parallel", "needs parallel.tp > 1")
    if world % model == 0:
        dp = world // model
        g = cfg.grpo
        seqs = g.prompts_per_step * g.group_size
        need(
            seqs % (g.mini_batches * dp * g.micro_batch_size) == 0,
            "grpo.micro_batch_size",
            f"a step's {seqs} sequences (grpo.prompts_per_step*group_size) do not split into grpo.mini_batches="
            f"{g.mini_batches} x data-parallel size {dp} x micro-batches of {g.micro_batch_size}",
        )
    return out


def make_layout(cfg: Config) -> Layout:
    """The layout of `cfg`'s training job; LayoutError listing every broken rule."""
    problems = layout_problems(cfg)
    if problems:
        lines = [f"{key}: {msg}" for key, msg in problems]
        raise LayoutError(f"{len(lines)} layout problem(s):\n  " + "\n  ".join(lines))
    p, res = cfg.parallel, cfg.launch.train
    world = res.nodes * res.gpus_per_node
    moe = cfg.model.num_experts > 0
    return Layout(
        world=world,
        tp=p.tp,
        pp=p.pp,
        cp=p.cp,
        dp=world // (p.tp * p.pp * p.cp),
        ep=p.ep if moe else 1,
        expert_tp=p.expert_tp if moe else 1,
        edp=world // (p.expert_tp * p.ep * p.pp) if moe else 1,
        vpp=p.vpp,
        stage_layers=pipeline_split(cfg.model.num_layers, p.pp, p.first_stage_layers, p.last_stage_layers),
        gpus_per_node=res.gpus_per_node,
        nodes=res.nodes,
    )
