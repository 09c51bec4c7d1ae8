"""Train the tiny model's byte-level BPE tokenizer locally and save it as a transformers
`PreTrainedTokenizerFast` directory (no hub access).

Digits are split one per token before BPE: a tiny model learns column arithmetic far more
easily when "123" is always "1","2","3" than when merges create arbitrary number chunks.
The R1 tags and eos/pad are special tokens, so each is exactly one id. `load_tokenizer` also
loads a released checkpoint's tokenizer, which needs none of these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`; deterministic for the same texts in the same order."""
    if not 300 <= vocab_size <= 65536:
        # 256 byte symbols + specials must fit, with room for merges
        raise ValueError(f"vocab_size must be in 300..65536, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD, *TAG_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(TAG_TOKENS),
        padding_side="left",
    )  # generation batches are left-padded
    return fast


def save_tokenizer(tok: PreTrainedTokenizerFast, path: str | Path) -> None:
    tok.save_pretrained(str(path))


def load_tokenizer(path: str | Path, pad_token: str = "") -> PreTrainedTokenizerBase:
    """Load the tokenizer of a model directory: the tiny one trained here or a released checkpoint's.

    Nothing beyond an eos token is required: the R1 tags are plain text to a tokenizer without
    tokens for them. pad is `pad_token` when given (it must be one token of the vocabulary), else
    the tokenizer's own, else eos (batches carry explicit attention masks, so a pad id equal to
    eos never hides a real eos).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: tokenizer directory does not exist")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path}: no tokenizer (expected one of {', '.join(_TOKENIZER_FILES)}, as written by save_pretrained)"
        )
    try:
        # tokenizer.json is the tokenizer exactly as saved; AutoTokenizer may rebuild it from the
        # model type instead (transformers 5 turned the tiny tokenizer into a Qwen2Tokenizer with
        # another pre-tokenizer), so it is only the fallback (e.g. a sentencepiece tokenizer.model).
        if (path / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast.from_pretrained(str(path))
        else:
            tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: tokenizer does not load: {type(e).__name__}: {e}") from e
    if tok.eos_token_id is None:
        raise ValueError(
            f"{path}: the tokenizer has no eos_token; generation could never stop "
            f"(set eos_token in tokenizer_config.json)"
        )
    if pad_token:
        _single_token_id(tok, pad_token, path, "model.pad_token")
        tok.pad_token = pad_token
    elif tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _single_token_id(tok: PreTrainedTokenizerBase, token: str, path: Path, key: str) -> int:
    ids = tok.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"{path}: {key} {token!r} encodes to {len(ids)} ids {ids[:8]}; expected one token "
            f"of the tokenizer's vocabulary"
        )
    return ids[0]


def stop_token_ids(tok: PreTrainedTokenizerBase, model_dir: str | Path, extra_tokens: Iterable[str] = ()) -> list[int]:
    """Token ids that end a completion: the tokenizer's eos, the eos ids of the checkpoint's
    generation_config.json (chat models list the end-of-turn token there, e.g. Qwen's
    <|im_end|> beside <|endoftext|>) and `extra_tokens` (config model.eos_tokens). eos first."""
    ids = [tok.eos_token_id]
    config = Path(model_dir) / "generation_config.json"
    if config.is_file():
        try:
            listed = json.loads(config.read_text()).get("eos_token_id")
        except json.JSONDecodeError as e:
            raise ValueError(f"{config}: not valid JSON: {e}") from e
        for i in listed if isinstance(listed, list) else [listed]:
            if isinstance(i, int) and not isinstance(i, bool):
                ids.append(i)
            elif i is not None:
                raise ValueError(f"{config}: eos_token_id must be an int or a list of ints, got {listed!r}")
    for t in extra_tokens:
        ids.append(_single_token_id(tok, t, Path(model_dir), "model.eos_tokens"))
    return list(dict.fromkeys(ids))
