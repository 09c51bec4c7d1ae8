"""The record every generated task example is, plus the two rules all generators share:
how an exact answer is written (canonical string) and which split a problem belongs to.

A reasoning example (kinds "arith", "fraction", "linear", "word") is a dict with:
    id              str   "<kind>-d<difficulty>-<12 hex>", a hash of the prompt (stable across seeds)
    prompt          str   the question text, self-contained
    answer          str   canonical exact answer: "-7", "3/4", "-5/2" (reduced; an integer when
                          the denominator is 1)
    difficulty      int   1 (one step, small numbers) .. 4 (several steps, larger numbers)
    kind            str   which generator made it
    solution_steps  list[str]  short, correct worked steps ending at the answer
    language        str   ISO 639-1 code of the prompt and steps ("en", "ru": r1hpc.tasks.phrasing)

The split is a function of the prompt text alone (sha256 bucket), so train and held-out sets are
disjoint by construction, whatever seed or count either was generated with.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from typing import Literal, TypedDict

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")
HELDOUT_PER_MILLE = 200  # 20 % of all possible problems are held out
DIFFICULTIES = (1, 2, 3, 4)


class Problem(TypedDict):
    id: str
    prompt: str
    answer: str
    difficulty: int
    kind: str
    solution_steps: list[str]
    language: str


def fmt_num(value: Fraction | int) -> str:
    """Canonical exact answer string: "12", "-3", "3/4", "-5/2" (always reduced)."""
    v = Fraction(value)
    if v.denominator == 1:
        return str(v.numerator)
    return f"{v.numerator}/{v.denominator}"


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def split_of(prompt: str) -> Split:
    """Which split a problem belongs to; depends only on the prompt text."""
    bucket = int(prompt_hash(prompt)[:8], 16) % 1000
    return "heldout" if bucket < HELDOUT_PER_MILLE else "train"


def make_problem(
    kind: str, difficulty: int, prompt: str, answer: Fraction | int, steps: list[str], language: str = "en"
) -> Problem:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    return Problem(
        id=f"{kind}-d{difficulty}-{prompt_hash(prompt)[:12]}",
        prompt=prompt,
        answer=fmt_num(answer),
        difficulty=difficulty,
        kind=kind,
        solution_steps=list(steps),
        language=language,
    )
