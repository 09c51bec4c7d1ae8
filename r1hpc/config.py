"""The r1hpc run config: typed dataclasses -> YAML (configs/*.yaml) -> `key=value` overrides.

    cfg = load_config("configs/tiny.yaml", ["grpo.group_size=16", "launch.executor=slurm"])

Unknown keys, wrong types and impossible values are `ConfigError`s naming the file and line (or
the override) and the dotted key. The resolved config, with the code's git revision, is written
into the run directory once (`write_resolved`); a later submit with a different config is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from r1hpc import configio
from r1hpc.configio import ConfigError, Origin, Origins

__all__ = ["Config", "ConfigError", "load_config", "validate", "write_resolved", "code_revision"]

Executor = Literal["local", "slurm", "debug"]


@dataclass
class JobResources:
    """What one job (or one array task) of a kind asks Slurm for."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float = 4.0
    time_min: int = 60
    partition: str = ""  # empty: launch.partition
    array_parallelism: int = 0  # the %N of --array; 0 = no limit


@dataclass
class LaunchConfig:
    """How jobs are submitted. `executor=local` runs each job as a real subprocess here."""

    executor: Executor = "local"
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    # Seconds before the time limit at which a job gets USR2, checkpoints and is requeued.
    signal_delay_s: int = 90
    max_requeues: int = 3
    extra_sbatch: dict[str, str] = field(default_factory=dict)  # e.g. {reservation: r1}
    poll_interval_s: float = 1.0
    train: JobResources = field(default_factory=lambda: JobResources(cpus_per_task=2, mem_gb=8))
    rollout: JobResources = field(default_factory=lambda: JobResources(cpus_per_task=1, mem_gb=4))
    eval: JobResources = field(default_factory=lambda: JobResources(cpus_per_task=1, mem_gb=4))


@dataclass
class ModelConfig:
    """The policy's architecture (used when building from scratch) or the checkpoint to start from."""

    init_from: str = ""  # an HF model directory; empty = the `base` stage pretrains one
    arch: Literal["qwen2", "qwen3_moe", "deepseek_v3"] = "qwen2"
    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    vocab_size: int = 1024
    max_seq_len: int = 512
    tie_embeddings: bool = True
    num_experts: int = 0  # routed experts; 0 = dense
    experts_per_token: int = 0
    num_shared_experts: int = 0


@dataclass
class ParallelConfig:
    """Parallel layout of the trainer. The data-parallel size is what is left of the GPUs."""

    backend: Literal["torch", "deepspeed", "megatron"] = "torch"
    tp: int = 1
    pp: int = 1
    ep: int = 1
    sequence_parallel: bool = False


@dataclass
class GRPOConfig:
    """One GRPO stage's algorithm settings (R1: G=16, 32 prompts/step, KL 0.001)."""

    steps: int = 4
    prompts_per_step: int = 8
    group_size: int = 8
    rollout_shards: int = 2  # array tasks per rollout step
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 1e-4
    micro_batch_size: int = 16
    clip_low: float = 0.2
    clip_high: float = 0.2  # > clip_low: DAPO clip-higher
    dual_clip: float = 0.0  # 0 = off; else c > 1 bounds the loss of negative advantages
    kl_coef: float = 0.001
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = "token-mean"
    scale_adv_by_std: bool = True  # false = Dr. GRPO
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    max_staleness: int = 0  # 1 = rollouts of step N+1 may use v(N) while step N trains


@dataclass
class RewardsConfig:
    """Rule rewards and their weights (names are keys of r1hpc.rewards.REWARD_FUNCS)."""

    weights: dict[str, float] = field(default_factory=lambda: {"accuracy_math": 1.0, "format": 0.5})
    timeout_s: float = 5.0  # per item, enforced by killing the worker
    memory_mb: int = 1024  # address-space limit of each scoring worker


@dataclass
class Provenance:
    """Filled in by write_resolved(); not meant to be set by hand."""

    code_revision: str = ""
    written_at: str = ""
    command: str = ""


@dataclass
class Config:
    name: str = "tiny"
    runs_dir: str = "runs"
    seed: int = 0
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _problems(cfg: Config) -> list[tuple[str, str]]:
    """Every impossible value as (dotted key, what is wrong). Pure; no I/O."""
    out: list[tuple[str, str]] = []

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            out.append((key, msg))

    need(bool(_RUN_NAME.match(cfg.name)), "name",
         f"run name {cfg.name!r} must be 1-64 of letters, digits, '_', '.', '-' (it is a directory and a Slurm job-name field)")
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
        need(res.array_parallelism >= 0, f"launch.{kind}.array_parallelism", f"must be >= 0 (0 = no limit), got {res.array_parallelism}")
        need(res.time_min * 60 > launch.signal_delay_s, f"launch.{kind}.time_min",
             f"{res.time_min} min leaves no time before the requeue signal at launch.signal_delay_s={launch.signal_delay_s}")

    m = cfg.model
    for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size", "max_seq_len"):
        need(getattr(m, name) >= 1, f"model.{name}", f"must be >= 1, got {getattr(m, name)}")
    if m.num_heads >= 1:
        need(m.hidden_size % m.num_heads == 0, "model.hidden_size", f"{m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
    if m.num_kv_heads >= 1:
        need(m.num_heads % m.num_kv_heads == 0, "model.num_kv_heads", f"model.num_heads={m.num_heads} is not divisible by {m.num_kv_heads}")
    need(m.num_experts >= 0, "model.num_experts", f"must be >= 0, got {m.num_experts}")
    if m.num_experts:
        need(1 <= m.experts_per_token <= m.num_experts, "model.experts_per_token",
             f"must be in 1..model.num_experts={m.num_experts}, got {m.experts_per_token}")
    need(m.arch == "qwen2" or m.num_experts > 0, "model.num_experts", f"arch {m.arch!r} is a mixture of experts: set num_experts > 0")

    p = cfg.parallel
    for name in ("tp", "pp", "ep"):
        need(getattr(p, name) >= 1, f"parallel.{name}", f"must be >= 1, got {getattr(p, name)}")
    if p.tp >= 1 and m.num_heads >= 1:
        need(m.num_heads % p.tp == 0, "parallel.tp", f"{p.tp} does not divide model.num_heads={m.num_heads}")
        need(m.num_kv_heads % p.tp == 0 or p.tp % m.num_kv_heads == 0, "parallel.tp",
             f"{p.tp} and model.num_kv_heads={m.num_kv_heads}: one must divide the other")
    if p.pp >= 1 and m.num_layers >= 1:
        need(m.num_layers >= p.pp, "parallel.pp", f"{p.pp} pipeline stages for model.num_layers={m.num_layers}")
    if p.ep > 1:
        need(m.num_experts > 0 and m.num_experts % p.ep == 0, "parallel.ep",
             f"{p.ep} must divide model.num_experts={m.num_experts} (and the model must be MoE)")
    need(not p.sequence_parallel or p.tp > 1, "parallel.sequence_parallel", "needs parallel.tp > 1")
    for name in ("tp", "pp", "ep"):
        need(p.backend == "megatron" or getattr(p, name) == 1, f"parallel.{name}",
             f"{getattr(p, name)} > 1 needs parallel.backend 'megatron', got {p.backend!r}")
    gpus = launch.train.gpus_per_node * launch.train.nodes
    if gpus and p.tp * p.pp >= 1:
        need(gpus % (p.tp * p.pp) == 0, "launch.train.gpus_per_node",
             f"{gpus} training GPUs are not a multiple of parallel.tp*parallel.pp={p.tp * p.pp}")

    g = cfg.grpo
    for name in ("steps", "prompts_per_step", "rollout_shards", "max_new_tokens", "micro_batch_size"):
        need(getattr(g, name) >= 1, f"grpo.{name}", f"must be >= 1, got {getattr(g, name)}")
    need(g.group_size >= 2, "grpo.group_size", f"must be >= 2 (a group of 1 has no relative advantage), got {g.group_size}")
    if g.rollout_shards >= 1:
        need(g.prompts_per_step % g.rollout_shards == 0, "grpo.rollout_shards",
             f"grpo.prompts_per_step={g.prompts_per_step} is not divisible into {g.rollout_shards} shards")
    need(0 < g.temperature <= 10, "grpo.temperature", f"must be in (0, 10], got {g.temperature}")
    need(0 < g.top_p <= 1, "grpo.top_p", f"must be in (0, 1], got {g.top_p}")
    need(0 < g.lr < 1, "grpo.lr", f"must be in (0, 1), got {g.lr}")
    need(0 <= g.clip_low < 1, "grpo.clip_low", f"must be in [0, 1), got {g.clip_low}")
    need(g.clip_high >= 0, "grpo.clip_high", f"must be >= 0, got {g.clip_high}")
    need(g.dual_clip == 0 or g.dual_clip > 1, "grpo.dual_clip", f"must be 0 (off) or > 1, got {g.dual_clip}")
    need(g.kl_coef >= 0, "grpo.kl_coef", f"must be >= 0, got {g.kl_coef}")
    need(g.max_staleness in (0, 1), "grpo.max_staleness", f"must be 0 (on-policy) or 1 (one-step overlap), got {g.max_staleness}")
    if m.max_seq_len >= 1:
        need(g.max_new_tokens < m.max_seq_len, "grpo.max_new_tokens",
             f"{g.max_new_tokens} leaves no room for the prompt in model.max_seq_len={m.max_seq_len}")

    r = cfg.rewards
    need(bool(r.weights), "rewards.weights", "at least one reward is needed")
    for name, weight in r.weights.items():
        need(weight >= 0, f"rewards.weights.{name}", f"must be >= 0, got {weight}")
    need(r.timeout_s > 0, "rewards.timeout_s", f"must be > 0, got {r.timeout_s}")
    need(r.memory_mb >= 64, "rewards.memory_mb", f"must be >= 64, got {r.memory_mb}")
    return out


def _origin_of(key: str, origins: Origins) -> Origin:
    """The closest recorded origin for `key` (or its parent), else the dataclass default."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
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
        lines = [f"{_origin_of(key, origins)}: {key}: {msg}" for key, msg in problems]
        raise ConfigError(lines[0] if len(lines) == 1 else f"{len(lines)} config errors:\n  " + "\n  ".join(lines))
    return cfg


def _reward_name_problems(cfg: Config) -> list[tuple[str, str]]:
    # Imported here: the reward modules are heavier than the config and not needed to parse it.
    from r1hpc.rewards import REWARD_FUNCS
    from r1hpc.rewards.combine import validate_weights

    try:
        validate_weights(cfg.rewards.weights, REWARD_FUNCS, where="rewards.weights")
    except ValueError as e:
        key, _, message = str(e).partition(": ")
        return [(key, message)]
    return []


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Load, override and validate. The main entry point for jobs and the CLI."""
    cfg, origins = configio.load(Config, path, overrides)
    return validate(cfg, origins)


def code_revision() -> str:
    """`git` sha of the code (with '-dirty' if the tree has changes), or 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _without_provenance(cfg: Config) -> dict:
    data = configio.to_dict(cfg)
    data.pop("provenance")
    return data


def write_resolved(cfg: Config, argv: list[str] | None = None) -> Path:
    """Write <run>/config.yaml once. Re-submitting the same config is fine (resume); a different
    config for an existing run is refused with the keys that differ."""
    from r1hpc.fsio import atomic_write_text

    path = cfg.run_dir / "config.yaml"
    if path.exists():
        existing, _ = configio.load(Config, path)
        old, new = _flatten(_without_provenance(existing)), _flatten(_without_provenance(cfg))
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:8])
            raise ConfigError(f"{path}: run '{cfg.name}' exists with a different config ({shown}); "
                              "use a new run name, or the same config to resume")
        return path
    stamped = dataclasses.replace(cfg, provenance=Provenance(
        code_revision=code_revision(),
        written_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(argv if argv is not None else sys.argv),
    ))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "# r1hpc resolved config: written once at submit time\n" + configio.to_yaml(stamped))
    return path


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config of an existing run (what every job of the run reads)."""
    cfg, origins = configio.load(Config, Path(run_dir) / "config.yaml")
    return validate(cfg, origins)
