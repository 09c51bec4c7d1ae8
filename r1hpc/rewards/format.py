"""Format reward of DeepSeek-R1: reasoning in <think>...</think>, then the answer in <answer>...</answer>.

Strict, no partial credit: 1.0 iff the completion is exactly one ``<think>`` block followed by
exactly one ``<answer>`` block, with nothing but whitespace before, between and after them, no
tag of either kind inside either block, and non-empty (non-whitespace) content in both. Tags are
matched exactly (lower case, no attributes). Everything else scores 0.0.

Prompt templates that end with ``<think>`` (the R1 chat template opens the thinking block for the
model): set ``example["prompt_ends_with_think"] = True``. The completion is then judged as if
``"<think>"`` were prepended to it, so it must *not* open the block again (a completion starting
with ``<think>`` would hold two opening tags and scores 0.0).
"""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_STRICT = re.compile(r"\A\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*\Z", re.DOTALL)


def _prompt_ends_with_think(example: dict) -> bool:
    flag = example.get("prompt_ends_with_think", False)
    if not isinstance(flag, bool):
        raise ValueError(f"example['prompt_ends_with_think'] must be a bool, got {flag!r}")
    return flag


def full_text(completion: str, example: dict) -> str:
    """The completion with the template's opening ``<think>`` restored when the prompt held it."""
    return THINK_OPEN + completion if _prompt_ends_with_think(example) else completion


def parse_strict(completion: str, example: dict) -> tuple[str, str] | None:
    """(think content, answer content) if the completion has the strict format, else None."""
    text = full_text(completion, example)
    m = _STRICT.match(text)
    if m is None:
        return None
    think, answer = m.group(1), m.group(2)
    # The lazy match stops at the first closing tag; any other tag inside means nesting or repeats.
    if any(tag in part for part in (think, answer) for tag in _TAGS):
        return None
    if not think.strip() or not answer.strip():
        return None
    return think, answer


def format_reward(completion: str, example: dict) -> float:
    """1.0 if ``completion`` has exactly the R1 format (see module doc), else 0.0."""
    return 1.0 if parse_strict(completion, example) is not None else 0.0


def think_content(completion: str, example: dict) -> str | None:
    """The chain of thought: the text of the first <think>...</think> block, or None if there is
    no closed block. Lenient on purpose (used by the language reward, which should not depend on
    the answer block being well formed)."""
    text = full_text(completion, example)
    start = text.find(THINK_OPEN)
    if start < 0:
        return None
    end = text.find(THINK_CLOSE, start + len(THINK_OPEN))
    if end < 0:
        return None
    return text[start + len(THINK_OPEN) : end]


def answer_content(completion: str, example: dict) -> str | None:
    """The text of the last <answer>...</answer> block after the chain of thought, or None."""
    text = full_text(completion, example)
    cut = text.rfind(THINK_CLOSE)
    tail = text[cut + len(THINK_CLOSE) :] if cut >= 0 else text
    start = tail.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    end = tail.find(ANSWER_CLOSE, start)
    if end < 0:
        return None
    return tail[start + len(ANSWER_OPEN) : end]
