"""Fuzz: hostile or malformed answers through accuracy_math / extract_answer in the worker pool.

    .venv/bin/python bench/fuzz_verifier.py [--items 10000] [--workers N] [--timeout S] [--seed K]

Generates ``--items`` completions (deterministic for a seed) from: deep nesting (braces, \\frac,
parentheses, \\sqrt), huge powers and towers, factorials and binomials of huge numbers, big sums /
products / integrals / limits, unbalanced braces and \\boxed{ runs, long digit strings, LaTeX
macros and environments, unicode (math symbols, combining marks, RTL, emoji, NUL), and injection
strings, each wrapped in a random answer ending (boxed, <answer>, "The answer is", Minerva) and
graded against a random reference; one item in five calls extract_answer instead. Every item
must come back with an outcome: scored ("ok"), or counted as "timeout" / "memory"; "error" that
says the worker died is a crash. Prints items, outcomes, timeouts, max latency, crashes, lost.
Exit status 1 if an item is lost, a worker crashed or an item ran past the limit + 1 s.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time

from r1hpc.rewards.isolation import WorkerPool
from r1hpc.rewards.math_accuracy import accuracy_math, extract_answer

REFERENCES = [
    "5",
    "0",
    "\\frac{1}{2}",
    "\\pi",
    "x \\geq 2",
    "(1,2)",
    "\\{1,2\\}",
    "3, 5",
    "12500",
    "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
    "[-1, 4]",
    "25\\%",
    "\\sqrt{2}",
    "A",
]
MACROS = [
    "\\frac",
    "\\sqrt",
    "\\sum",
    "\\prod",
    "\\int",
    "\\lim",
    "\\binom",
    "\\left(",
    "\\right)",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "\\text{",
    "\\mathrm{",
    "\\overline{",
    "\\cdot",
    "\\times",
    "\\infty",
    "\\le",
    "\\geq",
    "\\boxed{",
    "\\{",
    "\\}",
    "\\\\",
    "&",
    "^",
    "_",
    "!",
    "\\%",
    "$",
    "\\operatorname{",
    "\\def\\x{\\x}\\x",
    "\\newcommand",
    "\\input{/etc/passwd}",
    "\\begin{array}{c}",
    "\\mathbb{R}",
    "\\lfloor",
    "\\rceil",
]
UNICODE = [
    "π",
    "√",
    "∞",
    "≤",
    "≥",
    "≠",
    "∑",
    "∫",
    "½",
    "−",
    "×",
    "÷",
    "\u0301",
    "\u202e",
    "\u200b",
    "\ufeff",
    "🎉",
    "你",
    "答",
    "ж",
    "\x00",
    "\ud7ff",
    "𝑥",
    "①",
    "Ⅻ",
    "٣",
    "۵",
    "１２",
]


def _nest(rng: random.Random) -> str:
    d = rng.choice([40, 100, 500, 2000])
    kind = rng.randrange(5)
    if kind == 0:
        return "{" * d + "1" + "}" * d
    if kind == 1:
        return "\\frac{1}{" * d + "2" + "}" * d
    if kind == 2:
        return "(" * d + "x" + ")" * d
    if kind == 3:
        return "\\sqrt{" * d + "2" + "}" * d
    return "2^{" * d + "2" + "}" * d


def _huge(rng: random.Random) -> str:
    a, b, c = (rng.choice(["2", "9", "10", "99", "1.5", "x"]) for _ in range(3))
    return rng.choice(
        [
            f"{a}^{{{b}^{{{c}^{{{rng.randint(5, 99)}}}}}}}",
            f"10^{{{rng.randint(10**6, 10**12)}}}",
            f"{rng.randint(10**5, 10**9)}!",
            f"({rng.randint(100, 10**4)}!)!",
            f"\\binom{{{rng.randint(10**8, 10**12)}}}{{{rng.randint(10**7, 10**8)}}}",
            f"\\sum_{{n=1}}^{{10^{{{rng.randint(6, 30)}}}}} n^{{{rng.randint(2, 50)}}}",
            f"\\prod_{{k=1}}^{{{rng.randint(10**6, 10**9)}}} k",
            f"\\int_0^{{10^{{{rng.randint(3, 9)}}}}} e^{{x^{{{rng.randint(2, 9)}}}}} dx",
            f"\\lim_{{n\\to\\infty}} (1+\\frac{{1}}{{n}})^{{n^{{{rng.randint(2, 9)}}}}}",
            f"{rng.randint(2, 99)}^{{{rng.randint(10**4, 10**7)}}} \\bmod {rng.randint(2, 99)}",
            f"\\Gamma({rng.randint(10**6, 10**9)}.5)",
            f"1.5\\times10^{{10^{{{rng.randint(5, 12)}}}}}",
        ]
    )


def _unbalanced(rng: random.Random) -> str:
    return rng.choice(
        [
            "\\boxed{" * rng.randint(1, 3000),
            "}" * rng.randint(1, 500) + "1",
            "\\frac{1}{" + "{" * rng.randint(1, 50),
            "\\left(" * rng.randint(1, 200),
            "\\begin{pmatrix} 1 & 2 \\\\ 3",
            "$" * rng.randint(1, 99) + "\\boxed{2",
            "\\boxed{\\boxed{\\boxed{1}",
            "{" * 31 + "1" + "}" * 31,
        ]
    )


def _digits(rng: random.Random) -> str:
    n = rng.choice([50, 500, 999, 5000, 100_000])
    d = "".join(rng.choice("0123456789") for _ in range(min(n, 2000))) * max(1, n // 2000)
    return rng.choice(
        [
            d,
            "0." + d,
            d + "e" + str(rng.randint(-9999, 9999)),
            "1," * (n // 10) + "000",
            d[: n // 2] + "/" + d[n // 2 :],
            "1 " * (n // 4),
        ]
    )


def _macros(rng: random.Random) -> str:
    return "".join(rng.choice(MACROS + ["1", "x", " ", "{", "}", "2"]) for _ in range(rng.randint(1, 300)))


def _unicode(rng: random.Random) -> str:
    return "".join(rng.choice(UNICODE + [chr(rng.randint(0x20, 0x2FFFF))]) for _ in range(rng.randint(1, 200)))


def _injection(rng: random.Random) -> str:
    return rng.choice(
        [
            "__import__('os').system('true')",
            "eval('1+1')",
            "exec('x=1')",
            "lambda: 0",
            "().__class__.__bases__[0]",
            "Symbol('x').__class__",
            "{{7*7}}",
            "${7*7}",
            "\\immediate\\write18{true}",
            "open('/etc/passwd').read()",
            "Integer(10)**Integer(10)**Integer(10)",
            "sympify('2**2**2**2**2')",
        ]
    )


GENERATORS = [_nest, _huge, _unbalanced, _digits, _macros, _unicode, _injection]


def _wrap(rng: random.Random, x: str) -> str:
    return rng.choice(
        [
            f"\\boxed{{{x}}}",
            f"<think>hmm</think><answer>{x}</answer>",
            f"The answer is ${x}$.",
            f"Final Answer: The final answer is ${x}$. I hope it is correct.",
            f"<answer>\\boxed{{{x}}}",
            f"\\boxed{{{x}}}, \\boxed{{{x}}}",
            f"<think>{x}</think>\n\nThe answer is $\\boxed{{{x}}}$.",
            x,
        ]
    )


def make_items(n: int, seed: int = 0) -> list[tuple]:
    """(func, args) calls: hostile completions for accuracy_math (4/5) and extract_answer (1/5)."""
    rng = random.Random(seed)
    calls = []
    for i in range(n):
        gen = GENERATORS[i % len(GENERATORS)]
        parts = [gen(rng)] + ([rng.choice(GENERATORS)(rng)] if rng.random() < 0.2 else [])
        completion = _wrap(rng, "".join(parts))
        if i % 5 == 4:
            calls.append((extract_answer, (completion,)))
        else:
            calls.append((accuracy_math, (completion, {"answer": rng.choice(REFERENCES)})))
    return calls


def fuzz(pool: WorkerPool, calls: list[tuple]) -> dict:
    """Run ``calls`` through ``pool``; figures as a dict (see the module docstring)."""
    seen: dict[int, object] = {}
    t0 = time.perf_counter()
    for i, outcome in pool.imap(calls):
        seen[i] = outcome
    seconds = time.perf_counter() - t0
    statuses = collections.Counter(o.status for o in seen.values())
    crashes = sum(1 for o in seen.values() if o.status == "error" and "worker died" in o.message)
    return {
        "items": len(calls),
        "answered": len(seen),
        "lost": len(calls) - len(seen),
        "statuses": dict(statuses),
        "timeouts": statuses["timeout"],
        "memory": statuses["memory"],
        "crashes": crashes,
        "errors": [o.message for o in seen.values() if o.status == "error"][:5],
        "max_latency_s": max((o.seconds for o in seen.values()), default=0.0),
        "seconds": seconds,
        "restarts": pool.restarts,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=2.0, help="per-item wall-time limit, seconds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("command:", " ".join([sys.executable, *sys.argv]), flush=True)
    calls = make_items(args.items, args.seed)
    with WorkerPool(args.workers, item_timeout_s=args.timeout) as pool:
        r = fuzz(pool, calls)
        print(f"workers {pool.num_workers}, limit {args.timeout} s/item")
    print(f"items {r['items']}  answered {r['answered']}  lost {r['lost']}  outcomes {r['statuses']}")
    print(
        f"timeouts {r['timeouts']}  memory {r['memory']}  crashes {r['crashes']}  "
        f"max latency {r['max_latency_s']:.2f} s  total {r['seconds']:.1f} s  worker restarts {r['restarts']}"
    )
    if r["errors"]:
        print("first errors:", *r["errors"], sep="\n  ")
    bad = r["lost"] or r["crashes"] or r["max_latency_s"] > args.timeout + 1.0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
