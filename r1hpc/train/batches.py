"""Token batches for training: prompt + response sequences, right-padded, with a loss mask.

Position t of `labels`/`loss_mask` is the prediction of token t+1 from tokens <= t, so a
response token's log-prob sits at the position just before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["TokenBatch", "pack", "batch_rows", "check_pairs"]


@dataclass
class TokenBatch:
    """B sequences of up to L tokens.

    input_ids: (B, L) long, right-padded with pad_id.
    attention_mask: (B, L) long, 1 on real tokens.
    labels: (B, L-1) long, input_ids shifted left (pad where there is no next token).
    loss_mask: (B, L-1) bool, True where labels[t] is a response (trained) token.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    loss_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> TokenBatch:
        """Rows `index`, trimmed to the longest remaining sequence."""
        ids, att = self.input_ids[index], self.attention_mask[index]
        length = max(int(att.sum(1).max()), 2)
        return TokenBatch(
            ids[:, :length],
            att[:, :length],
            self.labels[index][:, : length - 1],
            self.loss_mask[index][:, : length - 1],
        )


def pack(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, max_len: int | None = None
) -> TokenBatch:
    """Concatenate each prompt with its response; only response tokens are in the loss mask.

    A sequence longer than max_len is cut at max_len (its tail tokens are not trained) rather than
    silently dropped, so every record still gets its reward's gradient on the kept tokens.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"pack: {len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("pack: empty batch")
    seqs, starts = [], []
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if len(p) == 0:
            raise ValueError(f"pack: record {i} has an empty prompt (need at least one token to condition on)")
        seq = list(p) + list(r)
        seqs.append(seq[:max_len] if max_len else seq)
        starts.append(len(p))
    length = max(max(len(s) for s in seqs), 2)
    b = len(seqs)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    loss_mask = torch.zeros((b, length - 1), dtype=torch.bool)
    for i, (seq, start) in enumerate(zip(seqs, starts)):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        # labels[t] = seq[t+1]: response tokens seq[start:] are predicted at positions start-1 ...
        loss_mask[i, start - 1 : len(seq) - 1] = True
    labels = torch.full((b, length - 1), pad_id, dtype=torch.long)
    labels[:, :] = input_ids[:, 1:]
    return TokenBatch(input_ids, attention, labels, loss_mask)


def batch_rows(step: int, n: int, batch_size: int, seed: int, orders: dict[int, torch.Tensor]) -> list[int]:
    """Row indices of the global batch of `step`: train_sft's order, a function of (seed, epoch) only."""
    rows = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n)
        if epoch not in orders:
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        rows.append(int(orders[epoch][i]))
    return rows


def check_pairs(prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], trainer: str) -> None:
    """ValueError naming `trainer` unless there are equally many prompts and targets, and some."""
    if len(prompts) != len(targets) or not prompts:
        raise ValueError(
            f"{trainer}: need equally many prompts and targets (> 0), got {len(prompts)} and {len(targets)}"
        )
