"""Scored rollouts as Megatron micro-batches, and a synthetic rollout source for CPU tests.

A ``RolloutBatch`` is the global batch of one GRPO step: B = prompts x G outputs, each a prompt
followed by a response, already scored. Positions are next-token aligned: ``input_ids[:, t]``
predicts ``labels[:, t]``; ``mask[:, t]`` is True where ``labels[:, t]`` is a response token and
``token_mask[:, t]`` where it is any real token (prompt or response), False at padding: the
positions a forward pass of the row alone, unpadded, would have. The width S is padded to a
multiple of ``pad_multiple`` (TP size under sequence parallel) and rows shorter than the longest
are padded too; the train steps pass ``~token_mask`` to the MoE routers so that how much padding a
batch has does not change the expert-bias update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutBatch:
    """Global batch of scored rollouts.

    input_ids: (B, S) int64; labels: (B, S) int64; mask: (B, S) bool;
    rewards: (B,) float32; group_ids: (B,) int64 (the prompt index of each output);
    token_mask: (B, S) bool, True where labels[:, t] is a real token (a superset of mask), or None
    when unknown (every position then counts as a token in the routers' statistics).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    token_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        b, s = self.input_ids.shape
        for name in ("labels", "mask") + (("token_mask",) if self.token_mask is not None else ()):
            if tuple(getattr(self, name).shape) != (b, s):
                raise ValueError(f"RolloutBatch.{name} has shape {tuple(getattr(self, name).shape)}, expected {(b, s)}")
        for name in ("rewards", "group_ids"):
            if tuple(getattr(self, name).shape) != (b,):
                raise ValueError(f"RolloutBatch.{name} has shape {tuple(getattr(self, name).shape)}, expected {(b,)}")
        if self.mask.dtype != torch.bool:
            raise ValueError(f"RolloutBatch.mask must be bool, got {self.mask.dtype}")
        if self.token_mask is not None and self.token_mask.dtype != torch.bool:
            raise ValueError(f"RolloutBatch.token_mask must be bool, got {self.token_mask.dtype}")

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])


def from_sequences(
    tokens: torch.Tensor,
    response_start: torch.Tensor,
    response_end: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    pad_id: int = 0,
    pad_multiple: int = 1,
) -> RolloutBatch:
    """Build a batch from full sequences (prompt + response) and the response span of each.

    Args:
        tokens: (B, L) int64 prompt+response tokens (anything after ``response_end`` is padding).
        response_start, response_end: (B,) the response is ``tokens[i, start:end]`` (start >= 1).
        rewards: (B,) float; group_ids: (B,) int.
        pad_id: token id written into padded positions.
        pad_multiple: S = L - 1 is rounded up to a multiple of this.
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be (B, L) with L >= 2, got {tuple(tokens.shape)}")
    b, length = tokens.shape
    if (
        bool((response_start < 1).any())
        or bool((response_end > length).any())
        or bool((response_end <= response_start).any())
    ):
        raise ValueError("response spans must satisfy 1 <= start < end <= L for every row")
    s = length - 1
    s_pad = -(-s // pad_multiple) * pad_multiple
    input_ids = torch.full((b, s_pad), pad_id, dtype=torch.long)
    labels = torch.full((b, s_pad), pad_id, dtype=torch.long)
    input_ids[:, :s] = tokens[:, :-1]
    labels[:, :s] = tokens[:, 1:]
    pos = torch.arange(s_pad)[None, :] + 1  # the position in ``tokens`` that labels[:, t] holds
    mask = (pos >= response_start[:, None]) & (pos < response_end[:, None])
    # Not ``t < end``: the last real token predicts only padding, and a row batched alone without
    # padding would not have it as an input either.
    token_mask = pos < response_end[:, None]
    return RolloutBatch(input_ids, labels, mask, rewards.float(), group_ids.long(), token_mask)


def even_token_reward(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The synthetic rule reward: fraction of response tokens that are even. (B, S) -> (B,)."""
    even = (tokens % 2 == 0) & mask
    return even.sum(-1).float() / mask.sum(-1).clamp(min=1).float()


def synthetic_rollouts(
    step: int,
    *,
    n_prompts: int,
    group_size: int,
    prompt_len: int,
    response_len: int,
    vocab_size: int,
    seed: int = 0,
    pad_multiple: int = 1,
) -> RolloutBatch:
    """Random prompts and responses scored by ``even_token_reward``; the same on every rank.

    Each group shares its prompt; responses are drawn with a per-row bias towards even tokens so
    rewards within a group differ (non-zero advantages).
    """
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    b = n_prompts * group_size
    prompts = torch.randint(0, vocab_size, (n_prompts, prompt_len), generator=g).repeat_interleave(group_size, 0)
    resp = torch.randint(0, vocab_size // 2, (b, response_len), generator=g) * 2  # even
    odd = torch.rand(b, 1, generator=g) < torch.rand(b, response_len, generator=g)
    resp = resp + odd.long()  # row-dependent share of odd tokens
    tokens = torch.cat([prompts, resp], dim=1)
    start = torch.full((b,), prompt_len)
    end = torch.full((b,), prompt_len + response_len)
    group_ids = torch.arange(n_prompts).repeat_interleave(group_size)
    batch = from_sequences(tokens, start, end, torch.zeros(b), group_ids, pad_multiple=pad_multiple)
    batch.rewards = even_token_reward(batch.labels, batch.mask)
    return batch


def even_micro_batch_size(per_rank: int, wanted: int) -> int:
    """The largest divisor of a rank's rows that is <= ``wanted``: equal micro-batches (a pipeline
    schedule passes activations of one shape between stages)."""
    return max(d for d in range(1, min(per_rank, wanted) + 1) if per_rank % d == 0)


def shard_for_rank(
    batch: RolloutBatch, dp_rank: int, dp_size: int, micro_batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """This data-parallel rank's contiguous slice of the batch, cut into micro-batches.

    Returns a list of dicts with keys input_ids, labels, mask, token_mask when the batch has one
    (each (micro_batch_size, S)) and ``index`` ((micro_batch_size,) rows of the global batch).
    """
    if batch.size % (dp_size * micro_batch_size):
        raise ValueError(
            f"global batch {batch.size} is not divisible by dp_size {dp_size} x micro_batch_size {micro_batch_size}"
        )
    per_rank = batch.size // dp_size
    rows = torch.arange(dp_rank * per_rank, (dp_rank + 1) * per_rank)
    out = []
    for chunk in rows.split(micro_batch_size):
        mb = {
            "input_ids": batch.input_ids[chunk],
            "labels": batch.labels[chunk],
            "mask": batch.mask[chunk],
            "index": chunk,
        }
        if batch.token_mask is not None:
            mb["token_mask"] = batch.token_mask[chunk]
        out.append(mb)
    return out
