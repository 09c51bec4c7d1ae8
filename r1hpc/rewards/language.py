"""Language-consistency reward of DeepSeek-R1: the share of the chain of thought in the target language.

R1 adds "the proportion of target language words in the CoT" to discourage language mixing. This
is a script-based version with no dependency beyond ``unicodedata``:

* the CoT is the content of the first ``<think>...</think>`` block (``format.think_content``;
  ``example["prompt_ends_with_think"]`` is honoured);
* math is removed first: display and inline math spans (``$$..$$``, ``$..$``, ``\\[..\\]``,
  ``\\(..\\)``) entirely, then LaTeX commands (``\\frac``, ``\\alpha``...) anywhere;
* words are maximal runs of letters of one script (combining marks stay with their letter);
  Han, Hiragana and Katakana have no spaces between words, so each such character counts as one
  word (an over-count against Chinese/Japanese in mixed text, accepted for simplicity);
* digits, operators and punctuation are not words; one-letter words of Latin, Greek or Cyrillic are
  dropped too (variables such as ``x``, ``n``, ``α``; the English "a" and "I" go with them);
* reward = words in the target language's scripts / all words counted.

Edge cases: no ``<think>`` block, or a block with only whitespace: 0.0 (there is no chain of thought
to be in the right language). A chain of thought with no countable word (pure math such as
``2+2=4``): 1.0, because nothing in it is in another language.

``example["language"]``: an ISO 639-1 code, default "en"; an unknown code is an error.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from r1hpc.rewards.format import think_content

_LATIN = frozenset({"Latin"})
# ISO 639-1 code -> scripts whose words count as that language.
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    **{code: _LATIN for code in ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "fi",
                                 "pl", "cs", "ro", "hu", "tr", "id", "vi", "ca")},
    "zh": frozenset({"Han"}),
    "ja": frozenset({"Han", "Hiragana", "Katakana"}),
    "ko": frozenset({"Hangul"}),
    "ru": frozenset({"Cyrillic"}), "uk": frozenset({"Cyrillic"}), "bg": frozenset({"Cyrillic"}),
    "el": frozenset({"Greek"}), "ar": frozenset({"Arabic"}), "fa": frozenset({"Arabic"}),
    "he": frozenset({"Hebrew"}), "hi": frozenset({"Devanagari"}), "th": frozenset({"Thai"}),
}
# Unicode character-name prefixes -> script (checked in order).
_NAME_PREFIXES = (
    ("LATIN", "Latin"), ("CJK UNIFIED IDEOGRAPH", "Han"), ("CJK COMPATIBILITY IDEOGRAPH", "Han"),
    ("HIRAGANA", "Hiragana"), ("KATAKANA", "Katakana"), ("HALFWIDTH KATAKANA", "Katakana"),
    ("HANGUL", "Hangul"), ("CYRILLIC", "Cyrillic"), ("GREEK", "Greek"), ("ARABIC", "Arabic"),
    ("HEBREW", "Hebrew"), ("DEVANAGARI", "Devanagari"), ("THAI", "Thai"),
)
_PER_CHARACTER = frozenset({"Han", "Hiragana", "Katakana"})
_ALPHABETIC = frozenset({"Latin", "Greek", "Cyrillic"})
_MATH_SPAN = re.compile(r"\$\$.*?\$\$|\$[^$]*?\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")


@lru_cache(maxsize=65536)
def script_of(ch: str) -> str | None:
    """The script of a letter ("Latin", "Han", ...), "Other" for letters of unlisted scripts,
    None for anything that is not a letter."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    for prefix, script in _NAME_PREFIXES:
        if name.startswith(prefix):
            return script
    return "Other"


def words_by_script(text: str) -> list[tuple[str, str]]:
    """(word, script) for each countable word of ``text`` after removing math (see module doc)."""
    text = _LATEX_COMMAND.sub(" ", _MATH_SPAN.sub(" ", text))
    words: list[tuple[str, str]] = []
    current, current_script = [], None

    def flush() -> None:
        if current and not (current_script in _ALPHABETIC and len(current) == 1):
            words.append(("".join(current), current_script))
        current.clear()

    for ch in text:
        script = script_of(ch)
        if script is None:
            if current and unicodedata.category(ch).startswith("M"):
                current.append(ch)  # a combining mark belongs to the word it is in
                continue
            flush()
            current_script = None
            continue
        if script in _PER_CHARACTER:
            flush()
            current_script = script
            words.append((ch, script))
            continue
        if script != current_script:
            flush()
            current_script = script
        current.append(ch)
    flush()
    return words


def target_scripts(example: dict) -> frozenset[str]:
    lang = example.get("language", "en")
    if lang not in LANGUAGE_SCRIPTS:
        raise ValueError(f"example['language'] = {lang!r} is not supported; expected one of "
                         f"{sorted(LANGUAGE_SCRIPTS)}")
    return LANGUAGE_SCRIPTS[lang]


def language_consistency_reward(completion: str, example: dict) -> float:
    """Share in [0, 1] of the chain of thought's words written in the target language's script."""
    scripts = target_scripts(example)
    cot = think_content(completion, example)
    if cot is None or not cot.strip():
        return 0.0
    words = words_by_script(cot)
    if not words:
        return 1.0
    return sum(1 for _, s in words if s in scripts) / len(words)
