"""The r1hpc run config's schema: one dataclass per section of configs/*.yaml, every key with its
default and, beside it, what it means. Loaded and checked by r1hpc.config (load_config), whose
cross-key rules live in r1hpc.config_checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
