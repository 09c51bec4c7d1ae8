"""Benchmark: our accuracy_math vs plain math-verify, on both labelled sets, through the same pool.

    .venv/bin/python bench/bench_verifier.py [--workers N] [--timeout S] [--repeat K] [--data PATH ...]

(a) ``r1hpc.rewards.math_accuracy.accuracy_math(completion, example)``;
(b) plain math-verify: ``verify(parse(gold), parse(completion))`` with its default extraction
    (no R1 answer-tag priority, no normalisation), run through the same WorkerPool code with the
    same per-item limit (a fresh pool each), so the two differ only in the grading function.
Sets (default both): tests/rewards/data/math_pairs.jsonl (the policy set, written with the
verifier) and tests/rewards/data/model_outputs.jsonl (answers as real reasoning models and graders
write them, kept apart from the policy). Prints the command line, accuracy against the labels
per set and category, items/s per set and overall for both verifiers and the throughput ratio
(ours / plain). Items that time out count as "not equivalent".
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

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "rewards" / "data"
DEFAULT_DATA = [DATA_DIR / "math_pairs.jsonl", DATA_DIR / "model_outputs.jsonl"]


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
    seconds = (time.perf_counter() - t0) / repeat
    per_cat: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    statuses = collections.Counter(o.status for o in outcomes)
    for r, o in zip(rows, outcomes):
        per_cat[r["category"]][1] += 1
        per_cat[r["category"]][0] += int((o.ok and o.value == 1.0) == r["label"])
    return per_cat, seconds, statuses


VERIFIERS = (("accuracy_math", accuracy_math), ("plain math-verify", plain_math_verify))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="pool size (default: CPUs of this job)")
    ap.add_argument("--timeout", type=float, default=2.0, help="per-item wall-time limit, seconds")
    ap.add_argument("--repeat", type=int, default=1, help="passes over each set per verifier")
    ap.add_argument("--data", type=Path, nargs="+", default=DEFAULT_DATA)
    ap.add_argument(
        "--exclude-adversarial",
        action="store_true",
        help="leave out the hostile items (their timeouts dominate the time)",
    )
    args = ap.parse_args()
    print("command:", " ".join([sys.executable, *sys.argv]), flush=True)

    sets = {}
    for path in args.data:
        rows = load_pairs(path)
        if args.exclude_adversarial:
            rows = [r for r in rows if r["category"] != "adversarial"]
        sets[path.stem] = rows
    results: dict[str, dict[str, tuple]] = {name: {} for name, _ in VERIFIERS}
    for name, func in VERIFIERS:
        # A fresh pool per verifier: both start from workers forked off the same clean
        # forkserver, so neither profits from parse caches the other one filled.
        with WorkerPool(args.workers, item_timeout_s=args.timeout) as pool:
            pool.run([(abs, (1,))] * pool.num_workers)  # workers started
            if name == VERIFIERS[0][0]:
                sizes = ", ".join(f"{k} {len(v)}" for k, v in sets.items())
                print(
                    f"pairs: {sizes}; {pool.num_workers} workers, limit {args.timeout} s/item, {args.repeat} pass(es)"
                )
            for set_name, rows in sets.items():
                results[name][set_name] = run(pool, func, rows, args.repeat)
    ours, plain = (results[name] for name, _ in VERIFIERS)
    for set_name, rows in sets.items():
        print(f"\n{set_name}\n{'category':18s} {'n':>4s} {'ours':>7s} {'plain':>7s}")
        for c in sorted({r["category"] for r in rows}):
            (oc, n), (pc, _) = ours[set_name][0][c], plain[set_name][0][c]
            print(f"{c:18s} {n:4d} {oc / n:7.1%} {pc / n:7.1%}")
    print(f"\n{'set':20s} {'n':>5s} {'ours':>7s} {'plain':>7s} {'ours/s':>8s} {'plain/s':>8s} {'ratio':>6s}")
    tot = {name: [0, 0.0] for name, _ in VERIFIERS}
    for set_name, rows in sets.items():
        line = []
        for name, _ in VERIFIERS:
            per_cat, seconds, _ = results[name][set_name]
            tot[name][0] += sum(c for c, _ in per_cat.values())
            tot[name][1] += seconds
            line.append((sum(c for c, _ in per_cat.values()) / len(rows), len(rows) / seconds))
        (oa, orate), (pa, prate) = line
        print(f"{set_name:20s} {len(rows):5d} {oa:7.1%} {pa:7.1%} {orate:8.1f} {prate:8.1f} {orate / prate:6.2f}")
    n = sum(len(r) for r in sets.values())
    (oc, osec), (pc, psec) = tot.values()
    print(f"{'overall':20s} {n:5d} {oc / n:7.1%} {pc / n:7.1%} {n / osec:8.1f} {n / psec:8.1f} {psec / osec:6.2f}")
    for name, _ in VERIFIERS:
        statuses = sum((results[name][k][2] for k in sets), collections.Counter())
        print(f"{name:18s} outcomes {dict(statuses)}")
    print(f"throughput ratio (ours / plain, overall): {psec / osec:.2f}")


if __name__ == "__main__":
    main()
