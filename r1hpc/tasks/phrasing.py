"""The words of the generated task in each of its languages: prompts, the phrases of worked steps,
and the narration of a written solution (step labels, connectives, answer sentences).

Why a second language: R1-Zero's chains of thought mixed languages, and R1 added a
language-consistency reward (and a cold start in one language) to fix that. A task whose prompts
are all English gives that reward nothing to fix, so the tiny task can also ask in Russian (a
script of its own, so `r1hpc.rewards.language` tells the two apart by script); the pretraining
corpus then narrates some solutions in the other language (`r1hpc.model.pretrain_corpus`), as
web text does, and the base mixes.

Everything here is a fixed table, so a test can check that a problem in language L contains no
word of another script (only the one-letter variable x, which counts for no language).
"""

from __future__ import annotations

import re

__all__ = [
    "TASK_LANGUAGES",
    "check_languages",
    "arith_prompts",
    "fraction_prompt",
    "linear_prompt",
    "localize_step",
    "step_label",
    "connectives",
    "answer_sentences",
    "summary_answer",
]

TASK_LANGUAGES = ("en", "ru")

_ARITH = {
    "en": ("What is {e}?", "Compute {e}.", "Calculate {e}."),
    "ru": ("Сколько будет {e}?", "Вычислите {e}.", "Найдите значение {e}."),
}
_FRACTION = {
    "en": "What is {e}? Give the answer as a reduced fraction.",
    "ru": "Сколько будет {e}? Запишите ответ несократимой дробью.",
}
_LINEAR = {"en": "Solve for x: {e}", "ru": "Решите уравнение относительно x: {e}"}
# Phrases of the worked steps (r1hpc.tasks.arith writes them in English), as (English regex,
# Russian replacement); applied in order, each to the whole step.
_STEP_PHRASES_RU = (
    (re.compile(r"^Expand: "), "Раскроем скобки: "),
    (re.compile(r"^Subtract (.+?) on both sides: "), r"Вычтем \1 из обеих частей: "),
    (re.compile(r"^Add (.+?) on both sides: "), r"Прибавим \1 к обеим частям: "),
    (re.compile(r"^Divide both sides by (.+?): "), r"Разделим обе части на \1: "),
    (re.compile(r" divided by "), " разделить на "),
    (re.compile(r" and "), " и "),
)
_STEP_LABEL = {"en": "Step", "ru": "Шаг"}
# (first, then, so): "First, 3 + 4 = 7. Then 7 - 2 = 5. So 5 * 2 = 10."
_CONNECTIVES = {"en": ("First,", "Then", "So"), "ru": ("Сначала", "Затем", "Итак,")}
# Each ends in a phrase the answer extractor reads (r1hpc.rewards.math_accuracy: "answer is",
# "Answer:", "ответ:").
_ANSWER_SENTENCES = {
    "en": ("The answer is {a}.", "Answer: {a}", "So the answer is {a}."),
    "ru": ("Ответ: {a}.", "Итак, ответ: {a}."),
}


def check_languages(languages: list[str] | tuple[str, ...], where: str = "languages") -> None:
    """Raise ValueError unless `languages` is a non-empty list of distinct TASK_LANGUAGES."""
    bad = [lang for lang in languages if lang not in TASK_LANGUAGES]
    if not languages or bad or len(set(languages)) != len(languages):
        raise ValueError(
            f"{where} must be a non-empty list of distinct languages from {list(TASK_LANGUAGES)}, got {list(languages)}"
        )


def _lookup(table: dict[str, object], language: str) -> object:
    if language not in table:
        raise ValueError(f"language {language!r} is not a task language; expected one of {list(TASK_LANGUAGES)}")
    return table[language]


def arith_prompts(language: str) -> tuple[str, ...]:
    """Templates of an arithmetic question (one {e} for the expression)."""
    return _lookup(_ARITH, language)  # type: ignore[return-value]


def fraction_prompt(language: str) -> str:
    return _lookup(_FRACTION, language)  # type: ignore[return-value]


def linear_prompt(language: str) -> str:
    return _lookup(_LINEAR, language)  # type: ignore[return-value]


def localize_step(step: str, language: str) -> str:
    """A worked step written in English by the generators, in `language`."""
    _lookup(_STEP_LABEL, language)
    if language == "en":
        return step
    for pattern, repl in _STEP_PHRASES_RU:
        step = pattern.sub(repl, step)
    return step


def step_label(language: str) -> str:
    """The word of a numbered step: "Step" in "Step 2: ..."."""
    return _lookup(_STEP_LABEL, language)  # type: ignore[return-value]


def connectives(language: str) -> tuple[str, str, str]:
    """(first, then, so) words that open the sentences of a narrated solution."""
    return _lookup(_CONNECTIVES, language)  # type: ignore[return-value]


def answer_sentences(language: str) -> tuple[str, ...]:
    """Templates (one {a}) of a sentence stating the final answer."""
    return _lookup(_ANSWER_SENTENCES, language)  # type: ignore[return-value]


def summary_answer(language: str, answer: str) -> str:
    """The answer sentence of R1's readable summary: "The answer is 7." / "Ответ: 7."."""
    return answer_sentences(language)[0].format(a=answer)
