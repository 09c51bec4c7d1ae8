"""FLOPs per token, the decode (rollout) throughput model, and the pretraining calibration.

Training FLOPs per token = 3 x forward (backward = 2 x forward), forward =
  2 * matmul-active parameters (+ the MTP modules and their pass through the shared head)
  + 2 * layers * heads * (qk_dim + v_dim) * seq/2   (causal attention scores and weighted sum;
    a token attends to seq/2 positions on average)
Time = FLOPs / (GPUs * peak bf16 * MFU), MFU stated (TRAIN_MFU, calibrated below).

Decode (vLLM, one engine per rollout array task over all its GPUs): every decode step of a batch
of B sequences reads the dense weights, the experts the batch touches (each token picks k of E:
a fraction 1 - (1 - k/E)^B of them) and the KV cache of every sequence, and does 2 * active * B
FLOPs; step time = max(bytes / (GPUs * HBM * DECODE_BW_EFF), FLOPs / (GPUs * peak * DECODE_MFU),
DECODE_STEP_FLOOR_S). B is what the KV cache memory holds (vLLM gpu_memory_utilization 0.9) at the
mean context prompt + response/2. Weights and cache take the bytes of the engine's dtype (config
engine.dtype, r1hpc.plan.engine; bf16 by default). With pipeline parallelism the batch is split
into pp micro-batches that keep every stage busy (the step time above), but one lone sequence
(the tail of a rollout) passes the pp stages one after another, each reading its weights with its
own tp GPUs: its memory and compute terms take pp times as long (the floor, which counts per layer
kernel launches and TP collectives, does not grow with pp).
"""

from __future__ import annotations

from dataclasses import dataclass

from r1hpc.config import ModelConfig
from r1hpc.plan.hardware import GPUS, GpuSpec
from r1hpc.plan.params import ParamCount, count_params, kv_cache_elems_per_token

__all__ = [
    "TRAIN_MFU",
    "DECODE_MFU",
    "DECODE_BW_EFF",
    "DECODE_STEP_FLOOR_S",
    "VLLM_MEMORY_UTILIZATION",
    "train_flops_per_token",
    "forward_flops_per_token",
    "Decode",
    "decode_model",
    "Calibration",
    "calibrate",
    "V3_REFERENCE",
    "ROLLOUT_WEIGHT_BYTES",
]

TRAIN_MFU = 0.40  # of dense bf16 peak; reproduces DeepSeek-V3's pretraining GPU-hours (calibrate())
DECODE_MFU = 0.30  # compute-bound ceiling for large decode batches
DECODE_BW_EFF = 0.60  # achieved / peak HBM bandwidth in decode kernels
DECODE_STEP_FLOOR_S = 0.010  # scheduling, kernel launches and TP/EP collectives per decode step
VLLM_MEMORY_UTILIZATION = 0.90  # vLLM's default gpu_memory_utilization
ROLLOUT_WEIGHT_BYTES = 2  # bf16 policy weights in the engine (the trainer publishes bf16)

# DeepSeek-V3 as published (config.json of deepseek-ai/DeepSeek-V3; report table 1).
V3_REFERENCE = ModelConfig(
    arch="deepseek_v3",
    num_layers=61,
    hidden_size=7168,
    num_heads=128,
    num_kv_heads=128,
    intermediate_size=18432,
    vocab_size=129280,
    max_seq_len=4096,
    tie_embeddings=False,
    num_experts=256,
    experts_per_token=8,
    num_shared_experts=1,
    moe_intermediate_size=2048,
    first_dense_layers=3,
    attention="mla",
    q_lora_rank=1536,
    kv_lora_rank=512,
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    mtp_layers=1,
)
V3_PRETRAIN_TOKENS = 14.8e12
V3_PRETRAIN_SEQ = 4096
V3_PRETRAIN_GPU_HOURS = 2.664e6  # H800, DeepSeek-V3 report table 1


def _attention_dims(m: ModelConfig) -> int:
    if m.attention == "mla":
        return m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim
    return 2 * (m.hidden_size // m.num_heads)


def forward_flops_per_token(m: ModelConfig, pc: ParamCount, seq_len: float, with_mtp: bool = True) -> float:
    """Forward FLOPs per token of sequences of `seq_len` tokens (causal)."""
    matmul = pc.matmul_active
    layers = m.num_layers
    if with_mtp and m.mtp_layers:
        matmul += pc.mtp_active + m.mtp_layers * m.vocab_size * m.hidden_size  # + the shared head
        layers += m.mtp_layers
    return 2.0 * matmul + 2.0 * layers * m.num_heads * _attention_dims(m) * seq_len / 2.0


def train_flops_per_token(m: ModelConfig, pc: ParamCount, seq_len: float) -> float:
    return 3.0 * forward_flops_per_token(m, pc, seq_len)


@dataclass(frozen=True)
class Decode:
    """One vLLM engine's decode throughput."""

    gpus: int
    weight_bytes: float  # per engine
    kv_bytes_per_token: float
    batch: int  # concurrent sequences the KV cache holds (0: the weights do not fit)
    step_s: float  # one decode step at that batch
    tokens_per_s: float
    single_step_s: float  # one decode step of a lone sequence (the tail of a rollout)

    @property
    def fits(self) -> bool:
        return self.batch >= 1


def _step_time(
    m: ModelConfig,
    pc: ParamCount,
    gpu: GpuSpec,
    gpus: int,
    batch: int,
    ctx: float,
    wbytes: float,
    kvbytes: float,
    serial: int = 1,
) -> float:
    """One decode step; `serial`: pipeline stages the batch passes one after another."""
    touched = 1.0 - (1.0 - m.experts_per_token / m.num_experts) ** batch if m.num_experts else 0.0
    weights = (pc.total - pc.experts + touched * pc.experts) * wbytes
    kv = batch * ctx * kv_cache_elems_per_token(m) * kvbytes
    memory_s = (weights + kv) / (gpus * gpu.hbm_tb_s * 1e12 * DECODE_BW_EFF)
    compute_s = (
        batch * forward_flops_per_token(m, pc, 2 * ctx, with_mtp=False) / (gpus * gpu.bf16_tflops * 1e12 * DECODE_MFU)
    )
    return max(serial * memory_s, serial * compute_s, DECODE_STEP_FLOOR_S)


def decode_model(
    m: ModelConfig,
    gpu: GpuSpec,
    gpus: int,
    mean_context: float,
    max_batch: int,
    weight_bytes: float | None = None,
    kv_bytes_per_elem: float = 2.0,
    pp: int = 1,
) -> Decode:
    """Throughput of one engine on `gpus` GPUs with sequences of `mean_context` tokens on average;
    at most `max_batch` sequences at a time (the sequences the task has). weight_bytes: the
    engine's weights (default: bf16, ROLLOUT_WEIGHT_BYTES per parameter); kv_bytes_per_elem: its
    KV cache's element size; pp: its pipeline stages (the lone sequence's step, module docstring)."""
    pc = count_params(m)
    weight_bytes = pc.total * ROLLOUT_WEIGHT_BYTES if weight_bytes is None else weight_bytes
    wbytes = weight_bytes / pc.total
    kv_per_token = kv_cache_elems_per_token(m) * kv_bytes_per_elem
    free = gpus * gpu.memory_bytes * VLLM_MEMORY_UTILIZATION - weight_bytes
    batch = int(max(0.0, free) // (kv_per_token * max(mean_context, 1.0)))
    batch = min(batch, max_batch)
    if batch < 1:
        return Decode(gpus, weight_bytes, kv_per_token, 0, float("inf"), 0.0, float("inf"))
    step = _step_time(m, pc, gpu, gpus, batch, mean_context, wbytes, kv_bytes_per_elem)
    single = _step_time(m, pc, gpu, gpus, 1, mean_context, wbytes, kv_bytes_per_elem, serial=pp)
    return Decode(gpus, weight_bytes, kv_per_token, batch, step, batch / step, single)


@dataclass(frozen=True)
class Calibration:
    """DeepSeek-V3 pretraining: the planner's estimate against the published GPU-hours."""

    mfu: float
    estimate_gpu_hours: float
    published_gpu_hours: float
    implied_mfu: float  # the MFU that reproduces the published figure exactly

    @property
    def error(self) -> float:
        return self.estimate_gpu_hours / self.published_gpu_hours - 1.0

    def line(self) -> str:
        return (
            f"calibration: DeepSeek-V3 pretraining, {V3_PRETRAIN_TOKENS / 1e12:.1f}T tokens "
            f"x seq {V3_PRETRAIN_SEQ} on H800 "
            f"at MFU {self.mfu:.0%} -> {self.estimate_gpu_hours / 1e6:.3f}M GPU-h vs published "
            f"{self.published_gpu_hours / 1e6:.3f}M ({self.error:+.1%}); MFU reproducing it: {self.implied_mfu:.1%}"
        )


def calibrate(mfu: float = TRAIN_MFU) -> Calibration:
    m = V3_REFERENCE
    flops = train_flops_per_token(m, count_params(m), V3_PRETRAIN_SEQ) * V3_PRETRAIN_TOKENS
    per_gpu = GPUS["h800"].bf16_tflops * 1e12
    estimate = flops / (per_gpu * mfu) / 3600.0
    implied = flops / (V3_PRETRAIN_GPU_HOURS * 3600.0) / per_gpu
    return Calibration(mfu, estimate, V3_PRETRAIN_GPU_HOURS, implied)
