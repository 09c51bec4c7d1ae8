"""Training jobs sharing a machine's cores: OpenMP threads that sleep when idle vs ones that spin.

Run: `.venv/bin/python bench/bench_omp_wait_policy.py` (about 7 minutes on 2 cores, most of it
the spinning pair; see --help).

The local executor runs jobs side by side on one machine (r1hpc.launch.Launcher._local_env).
When their threads add up to more than the cores, OpenMP's default (threads spin a while before
they sleep) makes every job wait on threads that are spinning on another job's core. This bench
measures the tiny demo base's training step (configs/tiny.yaml's model, batch 8 x 256 tokens,
AdamW), each measurement in fresh subprocesses, under the default policy and under
OMP_WAIT_POLICY=PASSIVE, interleaved, in three layouts:

  alone-1   one job, 1 thread (the demo's base before: launch.train.cpus_per_task 1)
  alone-N   one job, --threads threads (the cores are all its own)
  pair-N    two such jobs at once (the demo's base and student_base pretraining side by side)

It prints the median seconds per step of each and the ratios passive / default: how much a job
given more threads than are free loses beside another, and what sleeping costs a job alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # standalone: no install needed

POLICIES = {"default": None, "passive": "PASSIVE"}


def worker(steps: int, warmup: int) -> None:
    """One job: prints its seconds per step after `warmup` untimed steps."""
    import torch

    from r1hpc.model.factory import ModelSize, build_model

    model = build_model(ModelSize(), vocab_size=1024, eos_id=0, pad_id=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 1024, (8, 256), generator=torch.Generator().manual_seed(0))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    print((time.perf_counter() - start) / steps, flush=True)


def run_jobs(n_jobs: int, threads: int, policy: str | None, steps: int, warmup: int) -> list[float]:
    """`n_jobs` workers started together; their seconds per step."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps), "--warmup", str(warmup)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n_jobs)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"worker failed with exit code {p.returncode}")
        out.append(float(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads per job (default: the cores)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of every measurement")
    ap.add_argument("--layouts", default="alone-1,alone,pair", help="which of alone-1, alone, pair to measure")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.steps, a.warmup)
        return
    n = a.threads
    known = {"alone-1": ("alone-1", 1, 1), "alone": (f"alone-{n}", 1, n), "pair": (f"pair-{n}", 2, n)}
    chosen = a.layouts.split(",")
    if not chosen or set(chosen) - set(known):
        ap.error(f"--layouts {a.layouts!r}: expected a comma-separated subset of {', '.join(known)}")
    layouts = {known[c][0]: known[c][1:] for c in chosen}
    times: dict[tuple[str, str], list[float]] = {(lay, pol): [] for lay in layouts for pol in POLICIES}
    for _ in range(a.reps):
        for lay, (jobs, threads) in layouts.items():
            for pol, value in POLICIES.items():
                times[lay, pol] += run_jobs(jobs, threads, value, a.steps, a.warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{os.cpu_count()} cores, {a.steps} timed steps per job, {a.reps} reps; seconds per step (median)")
    print(f"{'layout':10s} {'default':>9s} {'passive':>9s} {'passive/default':>16s}")
    for lay in layouts:
        d, p = med[lay, "default"], med[lay, "passive"]
        print(f"{lay:10s} {d:9.3f} {p:9.3f} {p / d:16.2f}x")
    if f"pair-{n}" in layouts and "alone-1" in layouts:
        pair, one = med[f"pair-{n}", "passive"], med["alone-1", "default"]
        print(f"pair-{n} passive / alone-1 default: {pair / one:.2f}x (a {n}-thread job beside another vs one thread)")


if __name__ == "__main__":
    main()
