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


def engine_generate(model_dirs: list[str], out: str, tp: int, prompts: list[str], generate_s: float = 0.0) -> str:
    """A generation task's body: sample from model_dirs[0], reload model_dirs[1] in place, sample
    again; write both (and the generator's type and world) to `out`. With engine.tp > 1 only rank 0
    runs this; the task's other processes serve its engine. generate_s > 0: then go on generating
    for that long (a task to kill in the middle of a generate)."""
    import dataclasses

    from r1hpc.rollout import make_generator

    if Path(out).exists():  # done by an earlier attempt, as a stage's published shard would be
        return out
    gen = make_generator("vllm", model_dirs[0], seed=0, engine={"tp": tp} if tp > 1 else {}, progress=False)
    kw = {"n": 3, "max_new_tokens": 16, "temperature": 1.0, "top_p": 1.0, "seed": 2}
    try:
        before = gen.generate(prompts, **kw)
        gen.load_weights(model_dirs[1])
        after = gen.generate(prompts, **kw)
        rows = {
            "generator": type(gen).__name__,
            "world": int(os.environ.get("WORLD_SIZE", "1")),
            "pid": os.getpid(),
            "engine_ident": os.environ.get("R1HPC_ENGINE_IDENT", ""),
            "fixes": gen.last_reload_fixes,
            "before": [[dataclasses.asdict(s) for s in group] for group in before],
            "after": [[dataclasses.asdict(s) for s in group] for group in after],
        }
        atomic_write_json(out, rows)
        deadline = time.time() + generate_s
        while time.time() < deadline:
            gen.generate(prompts, **{**kw, "max_new_tokens": 64})
    finally:
        gen.close()
    return out
