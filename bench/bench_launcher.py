"""Submit-to-start latency and per-job overhead of the r1hpc launcher vs plain `sbatch --wrap`.

Run on a live Slurm cluster (the test cluster: `make cluster-up`, then
`SLURM_CONF=/tmp/r1hpc-testcluster/etc/slurm.conf .venv/bin/python bench/bench_launcher.py`).
Both sides submit the same number of 1-CPU no-op jobs, interleaved in one run, so cluster noise
hits them alike. Measured per job:
  submit   time spent in the submitting call (sbatch process / Launcher.submit)
  start    submit call start -> first instruction of the job (wall clock of this one node)
  done     submit call start -> result visible to the submitter (file / job.result())
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from r1hpc.config import load_config
from r1hpc.launch import Launcher


def plain_sbatch(workdir: Path, i: int) -> tuple[float, float, float]:
    out = workdir / f"sbatch_{i}.t"
    t0 = time.time()
    subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--cpus-per-task=1",
            "--mem=100M",
            "-o",
            "/dev/null",
            "--wrap",
            f"date +%s.%N > {out}.tmp && mv {out}.tmp {out}",
        ],
        check=True,
        capture_output=True,
    )
    t1 = time.time()
    while not out.exists():
        time.sleep(0.02)
    t2 = time.time()
    return t1 - t0, float(out.read_text()) - t0, t2 - t0


def launcher_job(launcher: Launcher, i: int) -> tuple[float, float, float]:
    t0 = time.time()
    sub = launcher.submit("bench", "train", "time:time", {}, step=i)
    t1 = time.time()
    (started,) = sub.results()
    t2 = time.time()
    return t1 - t0, started - t0, t2 - t0


def summary(name: str, rows: list[tuple[float, float, float]]) -> dict[str, float]:
    cols = list(zip(*rows))
    stats = {f"{k}_mean": statistics.mean(c) for k, c in zip(("submit", "start", "done"), cols)}
    stats["start_max"] = max(cols[1])
    print(
        f"{name:<16} submit {stats['submit_mean'] * 1000:7.1f} ms   start {stats['start_mean']:6.3f} s "
        f"(max {stats['start_max']:.3f})   done {stats['done_mean']:6.3f} s"
    )
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument(
        "--require-peer", action="store_true", help="exit 2 when there is no Slurm cluster (default: say so and exit 0)"
    )
    args = parser.parse_args()
    # The configuration Slurm's clients would read: without one there is no cluster to reach.
    if not Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).is_file():
        print("bench_launcher: skipped, no Slurm cluster (start the test cluster: make cluster-up; set SLURM_CONF)")
        return 2 if args.require_peer else 0
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        cfg = load_config(
            None,
            [
                f"runs_dir={tmp}",
                "name=bench",
                "launch.executor=slurm",
                "launch.train.cpus_per_task=1",
                "launch.train.mem_gb=0.5",
                "launch.train.time_min=5",
            ],
        )
        launcher = Launcher(cfg)
        plain, ours = [], []
        for i in range(args.jobs):  # interleaved: both see the same scheduler state
            plain.append(plain_sbatch(Path(tmp), i))
            ours.append(launcher_job(launcher, i))
    print(f"{args.jobs} sequential no-op jobs each:")
    p = summary("sbatch --wrap", plain)
    o = summary("r1hpc launcher", ours)
    print(
        f"ratio r1hpc/sbatch: submit {o['submit_mean'] / p['submit_mean']:.2f}x, "
        f"start {o['start_mean'] / p['start_mean']:.2f}x, done {o['done_mean'] / p['done_mean']:.2f}x; "
        f"launcher overhead per job {1000 * (o['done_mean'] - p['done_mean']):.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
