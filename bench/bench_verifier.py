"""Benchmark: our accuracy_math vs plain math-verify, on the labelled set, through the same pool.

    .venv/bin/python bench/bench_verifier.py [--workers N] [--timeout S] [--repeat K] [--data PATH]

(a) ``r1hpc.rewards.math_accuracy.accuracy_math(completion, example)``;
(b) plain math-verify: ``verify(parse(gold), parse(completion))`` with its default extraction
    (no R1 answer-tag priority, no normalisation), run through the same WorkerPool code with the
    same per-item limit (a fresh pool each), so the two differ only in the grading function.
Prints the command line, accuracy against the labels (per category and overall), items/s for
both and the throughput ratio (ours / plain). Items that time out count as "not equivalent".
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from math_verify import parse, verify

from r1hpc.rewards.isolation import WorkerPool
from r1hpc.rewards.math_accuracy import accuracy_math

# The labelled set's format (repeat_prefix expansion, required fields) is defined once, by its test.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rewards"))
from test_math_accuracy import load_pairs  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "tests" / "rewards" / "data" / "math_pairs.jsonl"


def plain_math_verify(completion: str, example: dict) -> float:
    """math-verify as documented, timeouts off (the pool enforces them); runs in a worker."""
    gold = parse("$" + str(example["answer"]) + "$", parsing_timeout=None)
    pred = parse(completion, parsing_timeout=None)
    return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0


def run(pool: WorkerPool, func, rows: list[dict], repeat: int) -> tuple[dict, float, collections.Counter]:
    calls = [(func, (r["completion"], {k: r[k] for k in ("answer", "choices") if k in r})) for r in rows]
    t0 = time.perf_counter()
    for _ in range(repeat):
        outcomes = pool.run(calls)
    rate = repeat * len(calls) / (time.perf_counter() - t0)
    per_cat: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    statuses = collections.Counter(o.status for o in outcomes)
    for r, o in zip(rows, outcomes):
        per_cat[r["category"]][1] += 1
        per_cat[r["category"]][0] += int((o.ok and o.value == 1.0) == r["label"])
    return per_cat, rate, statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="pool size (default: CPUs of this job)")
    ap.add_argument("--timeout", type=float, default=2.0, help="per-item wall-time limit, seconds")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the set per verifier")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--exclude-adversarial", action="store_true", help="leave out the hostile items (their timeouts dominate the time)")
    args = ap.parse_args()
    print("command:", " ".join([sys.executable, *sys.argv]), flush=True)

    rows = load_pairs(args.data)
    if args.exclude_adversarial:
        rows = [r for r in rows if r["category"] != "adversarial"]
    results = {}
    for name, func in (("accuracy_math", accuracy_math), ("plain math-verify", plain_math_verify)):
        # A fresh pool per verifier: both start from workers forked off the same clean
        # forkserver, so neither profits from parse caches the other one filled.
        with WorkerPool(args.workers, item_timeout_s=args.timeout) as pool:
            pool.run([(abs, (1,))] * pool.num_workers)  # workers started
            if not results:
                print(f"{len(rows)} pairs, {pool.num_workers} workers, limit {args.timeout} s/item, {args.repeat} pass(es)")
            results[name] = run(pool, func, rows, args.repeat)
    cats = sorted({r["category"] for r in rows})
    print(f"\n{'category':16s} {'n':>4s} {'ours':>7s} {'plain':>7s}")
    for c in cats:
        (oc, n), (pc, _) = results["accuracy_math"][0][c], results["plain math-verify"][0][c]
        print(f"{c:16s} {n:4d} {oc / n:7.1%} {pc / n:7.1%}")
    for name, (per_cat, rate, statuses) in results.items():
        acc = sum(c for c, _ in per_cat.values()) / len(rows)
        print(f"{name:18s} accuracy {acc:.1%}  {rate:8.1f} items/s  outcomes {dict(statuses)}")
    ratio = results["accuracy_math"][1] / results["plain math-verify"][1]
    print(f"throughput ratio (ours / plain): {ratio:.2f}")


if __name__ == "__main__":
    main()
