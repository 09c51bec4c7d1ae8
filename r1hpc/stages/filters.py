"""Text filters of R1's rejection sampling, as pure functions (string operations only).

R1 keeps only correct samples and then drops chains of thought with mixed languages, long
paragraphs and code blocks; at the scale of this project a sample that ran into the length
limit (an unfinished answer) and one that loops on itself are the common failure modes, so
those are filtered too. Duplicates are removed after normalising away case and whitespace.

None of these parse or evaluate model output, so they are safe in any process.
"""

from __future__ import annotations

import re
import unicodedata

from r1hpc.rewards.language import LANGUAGE_SCRIPTS, words_by_script

__all__ = [
    "REPEAT_NGRAM",
    "MAX_REPEAT_FRACTION",
    "normalize_text",
    "repeated_ngram_fraction",
    "is_repetitive",
    "target_language_share",
    "is_mixed_language",
    "has_code_block",
]

# A sample is repetitive when more than MAX_REPEAT_FRACTION of its word 4-grams already occurred
# earlier in it. Readable worked solutions here repeat a few short patterns ("Step 2: ... = ..."),
# which stays well under 0.3; a model stuck in a loop quickly goes above 0.5.
REPEAT_NGRAM = 4
MAX_REPEAT_FRACTION = 0.3

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+|[^\w\s]")
_FENCE = re.compile(r"```|~~~")
_R1_TAG = re.compile(r"</?(?:think|answer)>")


def normalize_text(text: str) -> str:
    """The dedup key of a sample: NFKC, case-folded, whitespace runs collapsed to one space."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def repeated_ngram_fraction(text: str, n: int = REPEAT_NGRAM) -> float:
    """Share in [0, 1] of the word n-grams of `text` that repeat an earlier n-gram.

    Words are runs of letters/digits and single punctuation marks, compared case-folded.
    A text of fewer than n words has no n-gram: 0.0.
    """
    if n < 1:
        raise ValueError(f"repeated_ngram_fraction: n must be >= 1, got {n}")
    words = _WORD.findall(text.casefold())
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for i in range(total):
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / total


def is_repetitive(text: str, n: int = REPEAT_NGRAM, max_fraction: float = MAX_REPEAT_FRACTION) -> bool:
    return repeated_ngram_fraction(text, n) > max_fraction


def target_language_share(text: str, language: str = "en") -> float:
    """Share in [0, 1] of the words of the WHOLE text (chain of thought and answer) written in
    the scripts of `language` (r1hpc.rewards.language's word rules; the <think>/<answer> tags are
    markup, not words); 1.0 when there are no words."""
    if language not in LANGUAGE_SCRIPTS:
        raise ValueError(f"language {language!r} is not supported; expected one of {sorted(LANGUAGE_SCRIPTS)}")
    words = words_by_script(_R1_TAG.sub(" ", text))  # the tags' names are no words of the text
    if not words:
        return 1.0
    scripts = LANGUAGE_SCRIPTS[language]
    return sum(1 for _, s in words if s in scripts) / len(words)


def is_mixed_language(text: str, language: str = "en") -> bool:
    """True when any word of the text is in a script other than the target language's."""
    return target_language_share(text, language) < 1.0


def has_code_block(text: str) -> bool:
    """R1 drops chains of thought with code blocks: a fenced block (``` or ~~~) anywhere."""
    return _FENCE.search(text) is not None
