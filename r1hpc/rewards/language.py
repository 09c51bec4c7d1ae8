"""Language-consistency reward of DeepSeek-R1: the share of the chain of thought in the target language.

R1 adds "the proportion of target language words in the CoT" to discourage language mixing. This
is a script-based version with no dependency beyond ``unicodedata``:

* the CoT is the content of the first ``<think>...</think>`` block (``format.think_content``;
  ``example["prompt_ends_with_think"]`` is honoured);
* math is removed first: display and inline math spans (``$$..$$``, ``$..$``, ``\\[..\\]``,
  ``\\(..\\)``) entirely, then LaTeX commands (``\\frac``, ``\\sin``, ``\\alpha``...) anywhere;
* words are maximal runs of letters of one script (combining marks stay with their letter);
  Han, Hiragana and Katakana have no spaces between words, so each such character counts as one
  word (an over-count against Chinese/Japanese in mixed text, accepted for simplicity);
* not words, so counted for no language: digits, operators and punctuation; one-letter words of
  Latin, Greek or Cyrillic (variables such as ``x``, ``n``, ``α``; the English "a" and "I" go with
  them); and the bare math names in ``MATH_NAMES`` (``sin``, ``cos``, ``log``, ``max``, ``gcd``,
  ``mod``...) when written exactly so, in lower case, as a word of their own. So a Chinese CoT
  with "sin x + cos x" is all Chinese; "sinx" or "Max" are still Latin words;
* reward = words in the target language's scripts / all words counted.

Edge cases: no ``<think>`` block, or a block with only whitespace: 0.0 (there is no chain of thought
to be in the right language). A chain of thought with no countable word (pure math such as
``2+2=4``): 1.0, because nothing in it is in another language.

Target language: ``example["language"]``, an ISO 639-1 code (an unknown code is an error). When
the example has no ``"language"`` key (or it is None), it is inferred from ``example["prompt"]``
(a string, or chat messages whose ``"content"`` strings are joined): the script with the most
words in the prompt, counted as above, decides (Latin -> "en", Han -> "zh", or "ja" when the
prompt also has kana, Hangul -> "ko", Cyrillic -> "ru", Greek -> "el", Arabic -> "ar", Hebrew ->
"he", Devanagari -> "hi", Thai -> "th"); ties go to the script that appears first. Only the
script matters to the reward, so English vs French (both Latin) need not be told apart. A
prompt without a countable word in a listed script, or no prompt either: "en".

``mixed_language`` (an eval measure, not a reward): 1.0 when the chain of thought has at least one
counted word outside the target language's scripts (0 < words and share < 1), else 0.0. A sample
without a closed ``<think>`` block (or with a blank one) and a chain of thought with no countable
word are not mixed: there is nothing in another language to see.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from r1hpc.rewards.format import think_content

_LATIN = frozenset({"Latin"})
# ISO 639-1 code -> scripts whose words count as that language.
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    **{
        code: _LATIN
        for code in (
            "en",
            "fr",
            "de",
            "es",
            "it",
            "pt",
            "nl",
            "sv",
            "da",
            "no",
            "fi",
            "pl",
            "cs",
            "ro",
            "hu",
            "tr",
            "id",
            "vi",
            "ca",
        )
    },
    "zh": frozenset({"Han"}),
    "ja": frozenset({"Han", "Hiragana", "Katakana"}),
    "ko": frozenset({"Hangul"}),
    "ru": frozenset({"Cyrillic"}),
    "uk": frozenset({"Cyrillic"}),
    "bg": frozenset({"Cyrillic"}),
    "el": frozenset({"Greek"}),
    "ar": frozenset({"Arabic"}),
    "fa": frozenset({"Arabic"}),
    "he": frozenset({"Hebrew"}),
    "hi": frozenset({"Devanagari"}),
    "th": frozenset({"Thai"}),
}
# Unicode character-name prefixes -> script (checked in order).
_NAME_PREFIXES = (
    ("LATIN", "Latin"),
    ("CJK UNIFIED IDEOGRAPH", "Han"),
    ("CJK COMPATIBILITY IDEOGRAPH", "Han"),
    ("HIRAGANA", "Hiragana"),
    ("KATAKANA", "Katakana"),
    ("HALFWIDTH KATAKANA", "Katakana"),
    ("HANGUL", "Hangul"),
    ("CYRILLIC", "Cyrillic"),
    ("GREEK", "Greek"),
    ("ARABIC", "Arabic"),
    ("HEBREW", "Hebrew"),
    ("DEVANAGARI", "Devanagari"),
    ("THAI", "Thai"),
)
_PER_CHARACTER = frozenset({"Han", "Hiragana", "Katakana"})
_ALPHABETIC = frozenset({"Latin", "Greek", "Cyrillic"})
# Bare names of functions and operators that a CoT in any language writes in Latin letters.
MATH_NAMES = frozenset(
    {
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "log",
        "ln",
        "lg",
        "exp",
        "max",
        "min",
        "gcd",
        "lcm",
        "mod",
        "lim",
        "det",
    }
)
# The language a prompt's dominant script stands for (inference when example has no "language").
_SCRIPT_LANGUAGE = {
    "Latin": "en",
    "Han": "zh",
    "Hangul": "ko",
    "Cyrillic": "ru",
    "Greek": "el",
    "Arabic": "ar",
    "Hebrew": "he",
    "Devanagari": "hi",
    "Thai": "th",
}
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
        word = "".join(current)
        if current and not (current_script in _ALPHABETIC and len(current) == 1) and word not in MATH_NAMES:
            words.append((word, current_script))
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


def infer_language(prompt: object) -> str:
    """ISO 639-1 code of the prompt's dominant script (module docstring); "en" when it has none."""
    if isinstance(prompt, (list, tuple)):  # chat messages
        prompt = "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)
    if not isinstance(prompt, str):
        return "en"
    counts: dict[str, int] = {}
    kana = False
    for _, script in words_by_script(prompt):
        kana = kana or script in ("Hiragana", "Katakana")
        script = "Han" if script in _PER_CHARACTER else script  # Japanese text mixes all three
        if script in _SCRIPT_LANGUAGE:
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "en"
    best = max(counts, key=counts.get)  # first-seen wins a tie (dicts keep insertion order)
    return "ja" if best == "Han" and kana else _SCRIPT_LANGUAGE[best]


def target_language(example: dict) -> str:
    """The target language of an example (or a problem): example["language"], else inferred from
    example["prompt"] (module docstring)."""
    lang = example.get("language")
    return infer_language(example.get("prompt")) if lang is None else lang


def target_scripts(example: dict) -> frozenset[str]:
    """Scripts of the target language (target_language)."""
    lang = target_language(example)
    if lang not in LANGUAGE_SCRIPTS:
        raise ValueError(f"example['language'] = {lang!r} is not supported; expected one of {sorted(LANGUAGE_SCRIPTS)}")
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


def mixed_language(completion: str, example: dict) -> float:
    """1.0 when the chain of thought has a counted word outside the target language's scripts,
    else 0.0 (no chain of thought, or no countable word in it: not mixed; module docstring)."""
    scripts = target_scripts(example)
    cot = think_content(completion, example)
    if cot is None:
        return 0.0
    return 1.0 if any(s not in scripts for _, s in words_by_script(cot)) else 0.0
