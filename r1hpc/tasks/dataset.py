"""Deterministic train / held-out sets of reasoning problems and general examples, and their
JSONL files.

`generate_problems(seed, "heldout", 200)` always returns the same 200 unique problems; each
(kind, difficulty) cell gets an equal share (round robin), and a problem is kept only when its
prompt hashes into the requested split (`problem.split_of`), so the splits never overlap.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from r1hpc.fsio import atomic_write_text
from r1hpc.fsio import read_jsonl as fsio_read_jsonl
from r1hpc.tasks.arith import gen_arith, gen_fraction, gen_linear
from r1hpc.tasks.general import GENERAL_KINDS, GeneralExample, gen_general
from r1hpc.tasks.phrasing import check_languages
from r1hpc.tasks.problem import DIFFICULTIES, SPLITS, Problem, Split, split_of
from r1hpc.tasks.world import World, gen_word, make_world

REASONING_KINDS = ("arith", "fraction", "linear", "word")
_MAX_TRIES_PER_ITEM = 2000  # a cell that yields nothing new this often is exhausted


# Kinds whose prompts exist in every task language (word problems are English: r1hpc.tasks.world).
MULTILINGUAL_KINDS = ("arith", "fraction", "linear")


def _reasoning_gen(kind: str, world: World) -> Callable[[random.Random, int, str], Problem]:
    if kind == "arith":
        return gen_arith
    if kind == "fraction":
        return gen_fraction
    if kind == "linear":
        return gen_linear
    if kind == "word":
        return lambda rng, d, _language: gen_word(rng, d, world)
    raise ValueError(f"unknown reasoning kind {kind!r}; expected one of {REASONING_KINDS}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _collect(n: int, split: Split, cells: list[tuple[str, Callable[[], Any]]], unique: bool) -> list[Any]:
    """Round-robin over cells, keeping examples whose prompt falls in `split` (and, if
    `unique`, that were not drawn before). A cell that stops yielding new examples is dropped,
    so small cells (e.g. one-digit sums) simply contribute all they have."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out: list[Any] = []
    seen: set[str] = set()
    live = list(cells)
    i = 0
    while len(out) < n:
        if not live:
            raise ValueError(
                f"only {len(out)} unique {split} examples exist for cells "
                f"{[c[0] for c in cells]}, {n} asked; ask for fewer or widen "
                f"the generators"
            )
        name, draw = live[i % len(live)]
        for _ in range(_MAX_TRIES_PER_ITEM):
            ex = draw()
            if split_of(ex["prompt"]) == split and not (unique and ex["prompt"] in seen):
                break
        else:
            live.remove((name, draw))
            continue
        seen.add(ex["prompt"])
        out.append(ex)
        i += 1
    return out


def generate_problems(
    seed: int,
    split: Split,
    n: int,
    kinds: Sequence[str] = REASONING_KINDS,
    difficulties: Sequence[int] = DIFFICULTIES,
    world_seed: int = 0,
    unique: bool = True,
    languages: Sequence[str] = ("en",),
) -> list[Problem]:
    """n reasoning problems of `split`, evenly spread over kinds x difficulties x languages (as far
    as each cell has unique problems left; word problems are English whatever `languages` say).
    unique=False allows repeats (pretraining streams)."""
    _check_split(split)
    bad = [d for d in difficulties if d not in DIFFICULTIES]
    if bad or not difficulties:
        raise ValueError(f"difficulties must be a non-empty subset of {DIFFICULTIES}, got {list(difficulties)}")
    check_languages(list(languages))
    world = make_world(world_seed)
    rng = random.Random(f"problems-{seed}-{split}")
    cells = []
    for kind in kinds:
        gen = _reasoning_gen(kind, world)
        langs = list(languages) if kind in MULTILINGUAL_KINDS else ["en"]
        for d in difficulties:
            for lang in langs:
                name = f"{kind}/d{d}" if len(langs) == 1 else f"{kind}/d{d}/{lang}"
                cells.append((name, lambda g=gen, d=d, lang=lang: g(rng, d, lang)))
    return _collect(n, split, cells, unique)


def generate_general(
    seed: int, split: Split, n: int, kinds: Sequence[str] = GENERAL_KINDS, world_seed: int = 0, unique: bool = True
) -> list[GeneralExample]:
    """n non-reasoning examples of `split`, spread over kinds as far as each has room."""
    _check_split(split)
    world = make_world(world_seed)
    rng = random.Random(f"general-{seed}-{split}")
    for k in kinds:
        if k not in GENERAL_KINDS:
            raise ValueError(f"unknown general kind {k!r}; expected one of {GENERAL_KINDS}")
    cells = [(k, lambda k=k: gen_general(rng, k, world)) for k in kinds]
    return _collect(n, split, cells, unique)


_PROBLEM_FIELDS = {"id": str, "prompt": str, "answer": str, "difficulty": int, "kind": str, "solution_steps": list}
_GENERAL_FIELDS = {"id": str, "prompt": str, "answer": str, "difficulty": int, "kind": str, "rejected": list}
# Problems read from the user's files (r1hpc.datasets) may also carry these.
_OPTIONAL_FIELDS = {"data_source": str, "messages": list, "choices": list, "language": str, "tests": list}


def write_jsonl(path: str | Path, examples: Iterable[dict[str, Any]]) -> None:
    """All examples as one JSON-lines file, published atomically (r1hpc.fsio)."""
    atomic_write_text(path, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read problems or general examples, checking each line's required fields and types, and the
    types of the optional ones (data_source, messages, choices, language, tests) where present."""
    out = fsio_read_jsonl(path)  # names file and line for a line that is not one JSON object
    for lineno, ex in enumerate(out, 1):
        fields = _GENERAL_FIELDS if "rejected" in ex else _PROBLEM_FIELDS
        for key, typ in fields.items():
            if key not in ex:
                raise ValueError(f"{path}:{lineno}: missing key {key!r} (expected keys {sorted(fields)})")
            if not isinstance(ex[key], typ):
                raise ValueError(f"{path}:{lineno}: key {key!r} should be {typ.__name__}, got {type(ex[key]).__name__}")
        for key, typ in _OPTIONAL_FIELDS.items():
            if ex.get(key) is not None and not isinstance(ex[key], typ):
                raise ValueError(f"{path}:{lineno}: key {key!r} should be {typ.__name__}, got {type(ex[key]).__name__}")
    return out
