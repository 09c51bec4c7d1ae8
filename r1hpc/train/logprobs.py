"""Per-token log-probs of a causal LM on a TokenBatch, computed by the trainer itself.

The trainer never trusts the generator's log-probs for the loss (vLLM and HF differ in kernels and
sampling details); it recomputes old, reference and new log-probs with the same code path here,
chunked from the final hidden states so the (B, L, V) logits are never materialised.
"""

from __future__ import annotations

import torch

from r1hpc.algos import logprobs_from_hidden
from r1hpc.train.batches import TokenBatch

__all__ = ["token_logprobs"]


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.Tensor]:
    """transformers causal LMs keep the decoder in `.model` and the output projection in `.lm_head`."""
    decoder = getattr(model, "model", None)
    head = getattr(model, "lm_head", None)
    if decoder is None or head is None or getattr(head, "bias", None) is not None:
        raise TypeError(
            f"{type(model).__name__}: expected a transformers causal LM with .model and a bias-free .lm_head"
        )
    return decoder, head.weight


def token_logprobs(
    model: torch.nn.Module,
    batch: TokenBatch,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of batch.labels under `model` at `temperature`.

    Returns (B, L-1) fp32 log-probs (differentiable when grad is enabled), and with_entropy also the
    (B, L-1) entropy of the token distribution (no grad). Values outside batch.loss_mask are
    meaningless and must be masked by the caller.
    """
    decoder, weight = _decoder_and_head(model)
    hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return logprobs_from_hidden(
        hidden[:, :-1],
        weight,
        batch.labels,
        chunk_size=chunk_size,
        temperature=temperature,
        return_entropy=with_entropy,
    )
