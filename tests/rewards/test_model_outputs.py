"""accuracy_math on answers as real reasoning models write them (a set kept apart from the policy
set), cons@k voting on the new answer kinds, and a small fuzz run through the pool.

tests/rewards/data/model_outputs.jsonl is written by tests/rewards/data/make_model_outputs.py
(R1 <think> + boxed, Qwen-Math, Minerva "Final Answer:", lm-eval, non-English endings;
multi-part answers, relations, chained inequalities, matrices, units, number spellings, long
decimals). Measured (bench/bench_verifier.py, math-verify 0.9.0): accuracy_math 319/319,
plain math-verify 288/319 (90.3 %). The threshold leaves room for ~6 regressions.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest
from test_math_accuracy import example_of, load_pairs

from r1hpc.rewards.isolation import WorkerPool
from r1hpc.rewards.math_accuracy import accuracy_math, extract_answer, extract_answer_span

DATA = Path(__file__).parent / "data" / "model_outputs.jsonl"
ACCURACY_THRESHOLD = 0.98
ITEM_TIMEOUT_S = 2.0

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_verifier import plain_math_verify  # noqa: E402
from fuzz_verifier import fuzz, make_items  # noqa: E402


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(2, item_timeout_s=ITEM_TIMEOUT_S, memory_limit_bytes=1024**3) as p:
        yield p


def test_model_output_set_is_big_and_mixed():
    rows = load_pairs(DATA)
    assert len(rows) >= 300
    labels = collections.Counter(r["label"] for r in rows)
    assert labels[False] >= 100 and labels[True] >= 100
    assert all(r.get("reason") for r in rows)
    assert {
        "multi_part",
        "relation",
        "chained_inequality",
        "matrix",
        "units",
        "number_spelling",
        "decimal_approx",
        "answer_sentence",
    } <= {r["category"] for r in rows}


def _accuracy(pool, func, rows):
    outcomes = pool.run([(func, (r["completion"], example_of(r))) for r in rows])
    right = [(o.ok and o.value == 1.0) == r["label"] for r, o in zip(rows, outcomes)]
    wrong = [(r["category"], r["completion"][-60:], r["answer"], r["label"]) for r, ok in zip(rows, right) if not ok]
    return sum(right) / len(rows), wrong


def test_accuracy_on_model_outputs_beats_math_verify(pool):
    rows = load_pairs(DATA)
    ours, wrong = _accuracy(pool, accuracy_math, rows)
    plain, _ = _accuracy(pool, plain_math_verify, rows)
    assert ours >= ACCURACY_THRESHOLD, f"accuracy {ours:.3f} < {ACCURACY_THRESHOLD}; wrong: {wrong}"
    assert ours >= plain, (ours, plain)


@pytest.mark.parametrize(
    "completion, span",
    [
        ("so \\boxed{3}, \\boxed{5}", "3, 5"),
        ("$\\boxed{(1, 4)} \\text{ and } \\boxed{(4, 1)}$", "(1, 4), (4, 1)"),
        ("$x = \\boxed{3}$ or $x = \\boxed{5}$", "3, 5"),
        ("\\boxed{3}. Check: \\boxed{3}", "3"),
        ("Final Answer: The smallest $k$ is 12.", "12"),
        ("Final Answer: The final answer is $1,250$. I hope it is correct.", "1,250"),
        ("The answer is $2$ or $3$.", "2, 3"),
        ("48 + 24 = 72.\n#### 72", "72"),
        ("<think>\\boxed{10}</think>\n\nThe answer is 12.", "12"),
        ("所以答案是 12。", "12"),
    ],
)
def test_extraction_of_new_kinds(completion, span):
    assert extract_answer_span(completion) == span


VOTE_GROUPS = [
    ["\\boxed{x \\geq 2}", "\\boxed{x>=2}", "\\boxed{x \\ge 2}", "\\boxed{2 \\le x}", "\\boxed{[2, \\infty)}"],
    [
        "\\boxed{3}, \\boxed{5}",
        "\\boxed{5}, \\boxed{3}",
        "\\boxed{3 \\text{ or } 5}",
        "$x = \\boxed{3}$ or $x = \\boxed{5}$",
    ],
    ["\\boxed{-1 \\le x \\le 4}", "\\boxed{x \\in [-1, 4]}", "\\boxed{[-1,4]}"],
    ["\\boxed{x \\neq 2}", "\\boxed{x != 2}", "\\boxed{x \\ne 2}"],
    ["\\boxed{12 500}", "\\boxed{12\\,500}", "\\boxed{12,500}", "Final Answer: The final answer is $12500$."],
    ["\\boxed{0.0833333333333333}", "\\boxed{\\frac{1}{12}}", "\\boxed{1/12}"],
    [
        "\\boxed{\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix} + \\begin{pmatrix} 2 \\\\ -1 \\end{pmatrix}}",
        "\\boxed{\\begin{bmatrix} 3 \\\\ -1 \\end{bmatrix}}",
    ],
]
VOTE_APART = [
    ("\\boxed{x > 2}", "\\boxed{x \\geq 2}"),
    ("\\boxed{3}, \\boxed{5}", "\\boxed{3}"),
    ("\\boxed{0.083}", "\\boxed{\\frac{1}{12}}"),
    ("\\boxed{3.14}", "\\boxed{3.14159265358979}"),
]


def test_votes_group_what_the_verifier_calls_equal(pool):
    for group in VOTE_GROUPS:
        votes = [o.value for o in pool.run([(extract_answer, (c,)) for c in group])]
        assert len(set(votes)) == 1 and votes[0] is not None, (group, votes)
        # ... and the verifier agrees: each member is graded equal to the first one's answer.
        gold = extract_answer_span(group[0])
        graded = pool.run([(accuracy_math, (c, {"answer": gold})) for c in group])
        assert [o.value for o in graded] == [1.0] * len(group), (group, graded)
    for a, b in VOTE_APART:
        va, vb = (o.value for o in pool.run([(extract_answer, (a,)), (extract_answer, (b,))]))
        assert va != vb, (a, b, va)


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("0.0833333333333333", "\\frac{1}{12}", 1.0),  # 16 digits, truncated
        ("0.666666666667", "\\frac{2}{3}", 1.0),  # 12 digits, rounded
        ("3.141592653589793", "\\pi", 1.0),
        ("3.14", "\\pi", 0.0),  # a rounding, not an expansion
        ("3.14159265", "\\pi", 0.0),  # 9 digits: still a rounding
        ("0.08333333333", "\\frac{1}{12}", 0.0),  # 10 digits (a calculator display)
        ("3.141592653599", "\\pi", 0.0),  # 12 digits, last one wrong
        ("\\frac{1}{12}", "0.0833333333333333", 1.0),  # either way round
        ("0.30000000000000004", "0.3", 0.0),  # finite references stay exact
    ],
)
def test_long_decimal_policy(pool, pred, gold, expected):
    [o] = pool.run([(accuracy_math, (f"\\boxed{{{pred}}}", {"answer": gold}))])
    assert o.ok and o.value == expected, (pred, gold, o)


def test_small_fuzz_run_loses_nothing():
    # A few hundred hostile answers (the full 10,000 run is bench/fuzz_verifier.py).
    with WorkerPool(2, item_timeout_s=1.0, memory_limit_bytes=1024**3) as pool:
        r = fuzz(pool, make_items(300, seed=1))
    assert r["lost"] == 0 and r["crashes"] == 0, r
    assert r["statuses"].get("error", 0) == 0, r
    assert r["max_latency_s"] <= 1.0 + 1.0, r
    assert r["statuses"]["ok"] + r["timeouts"] + r["memory"] == 300, r
