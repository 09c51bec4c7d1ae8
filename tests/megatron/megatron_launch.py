"""Launch r1hpc's Megatron entry points under torchrun (gloo, CPU) for the tests, and parse their output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def torchrun(nproc: int, module: str, *args: str, timeout: float = 300) -> str:
    """Run ``python -m module args`` as ``nproc`` local torchrun processes; return stdout (raise with its
    tail on failure)."""
    cmd = [TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", module, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout


def grpo_step(nproc: int, *args: str) -> dict:
    """Run r1hpc.megatron.grpo_step; return {"eval": {tag: rec}, "grpo": [rec per step]} from its
    ``EVAL {json}`` / ``GRPO {json}`` lines (rank 0 of the last stage prints them)."""
    stdout = torchrun(nproc, "r1hpc.megatron.grpo_step", *args)
    out: dict = {"eval": {}, "grpo": []}
    for line in stdout.splitlines():
        if line.startswith("EVAL "):
            rec = json.loads(line[5:])
            out["eval"][rec["tag"]] = rec
        elif line.startswith("GRPO "):
            out["grpo"].append(json.loads(line[5:]))
    steps = int(args[args.index("--steps") + 1]) if "--steps" in args else None
    assert set(out["eval"]) == {"init", "final"} and (steps is None or len(out["grpo"]) == steps), stdout
    return out


STEP_COMPARE_KEYS = ("loss_e1", "pg_loss_e1", "grad_norm_e0", "logp_mean_e1")


def assert_same_trajectory(ref: dict, got: dict, label: str, *, rel: float, abs_: float) -> None:
    """``got`` (a grpo_step result) follows ``ref``: step-0 grad norm within 5e-7 relative, every
    step's loss / pg loss / grad norm / log-prob within rel/abs_, final log-prob within 1e-7."""
    import pytest

    assert got["grpo"][0]["grad_norm_e0"] == pytest.approx(ref["grpo"][0]["grad_norm_e0"], rel=5e-7), label
    for ra, rb in zip(ref["grpo"], got["grpo"], strict=True):
        for key in STEP_COMPARE_KEYS:
            assert rb[key] == pytest.approx(ra[key], rel=rel, abs=abs_), f"{label} step {ra['step']} {key}"
    assert got["eval"]["final"]["logp_mean"] == pytest.approx(ref["eval"]["final"]["logp_mean"], rel=1e-7), label
