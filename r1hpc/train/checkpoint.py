"""Trainer-native checkpoints for small models: one file per save, written atomically.

`train_state/<stage>/ckpt_000040.pt` holds model and optimizer state, the RNG state and the
trainer's position, so a job killed at any point resumes from the newest complete file and
continues exactly as the undisturbed run would (same data order, same random draws). A file is
complete when it exists: it appears by one rename after its bytes are fsync'ed (r1hpc.fsio).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from r1hpc.fsio import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "load_latest_checkpoint", "checkpoint_steps", "save_periodically"]

_NAME = re.compile(r"^ckpt_(\d{6})\.pt$")


def checkpoint_steps(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))


def save_checkpoint(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ckpt_<step>.pt atomically and delete all but the newest `keep` checkpoints."""
    buf = io.BytesIO()
    torch.save(
        {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "extra": extra or {},
        },
        buf,
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt_{step:06d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    for old in checkpoint_steps(directory)[:-keep]:
        (directory / f"ckpt_{old:06d}.pt").unlink(missing_ok=True)
    return path


def load_checkpoint(
    directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict[str, Any]:
    """Restore the checkpoint of exactly `step`; FileNotFoundError naming the file if it is missing."""
    path = directory / f"ckpt_{step:06d}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint for step {step} (have {checkpoint_steps(directory)})")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["extra"]


def load_latest_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, dict[str, Any]] | None:
    """Restore the newest checkpoint into model/optimizer/generator; return (step, extra) or None.

    A checkpoint that cannot be read (e.g. a disk that filled up after the rename) is reported and
    the previous one is used: losing a few steps beats failing the job.
    """
    for step in reversed(checkpoint_steps(directory)):
        path = directory / f"ckpt_{step:06d}.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # torch raises several kinds for a corrupt file
            print(f"warning: {path}: unreadable checkpoint ({type(e).__name__}: {e}); trying an older one")
            continue
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        return state["step"], state["extra"]
    return None


def save_periodically(
    directory: Path,
    done: int,
    total: int,
    save_every: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    """Call after each optimizer step (`done` steps of `total` finished): saves every `save_every`
    steps, and when the job is being stopped (r1hpc.preemption) saves and hands over to the
    requeue, never returning. Nothing is saved after the last step: the caller publishes then."""
    from r1hpc import preemption

    if done >= total:
        return
    stopping = preemption.stop_requested()
    if stopping or done % save_every == 0:
        save_checkpoint(directory, done, model, optimizer, generator)
    if stopping:
        preemption.hand_over()  # the requeued job resumes from this checkpoint
