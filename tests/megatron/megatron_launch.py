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
    """Run ``python -m module args`` as ``nproc`` local torchrun processes; return stdout (raise with its tail on failure)."""
    cmd = [TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", module, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
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
