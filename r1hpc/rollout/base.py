"""The rollout interface every generation backend implements (the factory that picks one: ``factory.py``).

A rollout array task loads the newest published policy (an HF model directory: safetensors +
config.json + tokenizer) and samples ``n`` responses per prompt. Both backends (HF generate in
``hf.py``, vLLM in ``vllm_engine.py``) return the same ``Sample`` records with the same meaning,
so the trainer and the metrics never need to know which one ran.

What ``Sample.logprobs`` means (identical in both backends): the natural log of the probability
of each sampled response token under the distribution it was actually drawn from, i.e.
``log_softmax(top_p_filter(logits / temperature))`` -- temperature APPLIED, and with top_p < 1 the
probabilities renormalised over the nucleus. At top_p = 1 this equals
``r1hpc.algos.logprobs_from_logits(logits, labels, temperature=temperature)``, the quantity the
trainer recomputes, so their difference is the generator/trainer mismatch. With top_p < 1 each
generator log-prob is >= the trainer's (truncation only removes mass from the tail).
temperature = 0 means greedy decoding, and its log-probs are then of the raw logits (T = 1).

Sampling settings stored in a model's generation_config.json (top_k, repetition_penalty, ...)
are deliberately ignored: a sample must come from exactly the distribution asked for here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from r1hpc.model.prompting import encode_prompt

FinishReason = Literal["stop", "length"]
Backend = Literal["hf", "vllm", "auto"]


@dataclass(frozen=True)
class Sample:
    """One sampled response.

    text: the decoded response (special tokens such as <think> kept), ending right after the
        first stop string when one was hit; the eos token itself is not in the text.
    token_ids: (L,) every sampled token id, including the final eos when the model emitted it
        (the trainer must learn to stop). When a stop string ended generation, the last token
        is the one that completed it (it may carry a few characters past the stop string).
    logprobs: (L,) per-token log-probs under the sampling distribution (module docstring).
    finish_reason: "stop" (eos or a stop string) or "length" (max_new_tokens reached).
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason


class Generator(Protocol):
    """A loaded policy that samples responses. ``backend`` is "hf" or "vllm"."""

    backend: str
    model_dir: Path

    def generate(
        self,
        prompts: list[str] | list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: list[str] | None = None,
    ) -> list[list[Sample]]:
        """Sample ``n`` responses to each prompt: result[i][j] is the j-th sample of prompts[i].

        A prompt is text (encoded with ``r1hpc.model.prompting.encode_prompt``) or the token ids
        to continue, used exactly as given (what a trainer that scores the same ids needs).

        The same (prompts, n, max_new_tokens, temperature, top_p, seed, stop) on the same
        weights and backend gives the same samples. Give every rollout shard its own seed
        (e.g. derived from run seed, step and shard index).
        """
        ...

    def load_weights(self, model_dir: str | Path) -> None:
        """Switch to the policy in ``model_dir`` (same architecture and tokenizer) in place."""
        ...

    def close(self) -> None:
        """Release the model / engine (worker processes included). Idempotent."""
        ...


def check_generate_args(
    prompts: list[str] | list[list[int]],
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    stop: list[str] | None,
) -> None:
    """Raise ValueError naming the argument and what was expected."""

    def ok(p: object) -> bool:
        return isinstance(p, str) or (
            isinstance(p, list)
            and bool(p)
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in p)
        )

    if not isinstance(prompts, list) or not all(ok(p) for p in prompts):
        raise ValueError(
            f"prompts must be a list of str or of non-empty token-id lists, got {type(prompts).__name__}"
            + (
                ""
                if not isinstance(prompts, list)
                else f" with element types {sorted({type(p).__name__ for p in prompts})}"
            )
        )
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (samples per prompt) must be an int >= 1, got {n!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise ValueError(f"stop must be None or a list of non-empty str, got {stop!r}")


def check_model_dir(model_dir: str | Path) -> Path:
    """The published-policy directory layout both backends need; returns it as a Path."""
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: policy directory does not exist")
    missing = [f for f in ("config.json",) if not (path / f).is_file()]
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        missing.append("tokenizer.json or tokenizer_config.json")
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise FileNotFoundError(
            f"{path}: missing {missing}; expected an HF model directory "
            f"(save_pretrained of the model and of its tokenizer)"
        )
    return path


def derive_seed(seed: int, *parts: object) -> int:
    """A well-mixed 31-bit seed for ``parts`` (an item index; or stage, step, shard, ...) under ``seed``.

    Stable across processes and reruns (a hash, not Python's salted ``hash``). Why hash: a vLLM
    request seed fixes its random stream, so giving every prompt the same seed makes all prompts
    draw the same uniforms -- near-identical samples across prompts; and hashing keeps
    (seed, index) pairs from colliding the way ``seed + index`` would. The stage jobs' seeds
    (``r1hpc.stages.common.stage_seed``) are this function.
    """
    digest = hashlib.blake2b(":".join(str(p) for p in (seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def prompt_ids(tokenizer: Any, prompts: list[str] | list[list[int]]) -> list[list[int]]:
    """Every prompt as token ids: ids as given, text through the one prompt encoder."""
    return [list(p) if isinstance(p, list) else encode_prompt(tokenizer, p) for p in prompts]


def load_generation_tokenizer(
    model_dir: Path, pad_token: str = "", eos_tokens: list[str] | tuple[str, ...] = ()
) -> tuple[Any, list[int]]:
    """(tokenizer with a pad token, the ids that end a completion) of a policy directory."""
    from r1hpc.model.tokenizer import load_tokenizer, stop_token_ids  # transformers: only where a model loads

    tokenizer = load_tokenizer(model_dir, pad_token=pad_token)
    tokenizer.padding_side = "left"  # generation continues from the last column
    return tokenizer, stop_token_ids(tokenizer, model_dir, eos_tokens)


def truncate_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut ``text`` right after the earliest stop string; (text, whether one was found)."""
    if not stop:
        return text, False
    ends = [text.find(s) + len(s) for s in stop if s in text]
    if not ends:
        return text, False
    return text[: min(ends)], True
