"""The GRPO loss and update settings: one type for every backend (torch, DeepSpeed, Megatron).

Field names are those of `r1hpc.config.GRPOConfig`, so `GRPOSettings.of(cfg.grpo)` takes them from
the config without this package importing it (r1hpc.algos is pure math and imports no r1hpc layer).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["GRPOSettings"]


@dataclass(frozen=True)
class GRPOSettings:
    """What a GRPO update needs (see r1hpc.config.GRPOConfig for each field's meaning)."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float = 0.0  # 0 = off; else c > 1 bounds the loss of negative advantages
    kl_coef: float = 0.001
    kl_estimator: str = "k3"
    loss_agg: str = "token-mean"  # r1hpc.algos.AGG_MODES
    scale_adv_by_std: bool = True  # False = Dr. GRPO
    dynamic_sampling: bool = False
    mini_batches: int = 1  # optimizer updates per step
    micro_batch_size: int = 16
    temperature: float = 1.0  # the sampler's: log-probs are of softmax(logits / temperature)
    max_grad_norm: float = 1.0
    max_new_tokens: int = 128  # the seq-mean-token-sum-norm divisor

    @classmethod
    def of(cls, grpo_config: Any, **changes: Any) -> GRPOSettings:
        """The settings of a GRPOConfig (any object with these attributes), with `changes` applied."""
        values = {f.name: getattr(grpo_config, f.name) for f in dataclasses.fields(cls)}
        return cls(**{**values, **changes})
