"""Build, save and load the tiny Qwen2-style causal LM from a small dataclass of sizes.

No hub access: the config is built locally and weights are written with `save_pretrained`
(safetensors). The same directory loads in HF transformers and in vLLM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM


@dataclass(frozen=True)
class ModelSize:
    """Sizes of a Qwen2-style decoder. head_dim = hidden // heads."""

    layers: int = 4
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    max_positions: int = 256
    tied_embeddings: bool = True
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        for f in ("layers", "hidden", "heads", "kv_heads", "intermediate", "max_positions"):
            if getattr(self, f) < 1:
                raise ValueError(f"ModelSize.{f} must be >= 1, got {getattr(self, f)}")
        if self.hidden % self.heads:
            raise ValueError(f"ModelSize.hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ValueError(f"ModelSize.heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model") -> ModelSize:
        """From a config mapping; unknown keys are an error naming `where`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_config(size: ModelSize, vocab_size: int, eos_id: int, pad_id: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=size.max_positions,
        tie_word_embeddings=size.tied_embeddings,
        rope_theta=size.rope_theta,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_sliding_window=False,
        torch_dtype="float32",
    )


def build_model(size: ModelSize, vocab_size: int, eos_id: int, pad_id: int, seed: int = 0) -> Qwen2ForCausalLM:
    """A freshly initialised model; the same seed gives the same weights."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    cfg = build_config(size, vocab_size, eos_id, pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    return model


def n_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_model(model: Qwen2ForCausalLM, path: str | Path) -> None:
    model.save_pretrained(str(path), safe_serialization=True)


def load_model(path: str | Path) -> torch.nn.Module:
    """Any published causal LM (Qwen2 for the tiny dense runs, DeepseekV3 for MoE runs), fp32, eval mode."""
    path = Path(path)
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{path}: expected config.json and *.safetensors (written by save_model)")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    return model
