"""accuracy_math on the labelled set (run through the worker pool, as in training) + extraction.

tests/rewards/data/math_pairs.jsonl: one labelled pair per line with fields completion, answer,
label (is the completion's answer equivalent to the reference?), category, optionally choices
(multiple choice) and repeat_prefix {head?, text, times}: the completion is then
head + text * times + completion (keeps the 1 MB adversarial strings out of the file).

Measured on this set (494 pairs, math-verify 0.9.0): 492/494 = 99.6 % correct; every
category 100 % except interval 20/22 (``x<3`` is not matched to ``(-\\infty,3)``). The threshold
below leaves room for ~8 regressions; lowering it needs a reason.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import sympy

from r1hpc.rewards.isolation import WorkerPool
from r1hpc.rewards.math_accuracy import _parse_span, accuracy_math, extract_answer, extract_answer_span, normalize_span

DATA = Path(__file__).parent / "data" / "math_pairs.jsonl"
ACCURACY_THRESHOLD = 0.98
ITEM_TIMEOUT_S = 2.0
PWNED = Path("/tmp/r1hpc_pwned")  # what the injection-like items try to create


def load_pairs(path: Path = DATA) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from e
            missing = {"completion", "answer", "label", "category"} - r.keys()
            if missing:
                raise ValueError(f"{path}:{lineno}: missing fields {sorted(missing)}")
            rp = r.get("repeat_prefix")
            if rp:
                r["completion"] = rp.get("head", "") + rp["text"] * rp["times"] + r["completion"]
            rows.append(r)
    return rows


def example_of(row: dict) -> dict:
    return {k: row[k] for k in ("answer", "choices") if k in row}


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(2, item_timeout_s=ITEM_TIMEOUT_S, memory_limit_bytes=1024**3) as p:
        yield p


def test_labelled_set_is_big_and_balanced():
    rows = load_pairs()
    cats = collections.Counter(r["category"] for r in rows)
    assert len(rows) >= 300
    assert {
        "integer",
        "decimal",
        "fraction",
        "percent",
        "scientific",
        "radical",
        "pi",
        "expression",
        "equation",
        "interval",
        "set_tuple",
        "units",
        "multiple_choice",
        "formatting",
        "adversarial",
    } <= cats.keys()
    labels = collections.Counter(r["label"] for r in rows)
    assert labels[True] >= 100 and labels[False] >= 100
    assert max(len(r["completion"]) for r in rows) >= 1_000_000


def test_accuracy_on_labelled_set(pool):
    PWNED.unlink(missing_ok=True)
    rows = load_pairs()
    outcomes = pool.run([(accuracy_math, (r["completion"], example_of(r))) for r in rows])
    per_cat: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    wrong = []
    for r, o in zip(rows, outcomes):
        # Hostile items must end within the limit (+1 s for the kill), whatever their outcome.
        assert o.seconds <= ITEM_TIMEOUT_S + 1.0, (r["category"], r["completion"][:80], o)
        assert o.status in ("ok", "timeout", "memory"), (r["completion"][:80], o)
        # A timeout (possible for slow items on a loaded machine) counts as "not equivalent".
        predicted = o.ok and o.value == 1.0
        per_cat[r["category"]][1] += 1
        if predicted == r["label"]:
            per_cat[r["category"]][0] += 1
        else:
            wrong.append((r["category"], r["completion"][:80], r["answer"][:40], r["label"]))
    total = sum(c for c, _ in per_cat.values()) / len(rows)
    report = ", ".join(f"{k} {c}/{n}" for k, (c, n) in sorted(per_cat.items()))
    assert total >= ACCURACY_THRESHOLD, f"accuracy {total:.3f} < {ACCURACY_THRESHOLD}: {report}; wrong: {wrong}"
    assert not PWNED.exists(), "an injection-like answer was executed"


@pytest.mark.parametrize(
    "completion, span",
    [
        ("First \\boxed{3}, then \\boxed{4}.", "4"),
        ("<think>\\boxed{3}</think><answer>The answer is 5.</answer>", "5"),
        ("<think>x</think><answer>\\boxed{\\frac{\\sqrt{2}}{2}}</answer>", "\\frac{\\sqrt{2}}{2}"),
        ("<answer> 7 </answer>", "7"),
        ("so the final answer is $\\frac{1}{2}$. Done.", "\\frac{1}{2}"),
        ("The answer is 3.14.", "3.14"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed 5", "5"),
        ("\\boxed{unclosed", None),
        ("I think it is 5", None),
        ("\\boxed{}", None),
    ],
)
def test_extract_answer_span_priority(completion, span):
    # String operations only (no parsing), so calling it here is safe.
    assert extract_answer_span(completion) == span


def test_extract_answer_is_canonical_for_voting(pool):
    completions = [
        "\\boxed{0.5}",
        "\\boxed{\\frac12}",
        "The answer is 1/2.",
        "\\boxed{\\dfrac{2}{4}}",
        "\\boxed{50\\%}",
        "\\boxed{x = 3}",
        "\\boxed{3}",
        "\\boxed{(B)}",
        "no answer here",
    ]
    out = [o.value for o in pool.run([(extract_answer, (c,)) for c in completions])]
    assert out[0] == out[1] == out[2] == out[3] == "1/2"
    assert out[4] == "50"
    assert out[5] == out[6] == "3"
    assert out[7] == "B"
    assert out[8] is None


def test_bad_examples_are_reported_not_swallowed(pool):
    bad = pool.run(
        [
            (accuracy_math, ("\\boxed{1}", {})),
            (accuracy_math, ("\\boxed{A}", {"answer": "Z", "choices": ["1", "2"]})),
            (accuracy_math, ("\\boxed{A}", {"answer": "A", "choices": "AB"})),
        ]
    )
    assert [o.status for o in bad] == ["error"] * 3
    assert 'no "answer" key' in bad[0].message
    assert "neither a letter" in bad[1].message
    assert "choices" in bad[2].message


def test_accuracy_is_not_trivially_constant(pool):
    # Guards against a grader that always says yes (or no): same completion, different references.
    out = pool.run([(accuracy_math, ("\\boxed{\\frac{1}{2}}", {"answer": a})) for a in ("0.5", "0.6", "50\\%", "2")])
    assert [o.value for o in out] == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        # Scientific notation with many significant digits is exact, both ways round ...
        ("1.23456789e10", "12345678900", 1.0),
        ("6.022\\times10^{23}", "602200000000000000000000", 1.0),
        ("12345678900", "1.23456789\\times 10^{10}", 1.0),
        ("4.2\\times10^{-7}", "0.00000042", 1.0),
        ("2.500000", "2.5", 1.0),
        ("0.75\\pi", "\\frac{3\\pi}{4}", 1.0),
        ("(0.5, 3)", "(\\frac{1}{2}, 3)", 1.0),
        # ... and so are the near misses (the math-verify rounding accepted 3.14159265 for pi).
        ("1.2345678e10", "12345678900", 0.0),
        ("6.0221\\times10^{23}", "602200000000000000000000", 0.0),
        ("1e-20", "2\\times10^{-20}", 0.0),
        ("3.14159265", "\\pi", 0.0),
        ("3.1416", "\\pi", 0.0),
        ("0.333333", "\\frac{1}{3}", 0.0),
        ("1.41421356", "\\sqrt{2}", 0.0),
        ("0.1000001", "0.1", 0.0),
        # A set is not a pair or tuple; a bare list states no order.
        ("\\{1,2\\}", "(1,2)", 0.0),
        ("(1,2)", "\\{1,2\\}", 0.0),
        ("\\{1,2,3\\}", "(1,2,3)", 0.0),
        ("1, 2", "(1,2)", 1.0),
        ("\\{2,1\\}", "\\{1,2\\}", 1.0),
        ("2 \\text{ and } 3", "2,3", 1.0),
        # Percent policy: X% matches a reference of X, not only for integers.
        ("12.5\\%", "12.5", 1.0),
        ("12.5", "12.5\\%", 1.0),
        ("12.5\\%", "0.125", 1.0),
        ("1.25\\%", "12.5", 0.0),
    ],
)
def test_exact_numbers_and_sets(pool, pred, gold, expected):
    [o] = pool.run([(accuracy_math, (f"<think>t</think><answer>\\boxed{{{pred}}}</answer>", {"answer": gold}))])
    assert o.ok and o.value == expected, (pred, gold, o)


def test_exact_numbers_stay_cheap():
    # Huge or nested exponents and factorials are left as parsed (1.5 stays a Float) instead of
    # being expanded exactly: 10^{10^{9}} would be a billion-digit integer. The cases are scaled
    # down so that a broken guard fails this test fast rather than hanging it; they are fixed
    # trusted strings, so parsing them here (not in a pool worker) is safe. Results are not sent
    # through the pool because unpickling a sympy expression evaluates it.
    for span in ("1.5\\times10^{10^{7}}", "2.5\\times10^{10000000}", "1.5 \\cdot 2^{2^{24}}", "0.5 \\cdot 30!"):
        [expr, _] = _parse_span(normalize_span(span))
        assert expr.atoms(sympy.Float), (span, expr)
    [expr, _] = _parse_span(normalize_span("1.5\\times10^{300}"))  # small enough: exact
    assert expr == 15 * 10**299 and isinstance(expr, sympy.Integer)


@pytest.mark.parametrize(
    "reference, completion, want",
    [
        # a small irrational exponent is evaluated (found by Math-Verify's own test cases)
        (r"10^{\frac{-5+\sqrt{13}}{6}}", r"\boxed{10^{\frac{\sqrt{13}-5}{6}}}", 1.0),
        (r"10^{-\frac{5+\sqrt{13}}{6}}", r"\boxed{10^{\frac{-5-\sqrt{13}}{6}}}", 1.0),
        (r"2^{\sqrt{2}}", r"\boxed{2^{\sqrt{3}}}", 0.0),
        # a tower is still compared as written, never evaluated
        (r"2^{2^{40}}", r"\boxed{2^{2^{40}}}", 1.0),
        (r"2^{2^{40}}", r"\boxed{4^{2^{39}}}", 0.0),
    ],
)
def test_numeric_exponents(pool, reference, completion, want):
    [outcome] = pool.run([(accuracy_math, (completion, {"answer": reference}))])
    assert outcome.ok and outcome.value == want
