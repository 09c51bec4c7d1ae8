"""Train the tiny model's byte-level BPE tokenizer locally and save it as a transformers
`PreTrainedTokenizerFast` directory (no hub access).

Digits are split one per token before BPE: a tiny model learns column arithmetic far more
easily when "123" is always "1","2","3" than when merges create arbitrary number chunks.
The R1 tags and eos/pad are special tokens, so each is exactly one id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`; deterministic for the same texts in the same order."""
    if not 300 <= vocab_size <= 65536:
        # 256 byte symbols + specials must fit, with room for merges
        raise ValueError(f"vocab_size must be in 300..65536, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD, *TAG_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=list(TAG_TOKENS),
                                   padding_side="left")  # generation batches are left-padded
    return fast


def save_tokenizer(tok: PreTrainedTokenizerFast, path: str | Path) -> None:
    tok.save_pretrained(str(path))


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer directory and check the specials this project relies on."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json (expected a directory written by "
                                f"save_tokenizer / save_pretrained)")
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    for t in (EOS, PAD, *TAG_TOKENS):
        ids = tok.encode(t, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{path}: special token {t!r} encodes to {ids}, expected one id")
    return tok
