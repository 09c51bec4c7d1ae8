"""Training memory per GPU, per pipeline stage: weights, gradients, optimizer states, activations.

Model states (bytes per parameter; Megatron's distributed-optimizer table, ZeRO paper):
  megatron:  bf16 weights 2 + fp32 main grads 4 + Adam (fp32 master, m, v) 12 / shards
             shards = dp*cp for dense weights, edp for expert weights (distributed_optimizer), else 1
  deepspeed: bf16 weights 2 + bf16 grads 2 + 12 / dp (ZeRO-1 when distributed_optimizer, else 1)
  torch:     fp32 weights 4 + fp32 grads 4 + Adam m, v 8, unsharded
Dense weights are split over TP, expert weights over EP * expert_tp, layers over PP; the first
stage adds the embedding, the last the head, final norm and MTP modules.

Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models", adapted): bytes = 2 (bf16) * tokens * sum of stored elements per token of each layer,
listed term by term in `activation_terms` for GQA/MLA attention and dense/MoE MLP. Flash attention
is assumed, so no s^2 softmax terms. Terms inside TP-split matmuls are / tp; the norm/residual
terms are / tp only with sequence parallel; tokens per GPU = micro_batch * seq / cp.
  recompute none:      every term.
  recompute selective: Megatron's recompute_modules (layernorm, mla_up_proj, moe_act, core_attn):
                       normed copies, MLA's up-projected q/k/v and activation-function outputs are
                       recomputed, so not stored.
  recompute full:      only each layer's input (h per token) is stored; one layer's full set is
                       rebuilt at a time during backward (added once).
Pipeline 1F1B: stage i holds min(pp - i, micro-batches) micro-batches in flight; interleaving
(vpp > 1) adds (pp-1)/vpp on stage 0. The last stage adds the logits: tokens * vocab / tp * 6 bytes
(bf16 logits + fp32 copy for the softmax), once per output head (main + MTP).
"""

from __future__ import annotations

from dataclasses import dataclass

from r1hpc.config import Config, ModelConfig
from r1hpc.plan.hardware import GIB, GpuSpec
from r1hpc.plan.layout import Layout
from r1hpc.plan.params import ParamCount

__all__ = [
    "StageMemory",
    "activation_terms",
    "layer_activation_bytes",
    "stage_memory",
    "state_bytes_per_param",
    "RESERVE_GIB",
    "STATES_NOTE",
]

STATES_NOTE = (
    "megatron bf16 weights 2 + fp32 grads 4 + Adam 12 / (dp*cp dense, edp experts); "
    "deepspeed 2 + 2 + 12 / dp (ZeRO-1); torch 16 unsharded"
)

# Left free for the CUDA context, NCCL buffers and allocator fragmentation.
RESERVE_GIB = 6.0


@dataclass(frozen=True)
class StageMemory:
    """Bytes per GPU on one pipeline stage."""

    stage: int
    layers: int
    params: int  # parameters held by one GPU of this stage
    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    capacity: float  # usable bytes: GPU memory - RESERVE_GIB

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity


def state_bytes_per_param(backend: str, distributed_optimizer: bool, shards: int) -> tuple[float, float, float]:
    """(weights, grads, optimizer) bytes per parameter held on a GPU; see the module docstring."""
    if backend == "megatron":
        return 2.0, 4.0, 12.0 / (shards if distributed_optimizer else 1)
    if backend == "deepspeed":
        return 2.0, 2.0, 12.0 / (shards if distributed_optimizer else 1)
    return 4.0, 4.0, 8.0


def activation_terms(m: ModelConfig, moe_layer: bool, recompute: str) -> list[tuple[str, int, str]]:
    """Stored elements per token of one layer as (name, elements, split); split 'tp' = inside a
    TP-split matmul, 'sp' = split over TP only with sequence parallel."""
    h = m.hidden_size
    sel = recompute == "selective"
    terms: list[tuple[str, int, str]] = [("attn_norm_in", h, "sp")]
    if not sel:
        terms.append(("attn_normed", h, "sp"))
    if m.attention == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            terms.append(("q_latent", m.q_lora_rank, "sp"))
            if not sel:
                terms.append(("q_latent_normed", m.q_lora_rank, "sp"))
        terms.append(("kv_latent", m.kv_lora_rank + m.qk_rope_head_dim, "sp"))
        if not sel:
            terms += [
                ("kv_latent_normed", m.kv_lora_rank, "sp"),
                ("q", m.num_heads * qk, "tp"),
                ("k", m.num_heads * qk, "tp"),
                ("v", m.num_heads * m.v_head_dim, "tp"),
            ]
        terms.append(("attn_out", m.num_heads * m.v_head_dim, "tp"))
    else:
        hd = h // m.num_heads
        terms += [
            ("q", m.num_heads * hd, "tp"),
            ("kv", 2 * m.num_kv_heads * hd, "tp"),
            ("attn_out", m.num_heads * hd, "tp"),
        ]
    terms.append(("mlp_norm_in", h, "sp"))
    if not sel:
        terms.append(("mlp_normed", h, "sp"))
    if moe_layer:
        k, fe = m.experts_per_token, m.moe_intermediate_size or m.intermediate_size
        terms += [
            ("router_logits_fp32", 2 * m.num_experts, "sp"),
            ("expert_in", k * h, "sp"),
            ("expert_fc1_out", k * 2 * fe, "sp"),
        ]
        if not sel:
            terms.append(("expert_act_out", k * fe, "sp"))
        if m.num_shared_experts:
            terms.append(("shared_fc1_out", m.num_shared_experts * 2 * fe, "tp"))
            if not sel:
                terms.append(("shared_act_out", m.num_shared_experts * fe, "tp"))
    else:
        terms.append(("mlp_fc1_out", 2 * m.intermediate_size, "tp"))
        if not sel:
            terms.append(("mlp_act_out", m.intermediate_size, "tp"))
    return terms


def layer_activation_bytes(
    m: ModelConfig, moe_layer: bool, recompute: str, tokens: float, tp: int, sequence_parallel: bool
) -> float:
    """Bytes one layer keeps for `tokens` tokens of one micro-batch on one GPU (without full recompute)."""
    elems = 0.0
    for _, n, split in activation_terms(m, moe_layer, "none" if recompute == "full" else recompute):
        elems += n / tp if (split == "tp" or sequence_parallel) else n
    return 2.0 * tokens * elems


def _stage_layer_kinds(layout: Layout, pc: ParamCount, stage: int) -> tuple[int, int]:
    """(dense layers, MoE layers) on `stage`; the dense ones come first in the model."""
    start = sum(layout.stage_layers[:stage])
    n = layout.stage_layers[stage]
    dense = max(0, min(pc.dense_layers - start, n))
    return dense, n - dense


def stage_memory(
    cfg: Config,
    layout: Layout,
    pc: ParamCount,
    gpu: GpuSpec,
    stage: int,
    micro_batch_size: int,
    seq_len: int,
    micro_batches: int,
) -> StageMemory:
    """Memory per GPU on pipeline `stage` for micro-batches of micro_batch_size x seq_len tokens."""
    m, p = cfg.model, cfg.parallel
    first, last = stage == 0, stage == layout.pp - 1
    dense, moe = _stage_layer_kinds(layout, pc, stage)
    non_expert = dense * pc.per_dense_layer + moe * pc.non_expert_per_moe_layer
    experts = moe * pc.expert_per_layer
    if first:
        non_expert += pc.embedding
    if last:
        non_expert += pc.final_norm + (pc.head or (pc.embedding if layout.pp > 1 else 0))
        mtp_experts = m.mtp_layers * pc.expert_per_layer
        non_expert += pc.mtp - mtp_experts
        experts += mtp_experts
    local_dense = non_expert / layout.tp
    local_experts = experts / (layout.ep * layout.expert_tp)
    wd, gd, od = state_bytes_per_param(p.backend, p.distributed_optimizer, layout.dp * layout.cp)
    we, ge, oe = state_bytes_per_param(p.backend, p.distributed_optimizer, layout.edp)

    tokens = micro_batch_size * seq_len / layout.cp
    sp = p.sequence_parallel and layout.tp > 1
    in_flight = float(min(layout.pp - stage, micro_batches))
    if first and layout.vpp > 1:
        in_flight += (layout.pp - 1) / layout.vpp
    mtp_moe = m.mtp_layers if last else 0
    per_mb_layers = dense * layer_activation_bytes(m, False, p.recompute, tokens, layout.tp, sp) + (
        moe + mtp_moe
    ) * layer_activation_bytes(m, m.num_experts > 0, p.recompute, tokens, layout.tp, sp)
    if p.recompute == "full":
        layer_inputs = (dense + moe + mtp_moe) * 2.0 * tokens * m.hidden_size / (layout.tp if sp else 1)
        biggest = layer_activation_bytes(m, moe + mtp_moe > 0 and m.num_experts > 0, "none", tokens, layout.tp, sp)
        activations = in_flight * layer_inputs + biggest
    else:
        activations = in_flight * per_mb_layers
    logits = tokens * m.vocab_size / layout.tp * 6.0 * (1 + m.mtp_layers) if last else 0.0
    return StageMemory(
        stage=stage,
        layers=dense + moe,
        params=round(local_dense + local_experts),
        weights=local_dense * wd + local_experts * we,
        grads=local_dense * gd + local_experts * ge,
        optimizer=local_dense * od + local_experts * oe,
        activations=activations,
        logits=logits,
        capacity=gpu.memory_bytes - RESERVE_GIB * GIB,
    )
