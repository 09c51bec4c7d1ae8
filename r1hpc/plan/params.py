"""Parameter counts from `ModelConfig`: total, active per token, and the parts the memory model
splits differently over the parallel layout (experts over EP, the rest over TP, layers over PP).

Shapes follow the HF reference implementations: Qwen2 (GQA with q/k/v bias, SwiGLU MLP) and
DeepSeek-V3 (MLA with q/kv low-rank projections, the first `first_dense_layers` layers dense,
the others MoE with a sigmoid router + per-expert bias, `num_shared_experts` shared experts of the
routed expert's size, MTP modules sharing embedding and head with the main model).
"""

from __future__ import annotations

from dataclasses import dataclass

from r1hpc.config import ModelConfig

__all__ = ["ParamCount", "count_params", "attention_params", "kv_cache_elems_per_token"]


@dataclass(frozen=True)
class ParamCount:
    """Parameters of one model, by part. `*_per_layer` are for one layer of that kind."""

    embedding: int
    head: int  # 0 when tied to the embedding
    final_norm: int
    attention_per_layer: int  # incl. both layer norms
    dense_mlp_per_layer: int
    moe_router_per_layer: int
    moe_shared_per_layer: int
    expert_per_layer: int  # all routed experts of one MoE layer
    one_expert: int
    dense_layers: int
    moe_layers: int
    experts_per_token: int
    mtp: int  # all MTP modules (their own transformer layer + projections; embedding/head shared)
    mtp_active: int

    @property
    def layers(self) -> int:
        return self.dense_layers + self.moe_layers

    @property
    def non_expert_per_moe_layer(self) -> int:
        return self.attention_per_layer + self.moe_router_per_layer + self.moe_shared_per_layer

    @property
    def per_dense_layer(self) -> int:
        return self.attention_per_layer + self.dense_mlp_per_layer

    @property
    def experts(self) -> int:
        return self.expert_per_layer * self.moe_layers

    @property
    def total(self) -> int:
        """All parameters of the main model (MTP excluded, as in the '671B' of DeepSeek-V3)."""
        return (
            self.embedding
            + self.head
            + self.final_norm
            + self.dense_layers * self.per_dense_layer
            + self.moe_layers * (self.non_expert_per_moe_layer + self.expert_per_layer)
        )

    @property
    def active(self) -> int:
        """Parameters one token passes through (embedding row counted, as DeepSeek's '37B' does)."""
        routed = self.experts_per_token * self.one_expert
        return (
            self.embedding
            + self.head
            + self.final_norm
            + self.dense_layers * self.per_dense_layer
            + self.moe_layers * (self.non_expert_per_moe_layer + routed)
        )

    @property
    def matmul_active(self) -> int:
        """Active parameters that cost 2 FLOPs per token forward: `active` without the embedding
        lookup (a gather, not a matmul); the head counts even when tied."""
        return self.active - self.embedding + (self.embedding if self.head == 0 else 0)


def attention_params(m: ModelConfig) -> int:
    """Attention projections of one layer (no norms)."""
    h = m.hidden_size
    if m.attention == "mla":
        qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * m.num_heads * qk_head  # + q_a_layernorm
        else:
            q = h * m.num_heads * qk_head
        kv = (
            h * (m.kv_lora_rank + m.qk_rope_head_dim)
            + m.kv_lora_rank  # kv_a (+ its layernorm)
            + m.kv_lora_rank * m.num_heads * (m.qk_nope_head_dim + m.v_head_dim)
        )
        return q + kv + m.num_heads * m.v_head_dim * h
    head_dim = h // m.num_heads
    q_out, kv_out = m.num_heads * head_dim, m.num_kv_heads * head_dim
    bias = q_out + 2 * kv_out if m.arch == "qwen2" else 0  # Qwen2 has q/k/v biases
    qk_norm = 2 * head_dim if m.arch == "qwen3_moe" else 0  # Qwen3 RMS-normalises q and k per head
    return h * (q_out + 2 * kv_out) + bias + q_out * h + qk_norm


def kv_cache_elems_per_token(m: ModelConfig) -> int:
    """KV-cache elements one token adds over all layers: MLA caches the compressed latent plus
    the shared rope key (kv_lora + rope); GQA caches K and V of every KV head."""
    if m.attention == "mla":
        return m.num_layers * (m.kv_lora_rank + m.qk_rope_head_dim)
    return m.num_layers * 2 * m.num_kv_heads * (m.hidden_size // m.num_heads)


def count_params(m: ModelConfig) -> ParamCount:
    h = m.hidden_size
    moe = m.num_experts > 0
    fe = m.moe_intermediate_size or m.intermediate_size
    one_expert = 3 * h * fe  # SwiGLU: gate, up, down
    dense_layers = min(m.first_dense_layers, m.num_layers) if moe else m.num_layers
    moe_layers = m.num_layers - dense_layers
    attention = attention_params(m) + 2 * h  # + input and post-attention RMSNorm
    router = m.num_experts * h + (m.num_experts if m.arch == "deepseek_v3" else 0)  # V3: expert score bias
    shared = m.num_shared_experts * one_expert
    mtp = mtp_active = 0
    if m.mtp_layers:
        # V3 MTP module: RMSNorm on the hidden state and on the next token's embedding, a 2h->h
        # projection, one transformer block (MoE, like every layer past the dense ones) and a norm.
        block_total = attention + (router + shared + m.num_experts * one_expert if moe else 3 * h * m.intermediate_size)
        block_active = attention + (
            router + shared + m.experts_per_token * one_expert if moe else 3 * h * m.intermediate_size
        )
        extra = 2 * h + 2 * h * h + h
        mtp, mtp_active = m.mtp_layers * (block_total + extra), m.mtp_layers * (block_active + extra)
    return ParamCount(
        embedding=m.vocab_size * h,
        head=0 if m.tie_embeddings else m.vocab_size * h,
        final_norm=h,
        attention_per_layer=attention,
        dense_mlp_per_layer=3 * h * m.intermediate_size,
        moe_router_per_layer=router if moe else 0,
        moe_shared_per_layer=shared if moe else 0,
        expert_per_layer=m.num_experts * one_expert if moe else 0,
        one_expert=one_expert if moe else 0,
        dense_layers=dense_layers,
        moe_layers=moe_layers,
        experts_per_token=m.experts_per_token if moe else 0,
        mtp=mtp,
        mtp_active=mtp_active,
    )
