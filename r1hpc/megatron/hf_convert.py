"""Megatron (this package's DeepSeek-V3-style GPTModel) <-> HF transformers DeepseekV3 checkpoints.

An explicit name mapping, no megatron-bridge (on CPU it loaded row-parallel weights wrong at TP>1
and every EP rank's experts as experts 0..k-1, silently; see /work/shared/notes/ml-stack-on-cpu.md).

    export_hf(model, out_dir)   collective: every rank writes the tensors it owns into its own
        safetensors files (TP shards gathered to TP rank 0 of the group; experts written by their
        EP owner; one DP replica writes), rank 0 adds model.safetensors.index.json and config.json.
        Files are flushed every ``max_file_bytes``, so no process holds more than its own share.
    import_hf(hf_dir, model)    each rank reads only its slices (safetensors get_slice): no scatter.

On-disk names are DeepSeek-V3's own (per-expert ``mlp.experts.E.gate_proj.weight``), which
``DeepseekV3ForCausalLM.from_pretrained`` and vLLM load. Megatron's fused ``linear_fc1`` holds
[gate; up] *per TP shard*, so it is split into gate/up on each shard before gathering.
Which dimension a weight is split on under TP comes from megatron's own parameter attributes
(``tensor_model_parallel``, ``partition_dim``), not from a hand-kept table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from r1hpc.megatron.model import MegatronModelConfig
from r1hpc.megatron.parallel import unwrap

INDEX_NAME = "model.safetensors.index.json"

# Megatron suffix (after "decoder.layers.<i>.") -> HF suffix (after "model.layers.<L>.").
_LAYER_MAP = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_q_down_proj.weight": "self_attn.q_a_proj.weight",
    "self_attention.q_layernorm.weight": "self_attn.q_a_layernorm.weight",
    "self_attention.linear_q_up_proj.weight": "self_attn.q_b_proj.weight",
    "self_attention.linear_kv_down_proj.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "self_attention.kv_layernorm.weight": "self_attn.kv_a_layernorm.weight",
    "self_attention.linear_kv_up_proj.weight": "self_attn.kv_b_proj.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
    "mlp.router.weight": "mlp.gate.weight",
    "mlp.router.expert_bias": "mlp.gate.e_score_correction_bias",
    "mlp.shared_experts.linear_fc1.weight": (
        "mlp.shared_experts.gate_proj.weight",
        "mlp.shared_experts.up_proj.weight",
    ),
    "mlp.shared_experts.linear_fc2.weight": "mlp.shared_experts.down_proj.weight",
}
_TOP_MAP = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_EXPERT_RE = re.compile(r"^mlp\.experts\.local_experts\.(\d+)\.linear_fc([12])\.weight$")
# Buffers that are recomputed (rope caches) or statistics (token counts): not weights.
_SKIP_RE = re.compile(r"rotary_pos_emb\.|local_tokens_per_expert")


# --------------------------------------------------------------------------------------------
# Configs


def hf_config(cfg: MegatronModelConfig, *, bos_id: int = 0, eos_id: int = 1, pad_id: int | None = None) -> Any:
    """The transformers DeepseekV3Config of these sizes. Raises ValueError for what HF cannot express."""
    from transformers import DeepseekV3Config

    problems = []
    if not cfg.multi_latent_attention:
        problems.append("multi_latent_attention=False (DeepseekV3 is MLA only)")
    if not cfg.shared_expert_size or cfg.shared_expert_size % cfg.moe_ffn_hidden_size:
        problems.append(
            f"shared_expert_size={cfg.shared_expert_size} must be a positive multiple of "
            f"moe_ffn_hidden_size={cfg.moe_ffn_hidden_size} (HF: n_shared_experts)"
        )
    if cfg.router_num_groups > 1 and cfg.router_topk // cfg.router_group_topk != 2:
        problems.append(
            f"router_topk // router_group_topk = {cfg.router_topk // cfg.router_group_topk}: HF scores a "
            "group by its top-2 experts, megatron by its top (topk // group_topk); they must be 2"
        )
    if problems:
        raise ValueError("hf_config: cannot express as DeepseekV3: " + "; ".join(problems))
    original = cfg.rope_original_max_len or cfg.max_seq_len
    if cfg.rope_type == "yarn":
        # mscale_all_dim 0: both sides then scale cos/sin by 0.1 ln(factor) + 1 and keep 1/sqrt(d).
        rope = {
            "rope_type": "yarn",
            "rope_theta": cfg.rope_theta,
            "factor": cfg.rope_scaling_factor,
            "original_max_position_embeddings": original,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 0.0,
        }
    else:
        rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    return DeepseekV3Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size,
        moe_intermediate_size=cfg.moe_ffn_hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        n_shared_experts=cfg.shared_expert_size // cfg.moe_ffn_hidden_size,
        n_routed_experts=cfg.num_experts,
        routed_scaling_factor=cfg.router_topk_scaling_factor,
        kv_lora_rank=cfg.kv_lora_rank,
        q_lora_rank=cfg.q_lora_rank,
        qk_rope_head_dim=cfg.qk_pos_emb_head_dim,
        v_head_dim=cfg.v_head_dim,
        qk_nope_head_dim=cfg.qk_head_dim,
        n_group=cfg.router_num_groups,
        topk_group=cfg.router_group_topk,
        num_experts_per_tok=cfg.router_topk,
        first_k_dense_replace=cfg.first_k_dense,
        # megatron normalises the sigmoid top-k scores only when top-k > 1
        norm_topk_prob=cfg.router_topk > 1,
        # transformers hard-codes sigmoid scores + e_score_correction_bias and ignores these two, but vLLM
        # reads them (as in DeepSeek-V3's own config.json): without them it builds softmax routing with no
        # bias parameter and fails to load the checkpoint (KeyError ...mlp.gate.e_score_correction_bias).
        topk_method="noaux_tc",
        scoring_func="sigmoid",
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=False,
        rope_parameters=rope,
        rope_interleave=True,
        attention_bias=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )


def megatron_config_from_hf(hf_dir: str | Path) -> MegatronModelConfig:
    """The MegatronModelConfig of an HF DeepseekV3 directory (its config.json)."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected an HF model directory")
    c = json.loads(path.read_text())
    if c.get("model_type") != "deepseek_v3":
        raise ValueError(f"{path}: model_type is {c.get('model_type')!r}; the Megatron backend converts 'deepseek_v3'")
    if c.get("tie_word_embeddings"):
        raise ValueError(f"{path}: tie_word_embeddings=true is not supported (DeepSeek-V3 unties them)")
    if not c.get("rope_interleave", True):
        raise ValueError(f"{path}: rope_interleave=false is not supported (megatron's MLA rope is interleaved)")
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    yarn = rope.get("rope_type", rope.get("type")) == "yarn"
    if yarn and (rope.get("mscale_all_dim") or 0) != 0:
        raise ValueError(f"{path}: rope mscale_all_dim={rope['mscale_all_dim']} is not supported (expected 0)")
    return MegatronModelConfig(
        vocab_size=c["vocab_size"],
        max_seq_len=c["max_position_embeddings"],
        num_layers=c["num_hidden_layers"],
        hidden_size=c["hidden_size"],
        num_heads=c["num_attention_heads"],
        ffn_hidden_size=c["intermediate_size"],
        first_k_dense=c["first_k_dense_replace"],
        num_experts=c["n_routed_experts"],
        moe_ffn_hidden_size=c["moe_intermediate_size"],
        shared_expert_size=c["moe_intermediate_size"] * c["n_shared_experts"],
        router_topk=c["num_experts_per_tok"],
        router_num_groups=c["n_group"],
        router_group_topk=c["topk_group"],
        router_topk_scaling_factor=c["routed_scaling_factor"],
        multi_latent_attention=True,
        q_lora_rank=c["q_lora_rank"],
        kv_lora_rank=c["kv_lora_rank"],
        qk_head_dim=c["qk_nope_head_dim"],
        qk_pos_emb_head_dim=c["qk_rope_head_dim"],
        v_head_dim=c["v_head_dim"],
        rope_type="yarn" if yarn else "rope",
        rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
        rope_scaling_factor=float(rope.get("factor", 1.0)) if yarn else 1.0,
        rope_original_max_len=_original_len(rope, c["max_position_embeddings"]) if yarn else 0,
        norm_eps=c["rms_norm_eps"],
        init_std=c.get("initializer_range", 0.02),
    )


def megatron_config_from_run(model: Any, vocab_size: int | None = None) -> MegatronModelConfig:
    """MegatronModelConfig from the run config's ``model`` section (arch deepseek_v3, attention mla).

    How the base of a MoE run is made: ``hf_config(megatron_config_from_run(cfg.model, len(tok)))``
    gives a DeepseekV3Config for ``DeepseekV3ForCausalLM``, pretrained like any HF causal LM.
    Router groups are not in the run config: one group (plain top-k).
    """
    if model.arch != "deepseek_v3" or model.attention != "mla":
        raise ValueError(
            f"model.arch={model.arch!r}, model.attention={model.attention!r}: the Megatron backend "
            "converts arch 'deepseek_v3' with attention 'mla'"
        )
    if model.num_shared_experts < 1:
        raise ValueError("model.num_shared_experts must be >= 1 for DeepseekV3 (HF always has shared experts)")
    moe = model.moe_intermediate_size or model.intermediate_size
    return MegatronModelConfig(
        vocab_size=vocab_size or model.vocab_size,
        max_seq_len=model.max_seq_len,
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_heads=model.num_heads,
        ffn_hidden_size=model.intermediate_size,
        first_k_dense=model.first_dense_layers,
        num_experts=model.num_experts,
        moe_ffn_hidden_size=moe,
        shared_expert_size=moe * model.num_shared_experts,
        router_topk=model.experts_per_token,
        router_num_groups=1,
        router_group_topk=1,
        multi_latent_attention=True,
        q_lora_rank=model.q_lora_rank,
        kv_lora_rank=model.kv_lora_rank,
        qk_head_dim=model.qk_nope_head_dim,
        qk_pos_emb_head_dim=model.qk_rope_head_dim,
        v_head_dim=model.v_head_dim,
    )


def _original_len(rope: dict, max_len: int) -> int:
    """MegatronModelConfig's convention: 0 when the yarn original length equals max_seq_len."""
    original = int(rope.get("original_max_position_embeddings") or 0)
    return 0 if original == max_len else original


# --------------------------------------------------------------------------------------------
# Names and ownership


class _Entry:
    """One local megatron tensor and where it goes: HF name(s), TP split dim, group, writer or not."""

    def __init__(self, name: str, tensor: torch.Tensor, hf: tuple[str, ...], split_dim: int | None, expert: bool):
        self.name, self.tensor, self.hf, self.split_dim, self.expert = name, tensor, hf, split_dim, expert

    @property
    def tp_group(self) -> Any:
        return ps.get_expert_tensor_parallel_group() if self.expert else ps.get_tensor_model_parallel_group()

    @property
    def tp_rank(self) -> int:
        return ps.get_expert_tensor_parallel_rank() if self.expert else ps.get_tensor_model_parallel_rank()

    @property
    def tp_size(self) -> int:
        return dist.get_world_size(self.tp_group) if self.split_dim is not None else 1

    @property
    def in_writing_replica(self) -> bool:
        """One data-parallel replica writes (the others hold the same values)."""
        return (ps.get_expert_data_parallel_rank() if self.expert else ps.get_data_parallel_rank()) == 0


def _entries(model: Any) -> list[_Entry]:
    """This rank's tensors in a deterministic order (the same on every rank of a TP group)."""
    inner = unwrap(model)
    cfg = inner.config
    layer_of = {i: layer.layer_number - 1 for i, layer in enumerate(inner.decoder.layers)}  # local -> global
    n_local = cfg.num_moe_experts // ps.get_expert_model_parallel_world_size() if cfg.num_moe_experts else 0
    first_expert = ps.get_expert_model_parallel_rank() * n_local
    out = []
    tensors = list(inner.named_parameters()) + list(inner.named_buffers())
    for name, t in tensors:
        if _SKIP_RE.search(name):
            continue
        split = t.partition_dim if getattr(t, "tensor_model_parallel", False) else None
        if name in _TOP_MAP:
            out.append(_Entry(name, t, (_TOP_MAP[name],), split, False))
            continue
        m = _LAYER_RE.match(name)
        if not m:
            raise KeyError(f"export/import HF: no DeepseekV3 name for megatron tensor {name!r}")
        layer, rest = layer_of[int(m.group(1))], m.group(2)
        prefix = f"model.layers.{layer}."
        e = _EXPERT_RE.match(rest)
        if e:
            g = first_expert + int(e.group(1))
            hf = (
                (f"mlp.experts.{g}.gate_proj.weight", f"mlp.experts.{g}.up_proj.weight")
                if e.group(2) == "1"
                else (f"mlp.experts.{g}.down_proj.weight",)
            )
            out.append(_Entry(name, t, tuple(prefix + h for h in hf), split, True))
            continue
        if rest not in _LAYER_MAP:
            raise KeyError(f"export/import HF: no DeepseekV3 name for megatron tensor {name!r}")
        hf = _LAYER_MAP[rest]
        out.append(_Entry(name, t, tuple(prefix + h for h in ((hf,) if isinstance(hf, str) else hf)), split, False))
    return out


# --------------------------------------------------------------------------------------------
# Export


class _ShardWriter:
    """Accumulates full tensors and writes a safetensors file whenever ``max_bytes`` is reached."""

    def __init__(self, out_dir: Path, rank: int, max_bytes: int) -> None:
        self.out_dir, self.rank, self.max_bytes = out_dir, rank, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.size = 0
        self.weight_map: dict[str, str] = {}
        self.files = 0
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.detach().to("cpu").contiguous().clone()
        self.size += tensor.numel() * tensor.element_size()
        if self.size >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        fname = f"model-r{self.rank:05d}-{self.files:04d}.safetensors"
        save_file(self.pending, str(self.out_dir / fname), metadata={"format": "pt"})
        self.weight_map.update({k: fname for k in self.pending})
        self.total += self.size
        self.files += 1
        self.pending, self.size = {}, 0


def _gather_full(entry: _Entry) -> list[torch.Tensor] | None:
    """The full tensor(s) of an entry on TP rank 0 of its group (None elsewhere): one per HF name."""
    local = entry.tensor.detach()
    parts = list(local.chunk(len(entry.hf), dim=0)) if len(entry.hf) > 1 else [local]
    if entry.split_dim is None or entry.tp_size == 1:
        return parts if entry.tp_rank == 0 else None
    group = entry.tp_group
    dst = dist.get_global_rank(group, 0)
    full = []
    for part in parts:
        part = part.contiguous()  # gloo needs contiguous buffers (a chunk of fc1 is a view)
        bucket = [torch.empty_like(part) for _ in range(entry.tp_size)] if entry.tp_rank == 0 else None
        dist.gather(part, bucket, dst=dst, group=group)
        if bucket is not None:
            full.append(torch.cat(bucket, dim=entry.split_dim))
    return full if entry.tp_rank == 0 else None


def export_hf(
    model: Any,
    cfg: MegatronModelConfig,
    out_dir: str | Path,
    *,
    bos_id: int = 0,
    eos_id: int = 1,
    pad_id: int | None = None,
    max_file_bytes: int = 2 << 30,
) -> Path:
    """Collectively write the model as an HF DeepseekV3 directory (config.json, safetensors, index).

    Every rank calls this with the same ``out_dir`` (on a filesystem all ranks see). Tokenizer files
    are not written: copy them from the model this one was trained from.
    """
    out = Path(out_dir)
    rank = dist.get_rank()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if any(out.glob("*.safetensors")):
            raise FileExistsError(f"export_hf: {out} already holds safetensors files; export into an empty directory")
    dist.barrier()
    writer = _ShardWriter(out, rank, max_file_bytes)
    for entry in _entries(model):
        if not entry.in_writing_replica:
            continue
        full = _gather_full(entry)
        if full is not None:
            for hf_name, tensor in zip(entry.hf, full):
                writer.add(hf_name, tensor)
    writer.flush()
    maps: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(maps, (writer.weight_map, writer.total))
    if rank == 0:
        weight_map: dict[str, str] = {}
        for wm, _ in maps:
            dup = set(weight_map) & set(wm)
            if dup:
                raise RuntimeError(f"export_hf: tensors written by two ranks: {sorted(dup)[:5]}")
            weight_map.update(wm)
        index = {"metadata": {"total_size": sum(t for _, t in maps)}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX_NAME).write_text(json.dumps(index, indent=1))
        hf_config(cfg, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id).save_pretrained(str(out))
    dist.barrier()
    return out


# --------------------------------------------------------------------------------------------
# Import


def _weight_map(hf_dir: Path) -> dict[str, str]:
    index = hf_dir / INDEX_NAME
    if index.is_file():
        try:
            return json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index}: expected JSON with a 'weight_map' object ({e})") from e
    single = hf_dir / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"{hf_dir}: neither {INDEX_NAME} nor model.safetensors found")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {k: "model.safetensors" for k in f.keys()}


def _read_slice(
    handle: Any, name: str, where: str, dim: int | None, rank: int, size: int, expected: torch.Size
) -> torch.Tensor:
    """Rows/columns ``rank`` of ``size`` along ``dim`` of tensor ``name`` (all of it when dim is None)."""
    sl = handle.get_slice(name)
    shape = list(sl.get_shape())
    if dim is None:
        t = sl[:]
    else:
        if shape[dim] % size:
            raise ValueError(f"{where}: {name} has shape {shape}; dim {dim} is not divisible by TP size {size}")
        n = shape[dim] // size
        index = [slice(None)] * len(shape)
        index[dim] = slice(rank * n, (rank + 1) * n)
        t = sl[tuple(index)]
    if tuple(t.shape) != tuple(expected):
        raise ValueError(
            f"{where}: {name} slice has shape {tuple(t.shape)} (full {shape}), "
            f"this rank expects {tuple(expected)}: does config.json match the model?"
        )
    return t


def import_hf(hf_dir: str | Path, model: Any) -> None:
    """Load an HF DeepseekV3 directory into this rank's part of the model (each rank reads its slices)."""
    from safetensors import safe_open

    src = Path(hf_dir)
    weight_map = _weight_map(src)
    handles: dict[str, Any] = {}
    try:
        for entry in _entries(model):
            size = entry.tp_size
            rank = entry.tp_rank if entry.split_dim is not None else 0
            local_shape = list(entry.tensor.shape)
            local_shape[0] //= len(entry.hf)
            pieces = []
            for hf_name in entry.hf:
                fname = weight_map.get(hf_name)
                if fname is None:
                    raise KeyError(f"{src}: tensor {hf_name} (for megatron {entry.name}) is not in the checkpoint")
                if fname not in handles:
                    handles[fname] = safe_open(str(src / fname), framework="pt")
                pieces.append(
                    _read_slice(
                        handles[fname], hf_name, str(src / fname), entry.split_dim, rank, size, torch.Size(local_shape)
                    )
                )
            value = torch.cat(pieces, dim=0) if len(pieces) > 1 else pieces[0]
            with torch.no_grad():
                entry.tensor.copy_(value.to(entry.tensor.dtype))
    finally:
        handles.clear()
