"""Every bench/*.py still runs: each at its smallest size, as a subprocess with a timeout, exit 0.

About 2 minutes on 2 cores in all, most of it bench_generate's vLLM engine start (kept: at this
size it is the only test of the vLLM-vs-HF bench). bench_launcher needs the Slurm test cluster
(SLURM_CONF); without one it says so in one line and exits 0, like a bench whose peer (TRL, vLLM)
is not installed -- non-zero only with --require-peer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE: dict[str, list[str]] = {
    "bench_generate.py": [
        "--prompts",
        "1",
        "--n",
        "1",
        "--max-new-tokens",
        "2",
        "--size",
        "tiny=1,64,2,1,128",  # one size (one engine start); head_dim 32: one vLLM's CPU kernels take
        "--vocab",
        "300",
        "--hf-batch-size",
        "1",
        "--reps",
        "1",
    ],
    "bench_grpo_vs_trl.py": [
        "--prompts",
        "1",
        "--group",
        "2",
        "--max-new-tokens",
        "4",
        "--micro-batch",
        "2",
        "--layers",
        "1",
        "--hidden",
        "32",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--intermediate",
        "64",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--threads",
        "1",
    ],
    "bench_launcher.py": ["--jobs", "1"],
    "fuzz_verifier.py": ["--items", "40", "--timeout", "2"],
    "bench_logprobs.py": [
        "--tokens",
        "64",
        "--vocab",
        "256",
        "--hidden",
        "32",
        "--chunk",
        "16",
        "--reps",
        "1",
        "--device",
        "cpu",
    ],
    "bench_omp_wait_policy.py": ["--layouts", "pair", "--threads", "2", "--steps", "1", "--warmup", "0", "--reps", "1"],
    "bench_sandbox.py": ["--n", "2"],
    "bench_verifier.py": ["--repeat", "1", "--exclude-adversarial"],
}


def _run(script: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_every_bench_has_a_smoke_size():
    assert sorted(p.name for p in (REPO / "bench").glob("*.py")) == sorted(SMOKE)


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_runs_at_its_smallest_size(script):
    res = _run(script, SMOKE[script])
    assert res.returncode == 0, f"{script} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def test_missing_peer_is_one_line_and_fails_only_when_required(tmp_path):
    # A configuration that does not exist: no cluster, whatever /etc/slurm holds on this machine.
    env = {**os.environ, "SLURM_CONF": str(tmp_path / "absent" / "slurm.conf")}
    res = _run("bench_launcher.py", ["--jobs", "1"], env=env, timeout=60)
    assert res.returncode == 0 and res.stdout.strip().splitlines() == [
        "bench_launcher: skipped, no Slurm cluster (start the test cluster: make cluster-up; set SLURM_CONF)"
    ]
    assert _run("bench_launcher.py", ["--jobs", "1", "--require-peer"], env=env, timeout=60).returncode == 2
