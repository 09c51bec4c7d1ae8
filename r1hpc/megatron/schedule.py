"""Megatron's forward(-only) schedule over micro-batches, the no-grad log-probs it gives, and which
rank reports: what the GRPO / SFT steps (``grpo_step``), the CLI plumbing (``cli_common``) and the
HF checks share. Its own module so that ``grpo_step`` (whose ``main`` uses ``cli_common``) and
``cli_common`` (whose evaluation needs log-probs) do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.pipeline_parallel import get_forward_backward_func

__all__ = ["run_schedule", "compute_logprobs", "is_reporting_rank"]


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(label) from vocab-parallel logits (b, s, V/tp) divided by ``temperature``; labels (b, s) -> (b, s).

    The sampler drew tokens from softmax(logits / T), so the ratio and KL must use the same
    distribution. The full-vocab logits are never gathered under TP.
    """
    return -tensor_parallel.vocab_parallel_cross_entropy(logits.float() / temperature, labels)


def _router_padding_mask(mb: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """``padding_mask`` for GPTModel.forward: (b, s) bool, True at pad tokens; None without ``token_mask``.

    GPTModel (megatron-core 0.16.1, gpt_model.py ``_preprocess``) splits the mask over the sequence
    for sequence parallel only on the first pipeline stage; a later stage's MoE layers see
    [s / TP, b] hidden states but would get the whole mask, so it is split here for them:
    (b, s) -> (b, s / TP).
    """
    if "token_mask" not in mb:
        return None
    pad = ~mb["token_mask"]
    if parallel_state.get_tensor_model_parallel_world_size() > 1 and not parallel_state.is_pipeline_first_stage():
        # r1hpc always runs TP with sequence parallel (model.transformer_config).
        pad = tensor_parallel.scatter_to_sequence_parallel_region(pad.t().contiguous()).t().contiguous()
    return pad


def run_schedule(
    model: torch.nn.Module,
    micro_batches: list[dict[str, torch.Tensor]],
    loss_fn: Callable[[dict[str, torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict[str, Any]]],
    forward_only: bool,
    temperature: float = 1.0,
) -> list[dict[str, Any]]:
    """One pass of megatron's forward(-backward) schedule over the micro-batches.

    ``loss_fn(mb, logp)`` gets the (b, s) log-probs of the labels at ``temperature``.
    Returns the per-micro-batch dicts loss_fn produced (last pipeline stage; [] elsewhere).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def on_logits(mb, logits):  # noqa: ANN001, ANN202
        return loss_fn(mb, _label_logprobs(logits, mb["labels"], temperature))

    def forward_step(data_iterator, model_chunk):  # noqa: ANN001, ANN202
        mb = next(data_iterator)
        b, s = mb["input_ids"].shape
        position_ids = torch.arange(s).unsqueeze(0).expand(b, s)
        # Without labels the last stage returns vocab-parallel logits (b, s, V/tp); other stages hidden states.
        out = model_chunk(mb["input_ids"], position_ids, None, padding_mask=_router_padding_mask(mb))
        return out, partial(on_logits, mb)

    b, s = micro_batches[0]["input_ids"].shape
    return get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(micro_batches),
        model=[model],
        num_microbatches=len(micro_batches),
        seq_length=s,
        micro_batch_size=b,
        forward_only=forward_only,
    )


def compute_logprobs(
    model: torch.nn.Module, micro_batches: list[dict[str, torch.Tensor]], temperature: float = 1.0
) -> list[torch.Tensor]:
    """No-grad log-probs of the labels at ``temperature``: one (b, s) tensor per micro-batch (last PP
    stage; [] elsewhere)."""

    def loss_fn(mb, logp):  # noqa: ANN001, ANN202
        zero = torch.zeros((), dtype=logp.dtype)
        return zero, torch.tensor(1, dtype=torch.int), {"logp": logp.detach()}

    was_training = model.training  # a frozen reference stays in eval mode, a policy returns to train
    model.eval()
    try:
        with torch.no_grad():
            outs = run_schedule(model, micro_batches, loss_fn, forward_only=True, temperature=temperature)
    finally:
        model.train(was_training)
    return [o["logp"] for o in outs]


def is_reporting_rank() -> bool:
    """The one rank that prints: last PP stage, TP rank 0, DP rank 0."""
    return (
        parallel_state.is_pipeline_last_stage()
        and parallel_state.get_tensor_model_parallel_rank() == 0
        and parallel_state.get_data_parallel_rank() == 0
    )
