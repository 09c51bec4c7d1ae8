"""What the user brings, checked before any job is submitted: dataset files, released checkpoints
and their tokenizers, the chat template, custom rewards; whether the generation engine (config
`engine`) holds the model on the GPUs it is given (the planner's memory model, r1hpc.plan.engine);
whether the stage jobs run the trainer backend the config names, and whether the ones that train as
one process can hold the model on one GPU (r1hpc.plan.one_process).

`r1hpc run` and `r1hpc preflight` call `check_inputs(cfg)`; every problem is one line naming the
file (and row) or the config key, and what was expected. A run whose inputs fail here submits
nothing and writes nothing but its resolved config.
"""

from __future__ import annotations

from r1hpc.config import Config, ConfigError

__all__ = ["input_problems", "check_inputs"]


def input_problems(cfg: Config) -> list[str]:
    """Every problem with the run's inputs, one line each (reads the files; loads no weights)."""
    from r1hpc.datasets import source_problems
    from r1hpc.model.checkpoint import checkpoint_problems  # transformers: only when a run is submitted
    from r1hpc.plan.engine import engine_memory_problems
    from r1hpc.plan.one_process import one_process_memory_problems
    from r1hpc.rewards.custom import custom_reward_problems

    memory = [f"{key}: {msg}" for key, msg in (*engine_memory_problems(cfg), *one_process_memory_problems(cfg))]
    return [
        *_backend_problems(cfg),
        *memory,
        *checkpoint_problems(cfg),
        *custom_reward_problems(cfg),
        *source_problems(cfg),
    ]


def _backend_problems(cfg: Config) -> list[str]:
    """What the stage jobs cannot run with the configured backend: refused rather than silently
    trained as one plain-torch process (a 7B student would wait in the queue, then run out of
    memory). DeepSpeed runs the SFT stages only (r1hpc.stages.sft_deepspeed), on one node; Megatron
    the GRPO stages on every node of launch.train and the teacher's SFT stages on one
    (r1hpc.stages.sft_megatron), whose ranks must hold whole model replicas."""
    from r1hpc import recipe

    if cfg.parallel.backend == "megatron":
        return _megatron_problems(cfg)
    if cfg.parallel.backend != "deepspeed":
        return []

    problems = []
    grpo = [e.name for e in recipe.of_kind("grpo") if getattr(cfg, e.section).steps > 0]
    if grpo:
        problems.append(
            f"parallel.backend: 'deepspeed' trains the SFT stages (cold_start, sft, distill) but not GRPO: "
            f"the train jobs of {', '.join(grpo)} would run as one plain torch process; expected "
            f"'megatron' (or 'torch' for a model one process holds), or their steps set to 0"
        )
    if cfg.launch.train.nodes > 1:
        problems.append(
            f"launch.train.nodes: {cfg.launch.train.nodes} with parallel.backend 'deepspeed': a DeepSpeed SFT "
            f"job runs its ranks on one node (torchrun); expected 1 (ranks: launch.train.tasks_per_node)"
        )
    if cfg.parallel.zero_stage not in (1, 2, 3):
        problems.append(
            f"parallel.zero_stage: {cfg.parallel.zero_stage} with parallel.backend 'deepspeed': expected 1, 2 or 3 "
            f"(stage 0 is plain data parallelism: use backend 'torch')"
        )
    return problems


def _megatron_problems(cfg: Config) -> list[str]:
    """The teacher's architecture (the converter takes DeepseekV3) and the one-node SFT layout."""
    import json
    from pathlib import Path

    from r1hpc import recipe

    problems = []
    m = cfg.model
    config_json = Path(m.init_from) / "config.json" if m.init_from else None
    if config_json is None:
        arch, what = m.arch, f"model.arch is {m.arch!r}"
    elif config_json.is_file():  # a missing or unreadable one is checkpoint_problems' to report
        try:
            arch = json.loads(config_json.read_text()).get("model_type")
        except (OSError, ValueError):
            arch = "deepseek_v3"
        what = f"model.init_from {m.init_from} is a {arch!r} checkpoint ({config_json}: model_type)"
    else:
        arch = "deepseek_v3"
    if arch != "deepseek_v3":
        problems.append(
            f"parallel.backend: 'megatron' trains DeepseekV3 models (r1hpc/megatron/hf_convert.py), but {what}; "
            f"expected 'deepseek_v3', or backend 'torch' / 'deepspeed'"
        )
    p, ranks = cfg.parallel, cfg.launch.train.tasks_per_node
    if ranks % (p.tp * p.pp):
        sft = [e.name for e in recipe.STAGES if e.kind == "sft" and not e.student]
        problems.append(
            f"launch.train.tasks_per_node: {ranks} with parallel.backend 'megatron': {', '.join(sft)} train "
            f"in the ranks of one node, which must be a multiple of parallel.tp x parallel.pp = {p.tp * p.pp}"
        )
    return problems


def check_inputs(cfg: Config) -> None:
    """Raise ConfigError listing every input problem; return quietly when there is none."""
    problems = input_problems(cfg)
    if problems:
        raise ConfigError(
            problems[0] if len(problems) == 1 else f"{len(problems)} input errors:\n  " + "\n  ".join(problems)
        )
