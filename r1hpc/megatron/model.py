"""A DeepSeek-V3-style MoE GPT built from megatron-core's local (non-Transformer-Engine) layer spec.

What is DeepSeek-V3 about it: multi-latent attention (q/kv LoRA latents, decoupled rope dims, yarn
rope), RMSNorm, SwiGLU, the first ``first_k_dense`` layers dense, the rest MoE with routed experts
plus one shared expert, a sigmoid router with an expert bias (aux-loss-free load balancing), group
top-k routing and a top-k scaling factor. Not included: multi-token prediction, fp8.

``MegatronModelConfig`` holds the sizes; ``build_model`` builds this rank's pipeline stage, after
``parallel.init_parallel`` has set up the process groups. All sizes must divide the parallel layout
(heads and vocab by TP, experts by EP, layers by PP): checked with a message naming the field. Its
routers are ``PaddingMaskTopKRouter``, so that the ``padding_mask`` the train steps pass keeps pad
tokens out of the expert-bias update.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
from megatron.core.transformer.moe.moe_layer import MoESubmodules
from megatron.core.transformer.moe.router import TopKRouter
from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

from r1hpc.megatron.mla_tp_fix import sum_rope_key_grad_over_tp

try:  # Transformer Engine ships MLA-capable core attention; without it we use ours.
    import transformer_engine  # noqa: F401

    HAVE_TE = True
except ImportError:
    HAVE_TE = False


@dataclass(frozen=True)
class MegatronModelConfig:
    """Sizes of the model; the defaults are the tiny CPU test model (about 60k parameters)."""

    vocab_size: int = 64
    max_seq_len: int = 64
    num_layers: int = 4
    hidden_size: int = 32
    num_heads: int = 4
    ffn_hidden_size: int = 64  # the dense layers' MLP
    first_k_dense: int = 1  # DeepSeek-V3: the first 3 of 61 layers are dense
    num_experts: int = 4
    moe_ffn_hidden_size: int = 16  # per routed expert
    shared_expert_size: int = 16  # 0 = no shared expert
    router_topk: int = 2
    router_num_groups: int = 2  # group-limited routing (DeepSeek-V3: 8 groups, top 4)
    router_group_topk: int = 1
    router_topk_scaling_factor: float = 2.5
    multi_latent_attention: bool = True
    q_lora_rank: int = 16
    kv_lora_rank: int = 16
    qk_head_dim: int = 8
    qk_pos_emb_head_dim: int = 4
    v_head_dim: int = 8
    rope_type: str = "yarn"  # "yarn" (DeepSeek-V3) or "rope"
    rope_theta: float = 10000.0
    rope_scaling_factor: float = 4.0  # yarn: context extension factor over the original length
    rope_original_max_len: int = 0  # yarn: the pre-extension context length; 0 = max_seq_len
    norm_eps: float = 1e-6  # every RMSNorm (HF DeepseekV3 hard-codes 1e-6 for the q/kv latent norms)
    init_std: float = 0.02

    @classmethod
    def from_dict(cls, d: dict, where: str = "model config") -> MegatronModelConfig:
        """Build from a mapping; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParallelLayout:
    """How the model is split: tensor, pipeline, expert parallel sizes (sequence parallel iff tp > 1)."""

    tp: int = 1
    pp: int = 1
    ep: int = 1

    @property
    def etp(self) -> int:
        """Expert tensor parallel size: 1 under EP (DeepSeek-V3 style), else TP.

        Why not always 1: with EP=1 megatron treats expert weights as dense params (reduced over DP
        only), but with ETP=1 < TP each TP rank feeds its experts a different sequence shard, so
        their gradients would never be summed over TP (measured: expert grads off by 1-10%).
        """
        return 1 if self.ep > 1 else self.tp


def check_layout(cfg: MegatronModelConfig, layout: ParallelLayout, world_size: int) -> None:
    """Raise ValueError naming the field when the sizes do not fit the layout."""
    problems = []
    for name, value in (("tp", layout.tp), ("pp", layout.pp), ("ep", layout.ep)):
        if value < 1:
            problems.append(f"{name}={value} must be >= 1")
    if problems:
        raise ValueError("parallel layout: " + "; ".join(problems))
    if world_size % (layout.tp * layout.pp):
        problems.append(f"world size {world_size} is not a multiple of tp*pp={layout.tp * layout.pp}")
    if world_size % (layout.ep * layout.etp * layout.pp):
        problems.append(f"world size {world_size} is not a multiple of ep*etp*pp={layout.ep * layout.etp * layout.pp}")
    if cfg.num_heads % layout.tp:
        problems.append(f"num_heads={cfg.num_heads} not divisible by tp={layout.tp}")
    if cfg.vocab_size % layout.tp:
        problems.append(f"vocab_size={cfg.vocab_size} not divisible by tp={layout.tp}")
    if cfg.num_layers % layout.pp:
        problems.append(f"num_layers={cfg.num_layers} not divisible by pp={layout.pp}")
    if cfg.num_experts % layout.ep:
        problems.append(f"num_experts={cfg.num_experts} not divisible by ep={layout.ep}")
    if not 0 <= cfg.first_k_dense < cfg.num_layers:
        problems.append(f"first_k_dense={cfg.first_k_dense} must be in [0, num_layers={cfg.num_layers})")
    if cfg.num_experts % cfg.router_num_groups or cfg.router_group_topk > cfg.router_num_groups:
        problems.append(
            f"router groups: num_experts={cfg.num_experts} must divide into router_num_groups="
            f"{cfg.router_num_groups} and router_group_topk={cfg.router_group_topk} <= groups"
        )
    if cfg.rope_type not in ("yarn", "rope"):
        problems.append(f"rope_type={cfg.rope_type!r}; expected 'yarn' or 'rope'")
    if problems:
        raise ValueError("model config vs parallel layout: " + "; ".join(problems))


def transformer_config(cfg: MegatronModelConfig, layout: ParallelLayout) -> TransformerConfig:
    """The megatron TransformerConfig (MLATransformerConfig when MLA is on) for these sizes."""
    common = dict(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_heads,
        ffn_hidden_size=cfg.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=cfg.init_std,
        params_dtype=torch.float32,
        pipeline_dtype=torch.float32,
        # Full weights are initialised on CPU then sliced: the same seed gives the same model at any TP.
        use_cpu_initialization=True,
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        expert_model_parallel_size=layout.ep,
        expert_tensor_parallel_size=layout.etp,
        # MoE with TP requires sequence parallel in megatron-core (it refuses TP without it).
        sequence_parallel=layout.tp > 1,
        qk_layernorm=cfg.multi_latent_attention,  # MLA: RMSNorm on the q and kv latents
        num_moe_experts=cfg.num_experts,
        moe_ffn_hidden_size=cfg.moe_ffn_hidden_size,
        moe_shared_expert_intermediate_size=cfg.shared_expert_size or None,
        moe_layer_freq=[0] * cfg.first_k_dense + [1] * (cfg.num_layers - cfg.first_k_dense),
        moe_router_topk=cfg.router_topk,
        moe_router_score_function="sigmoid",
        moe_router_enable_expert_bias=True,
        moe_router_num_groups=cfg.router_num_groups,
        moe_router_group_topk=cfg.router_group_topk,
        moe_router_topk_scaling_factor=cfg.router_topk_scaling_factor,
        moe_router_load_balancing_type="none",  # aux-loss-free: the expert bias balances load
        moe_router_dtype="fp32",
        moe_token_dispatcher_type="alltoall",
        moe_grouped_gemm=False,  # grouped GEMM needs CUDA kernels
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        # Losses are returned as (sum, count) and normalised by the global count, so the loss is the
        # same token mean whatever the DP size and micro-batch split (layouts agree exactly).
        calculate_per_token_loss=True,
    )
    if not cfg.multi_latent_attention:
        return TransformerConfig(**common)
    return MLATransformerConfig(
        **common,
        q_lora_rank=cfg.q_lora_rank,
        kv_lora_rank=cfg.kv_lora_rank,
        qk_head_dim=cfg.qk_head_dim,
        qk_pos_emb_head_dim=cfg.qk_pos_emb_head_dim,
        v_head_dim=cfg.v_head_dim,
        rope_type=cfg.rope_type,
        rotary_base=cfg.rope_theta,
        rotary_scaling_factor=cfg.rope_scaling_factor,
        original_max_position_embeddings=cfg.rope_original_max_len or cfg.max_seq_len,
    )


class PaddingMaskTopKRouter(TopKRouter):
    """megatron-core's TopKRouter with the expert-bias token count fixed for a ``padding_mask``.

    ``GPTModel.forward(..., padding_mask=pad)`` (pad: (b, s) bool, True = padding, as the code uses it;
    the router's and MoELayer's docstrings say the opposite, gpt_model.py's is right) is megatron-core
    0.16.1's way to keep pad tokens out of the routers' statistics: the mask reaches
    ``TopKRouter.routing`` flattened to [num_tokens], which leaves them out of the aux losses and the
    z-loss and is meant to leave them out of ``local_tokens_per_expert``, the per-expert counts that
    ``finalize_model_grads`` turns into the expert-bias update. Pad tokens are still routed: outputs
    do not change. But 0.16.1's ``_apply_expert_bias`` (router.py line 542) computes
    ``routing_map & (~padding_mask)`` with routing_map [num_tokens, num_experts], which broadcasts
    the mask over the expert dimension and raises a shape error whenever num_tokens != num_experts
    (NVIDIA/Megatron-LM issue #6111, fixed upstream by PR #6114, which unsqueezes the mask). This
    override is that fix; it can go once the pinned megatron-core has it. Installed through the
    layer spec's ``MoESubmodules.router`` slot, so parameter and checkpoint names are unchanged.
    """

    def _apply_expert_bias(self, routing_map: torch.Tensor, padding_mask: torch.Tensor | None = None) -> None:
        """Add this micro-batch's non-pad token counts per expert to ``local_tokens_per_expert``.

        routing_map: [num_tokens, num_experts] bool; padding_mask: [num_tokens] bool, True = pad.
        Only with grad enabled, as megatron's: no-grad log-prob passes and recomputation do not count.
        """
        if self.enable_expert_bias and torch.is_grad_enabled():
            with torch.no_grad():
                if padding_mask is not None:
                    routing_map = routing_map & ~padding_mask.unsqueeze(-1)
                self.local_tokens_per_expert += routing_map.sum(dim=0)


def build_model(cfg: MegatronModelConfig, layout: ParallelLayout) -> GPTModel:
    """Build this rank's pipeline stage of the model (parallel state must be initialised).

    The model maps input_ids (b, s) and position_ids (b, s) to vocab-parallel logits (s, b, V/tp)
    or, given ``labels`` (b, s), to per-token cross-entropy (b, s) (last stage only). The keyword
    ``padding_mask`` (b, s) bool, True at pad tokens, keeps those out of the routers' expert-bias
    counts (``PaddingMaskTopKRouter``).
    """
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("build_model: call r1hpc.megatron.parallel.init_parallel first")
    check_layout(cfg, layout, torch.distributed.get_world_size())
    config = transformer_config(cfg, layout)
    pp_rank = parallel_state.get_pipeline_model_parallel_rank()
    block_spec = get_gpt_decoder_block_spec(
        config, use_transformer_engine=False, normalization="RMSNorm", pp_rank=pp_rank
    )
    if cfg.multi_latent_attention and not HAVE_TE:
        from r1hpc.megatron.cpu_shims import MLACoreAttention

        # The local DotProductAttention has no k/v head-dim arguments, which MLA passes.
        for spec in block_spec.layer_specs:
            spec.submodules.self_attention.submodules.core_attention = MLACoreAttention
    for spec in block_spec.layer_specs:
        if isinstance(spec.submodules.mlp.submodules, MoESubmodules):
            spec.submodules.mlp.submodules.router = PaddingMaskTopKRouter
    model = GPTModel(
        config=config,
        transformer_layer_spec=block_spec,
        vocab_size=cfg.vocab_size,
        max_sequence_length=cfg.max_seq_len,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True,
        share_embeddings_and_output_weights=False,
        position_embedding_type="none" if cfg.multi_latent_attention else "rope",
    )
    stray = [
        n for n, m in model.named_modules() if isinstance(m, TopKRouter) and not isinstance(m, PaddingMaskTopKRouter)
    ]
    if stray:  # the spec slot moved in another megatron-core version: padding_mask would crash these
        raise RuntimeError(f"build_model: routers {stray} are not PaddingMaskTopKRouter")
    if cfg.multi_latent_attention and layout.tp > 1:
        # The local-spec MLA does not sum the rope key's gradient over TP (Megatron-LM#1699).
        sum_rope_key_grad_over_tp(model)
    return model
