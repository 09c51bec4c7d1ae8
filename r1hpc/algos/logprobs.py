"""Memory-frugal log-probs of chosen tokens, and entropy, from logits or from hidden states.

Why: the naive ``log_softmax(logits.float(), -1).gather(...)`` materialises a (T, V) fp32 tensor
(and autograd keeps it). At DeepSeek-V3's vocabulary V = 129,280 and a 32k-token response that is
32,768 * 129,280 * 4 B = 16.9 GB per sequence, before the backward pass doubles it.

Here the tokens are processed in chunks of ``chunk_size`` rows: each chunk computes
``logit[label] - logsumexp(logits)`` in fp32 and only the (N,) logsumexp is kept for backward,
which recomputes the softmax of one chunk at a time (custom autograd Functions, so gradients are
exact, not approximated). ``logprobs_from_hidden`` goes one step further and never forms the
(B, T, V) logits at all: it multiplies each chunk of hidden states by the lm_head weight, so peak
extra memory is about ``chunk_size * V`` floats. That is the form that fits at scale (with a
vocab-parallel lm_head under tensor parallelism, Megatron's vocab-parallel cross entropy plays
this role instead).

``temperature`` divides the logits first, as the sampler did, so that log-probs match the
distribution the rollout sampled from.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from r1hpc.algos._checks import check_float, check_int, check_positive_int


def _check_labels(labels: torch.Tensor, lead_shape: tuple[int, ...], vocab: int) -> None:
    check_int("labels", labels, ndim=len(lead_shape))
    if tuple(labels.shape) != lead_shape:
        raise ValueError(f"shape mismatch: labels {tuple(labels.shape)}, expected {lead_shape}")
    if labels.numel() and (bool((labels < 0).any()) or bool((labels >= vocab).any())):
        raise ValueError(
            f"labels must lie in [0, {vocab}) (the vocabulary size); got min {int(labels.min())}, "
            f"max {int(labels.max())}"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _scale(x: torch.Tensor, temperature: float, owned: bool = False) -> torch.Tensor:
    """x / temperature, in place when ``x`` is a temporary we own (saves one (n, V) buffer)."""
    if temperature == 1.0:
        return x
    return x.div_(temperature) if owned else x / temperature


def _grad_logits_chunk(
    x: torch.Tensor, lse: torch.Tensor, labels: torch.Tensor, g: torch.Tensor, temperature: float
) -> torch.Tensor:
    """d(sum_i g_i * logp_i)/d(raw logits) for one chunk: g * (onehot - softmax) / temperature.

    x: (n, V) fp32 logits already divided by temperature; lse: (n,); labels: (n,); g: (n,).
    """
    grad = torch.sub(x, lse[:, None]).exp_().mul_(-g[:, None])  # one (n, V) buffer, the rest in place
    grad.scatter_add_(1, labels[:, None], g[:, None])
    return grad.div_(temperature) if temperature != 1.0 else grad


def _chunk_views(x: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(flat start, (n, V) view) pairs covering a (B, T, V) tensor in row-major token order.

    A contiguous tensor is walked as one flat (B*T, V) view; a non-contiguous one (typically
    ``logits[:, :-1]``) row by row, since reshaping it would copy the whole (B, T, V) tensor.
    """
    b, t, v = x.shape
    if x.is_contiguous():
        flat = x.view(b * t, v)
        for s in range(0, b * t, chunk):
            yield s, flat[s : s + chunk]
    else:
        for i in range(b):
            for s in range(0, t, chunk):
                yield i * t + s, x[i, s : s + chunk]


class _LogProbsFromLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, chunk: int, temperature: float):  # type: ignore[override]
        n = logits.shape[0] * logits.shape[1]
        out = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse_all = torch.empty(n, dtype=torch.float32, device=logits.device)
        for s, view in _chunk_views(logits, chunk):
            e = s + view.shape[0]
            x = _scale(view.float(), temperature)
            lse = torch.logsumexp(x, dim=-1)
            out[s:e] = x.gather(1, labels[s:e, None]).squeeze(1) - lse
            lse_all[s:e] = lse
        ctx.save_for_backward(logits, labels, lse_all)
        ctx.chunk, ctx.temperature = chunk, temperature
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        logits, labels, lse_all = ctx.saved_tensors
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_flat = grad.view(-1, logits.shape[-1])
        g_all = grad_out.float()
        for s, view in _chunk_views(logits, ctx.chunk):
            e = s + view.shape[0]
            x = _scale(view.float(), ctx.temperature)
            grad_flat[s:e] = _grad_logits_chunk(x, lse_all[s:e], labels[s:e], g_all[s:e], ctx.temperature)
        return grad, None, None, None


class _LogProbsFromHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, temperature, want_entropy):  # type: ignore[override]
        n = hidden.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse_all = torch.empty(n, dtype=torch.float32, device=hidden.device)
        ent = torch.empty(n if want_entropy else 0, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk):
            x = _scale((hidden[s : s + chunk] @ weight.t()).float(), temperature, owned=True)  # (c, V)
            lse = torch.logsumexp(x, dim=-1)
            out[s : s + chunk] = x.gather(1, labels[s : s + chunk, None]).squeeze(1) - lse
            lse_all[s : s + chunk] = lse
            if want_entropy:
                p = torch.exp(x - lse[:, None])
                ent[s : s + chunk] = lse - (p * x).sum(-1)
        ctx.save_for_backward(hidden, weight, labels, lse_all)
        ctx.chunk, ctx.temperature = chunk, temperature
        ctx.mark_non_differentiable(ent)
        return out, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor, _grad_ent: torch.Tensor):  # type: ignore[override]
        hidden, weight, labels, lse_all = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        # Accumulate the weight gradient over chunks in fp32 even for bf16 weights.
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        g_all = grad_out.float()
        for s in range(0, hidden.shape[0], ctx.chunk):
            sl = slice(s, s + ctx.chunk)
            h = hidden[sl]
            x = _scale((h @ weight.t()).float(), ctx.temperature, owned=True)  # recomputed, not saved
            gl = _grad_logits_chunk(x, lse_all[sl], labels[sl], g_all[sl], ctx.temperature).to(hidden.dtype)
            if need_h:
                grad_h[sl] = gl @ weight.to(hidden.dtype)
            if need_w:
                if gl.dtype == torch.float32:
                    grad_w.addmm_(gl.t(), h)  # no (V, H) temporary per chunk
                else:
                    grad_w += (gl.t() @ h).float()
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None, None


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probs of the chosen tokens, chunked over tokens, with exact gradients.

    Args:
        logits: (B, T, V) any float dtype, finite; a non-contiguous view such as ``logits[:, :-1]``
            is read in place, never copied.
        labels: (B, T) int token ids in [0, V).
        chunk_size: tokens per chunk; peak extra memory is about 2 * chunk_size * V fp32
            (plus the (B, T, V) gradient in backward, which autograd needs anyway).
        temperature: the sampling temperature (> 0); logits are divided by it.

    Returns:
        (B, T) fp32 ``log softmax(logits / temperature)[label]``; differentiable w.r.t. logits.
    """
    check_float("logits", logits, ndim=3)
    _check_labels(labels, tuple(logits.shape[:2]), logits.shape[2])
    check_positive_int("chunk_size", chunk_size)
    _check_temperature(temperature)
    b, t, _ = logits.shape
    out = _LogProbsFromLogits.apply(logits, labels.reshape(-1), chunk_size, float(temperature))
    return out.view(b, t)


def logprobs_from_hidden(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the chosen tokens from the last hidden states, never forming (B, T, V) logits.

    Gradients flow to ``hidden`` and ``lm_head_weight`` (a custom autograd Function that recomputes
    each chunk's logits in backward).

    Args:
        hidden: (B, T, H) final hidden states (after the final norm); a non-contiguous view is
            copied once, which is cheap since H << V.
        lm_head_weight: (V, H) output projection (no bias), same dtype as ``hidden``.
        labels: (B, T) int token ids in [0, V).
        chunk_size: tokens per chunk; peak extra memory is about 3 * chunk_size * V fp32.
        temperature: the sampling temperature (> 0).
        return_entropy: also return the per-token entropy of softmax(logits / temperature),
            computed in the same pass, as a metric (no gradient).

    Returns:
        (B, T) fp32 log-probs, or ((B, T) log-probs, (B, T) entropy) with ``return_entropy``.
    """
    check_float("hidden", hidden, ndim=3)
    check_float("lm_head_weight", lm_head_weight, ndim=2)
    if lm_head_weight.shape[1] != hidden.shape[2]:
        raise ValueError(
            f"shape mismatch: hidden {tuple(hidden.shape)}, lm_head_weight {tuple(lm_head_weight.shape)}; "
            "expected (B, T, H) and (V, H)"
        )
    if lm_head_weight.dtype != hidden.dtype:
        raise ValueError(f"dtype mismatch: hidden {hidden.dtype}, lm_head_weight {lm_head_weight.dtype}")
    _check_labels(labels, tuple(hidden.shape[:2]), lm_head_weight.shape[0])
    check_positive_int("chunk_size", chunk_size)
    _check_temperature(temperature)
    b, t, h = hidden.shape
    out, ent = _LogProbsFromHidden.apply(
        hidden.reshape(b * t, h), lm_head_weight, labels.reshape(-1), chunk_size, float(temperature), return_entropy
    )
    if return_entropy:
        return out.view(b, t), ent.view(b, t)
    return out.view(b, t)


def _entropy_chunk(x: torch.Tensor, temperature: float) -> torch.Tensor:
    x = _scale(x.float(), temperature)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    return lse.squeeze(-1) - (torch.exp(x - lse) * x).sum(-1)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 1024, temperature: float = 1.0) -> torch.Tensor:
    """Per-token entropy of softmax(logits / temperature), chunked over tokens.

    With grad enabled each chunk is checkpointed, so backward also holds only one chunk's softmax.

    Args:
        logits: (B, T, V) any float dtype, finite.
        chunk_size: tokens per chunk.
        temperature: > 0.

    Returns:
        (B, T) fp32 entropy in nats.
    """
    check_float("logits", logits, ndim=3)
    check_positive_int("chunk_size", chunk_size)
    _check_temperature(temperature)
    b, t, _ = logits.shape
    grad = torch.is_grad_enabled() and logits.requires_grad
    parts = [
        checkpoint(_entropy_chunk, x, temperature, use_reentrant=False) if grad else _entropy_chunk(x, temperature)
        for _, x in _chunk_views(logits, chunk_size)
    ]
    if not parts:
        return torch.empty(b, t, dtype=torch.float32, device=logits.device)
    return torch.cat(parts).view(b, t)
