"""Job bodies used by the launcher tests. Importable in the job processes because the tests put
this directory on PYTHONPATH, which submitit's local executor and sbatch both pass on to jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from r1hpc.fsio import append_jsonl, atomic_write_json, read_json


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise RuntimeError(message)


def record_env(path: str) -> dict:
    """Write what the job saw of Slurm's environment."""
    seen = {k: v for k, v in os.environ.items() if k.startswith("SLURM_") or k == "CUDA_VISIBLE_DEVICES"}
    atomic_write_json(path, seen)
    return seen


def resumable_count(state_dir: str, n: int, step_s: float) -> list[int]:
    """Count to n, one step every step_s seconds, checkpointing after each step in state_dir.

    A requeued job resumes from the last checkpoint, so each step is done exactly once across all
    attempts; `attempts.jsonl` records which attempt ran which steps (the test checks it).
    """
    state = Path(state_dir)
    ckpt = state / "counter.json"
    done = read_json(ckpt)["done"] if ckpt.exists() else []
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    for i in range(len(done), n):
        time.sleep(step_s)
        done = done + [i]
        atomic_write_json(ckpt, {"done": done})
        append_jsonl(state / "attempts.jsonl", {"attempt": attempt, "step": i})
    return done


def slow_tiny_sft(state_dir: str, out: str, step_s: float) -> int:
    """The tiny SFT of tests/test_train_sft.py, slowed to `step_s` per step; logs (pid, step) of
    every optimizer step to steps.jsonl and saves the final weights to `out`. Periodic saves are
    off (save_every is huge), so only a save on the stop signal lets a requeued attempt resume."""
    import dataclasses

    import torch
    from test_train_sft import PAD, PROMPTS, SETTINGS, TARGETS, tiny_model

    from r1hpc.train.sft import train_sft

    def log(m: dict) -> None:
        append_jsonl(Path(state_dir) / "steps.jsonl", {"pid": os.getpid(), "step": m["step"]})
        time.sleep(step_s)

    model = tiny_model()
    train_sft(
        model,
        PROMPTS,
        TARGETS,
        dataclasses.replace(SETTINGS, save_every=10_000),
        PAD,
        seed=1,
        state_dir=Path(state_dir),
        log=log,
        progress=False,
    )
    torch.save(model.state_dict(), out)
    return os.getpid()


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
