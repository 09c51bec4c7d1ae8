"""Sandbox throughput: programs/s on small correct programs, against an unsandboxed peer.

Peer, measured in the same run on the same programs and inputs: ``subprocess.run([python, "-I",
"-S", "-c", prog], input=..., capture_output=True)`` with no limits and no isolation, i.e. the
cheapest way to run a program in another process. The ratio shows what the isolation costs.

    .venv/bin/python bench/bench_sandbox.py [--n 60] [--mode full|no_ns|both]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from r1hpc.rewards.sandbox import SandboxConfig, SandboxLimits, _pick_python, run_python

PROGRAMS = [
    ("a, b = map(int, input().split())\nprint(a + b)\n", "3 4\n", "7"),
    (
        "import sys\nxs = list(map(int, sys.stdin.read().split()))\nprint(sorted(xs)[len(xs) // 2])\n",
        "5 1 4 2 3\n",
        "3",
    ),
    ("n = int(input())\nprint(sum(i * i for i in range(n)))\n", "1000\n", "332833500"),
]


def _bench(run_one, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        prog, stdin, expected = PROGRAMS[i % len(PROGRAMS)]
        out = run_one(prog, stdin)
        if out.strip() != expected:
            raise RuntimeError(f"wrong output {out!r} for program {i % len(PROGRAMS)}")
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="programs per measurement")
    ap.add_argument("--mode", choices=["full", "no_ns", "both"], default="both")
    args = ap.parse_args()
    python = _pick_python(True)  # the same interpreter for the peer and the sandbox
    limits = SandboxLimits(wall_s=5.0)
    modes = ["full", "no_ns"] if args.mode == "both" else [args.mode]
    configs = {"full": SandboxConfig(python=python), "no_ns": SandboxConfig(namespaces=False, python=python)}

    def peer(prog: str, stdin: str) -> str:
        return subprocess.run(
            [python, "-I", "-S", "-c", prog], input=stdin, capture_output=True, text=True, check=True
        ).stdout

    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"interpreter: {python}; programs per measurement: {args.n}")
    _bench(peer, 5)  # warm the page cache
    peer_rate = _bench(peer, args.n)
    print(f"peer  plain subprocess.run      {peer_rate:7.1f} programs/s")
    for mode in modes:
        cfg = configs[mode]
        rate = _bench(lambda p, s, cfg=cfg: _checked(run_python(p, s, limits, cfg)), args.n)
        print(f"sandbox {mode:<6} {'':22}{rate:7.1f} programs/s   ratio sandbox/peer = {rate / peer_rate:.2f}")


def _checked(res) -> str:
    if res.status != "ok":
        raise RuntimeError(f"sandbox run failed: {res.status} {res.detail} {res.stderr_tail[-300:]}")
    return res.stdout


if __name__ == "__main__":
    main()
