"""``make_generator``: load a policy with the chosen rollout backend.

Its own module (not ``base.py``) because it names both backends and both of them import
``base``: the factory sits above the backends, ``base`` below them, and nothing imports upward.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from r1hpc.rollout.base import Backend, Generator

__all__ = ["make_generator", "vllm_available"]


def vllm_available() -> bool:
    """Whether the vllm package can be imported (without importing it: that takes ~13 s)."""
    return importlib.util.find_spec("vllm") is not None


def make_generator(
    backend: Backend, model_dir: str | Path, seed: int = 0, engine: dict[str, Any] | None = None, **kwargs: Any
) -> Generator:
    """Load the policy in ``model_dir`` with the chosen backend.

    backend: "hf", "vllm", or "auto" (vllm when importable, else hf; the choice is printed to
    stderr so the job log says which ran). kwargs go to the backend's constructor (e.g. dtype,
    batch_size for hf; dtype, max_model_len, kv_cache_memory_bytes for vllm). engine: arguments
    only the vllm backend gets (the config's engine layout: tp, pp, ep, dtype); hf ignores them.
    tp * pp > 1 inside ``engine_ranks.joined`` (a generation task of several processes): the
    leader's generator, whose calls the task's other processes follow.
    """
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
        print(
            f"r1hpc.rollout: backend 'auto' chose '{backend}'"
            + ("" if backend == "vllm" else " (vllm is not importable)"),
            file=sys.stderr,
        )
    workers = int((engine or {}).get("tp", 1)) * int((engine or {}).get("pp", 1))
    if backend == "hf":
        if workers > 1:
            raise ValueError(f"an engine of tp*pp = {workers} workers needs the vllm backend (hf runs on one device)")
        from r1hpc.rollout.hf import HFGenerator  # imports torch + transformers: only the backend asked for

        return HFGenerator(model_dir, seed=seed, **kwargs)
    if backend == "vllm":
        from r1hpc.rollout import engine_ranks

        ranks = engine_ranks.current()
        if ranks is not None and workers > 1:
            # this task's leader: the engine's other workers are the task's other processes
            return engine_ranks.EngineLeader(ranks, model_dir=model_dir, seed=seed, **(engine or {}), **kwargs)
        from r1hpc.rollout.vllm_engine import VLLMGenerator  # vllm takes ~13 s to import: only when asked for

        return VLLMGenerator(model_dir, seed=seed, **(engine or {}), **kwargs)
    raise ValueError(f"backend must be one of 'hf', 'vllm', 'auto', got {backend!r}")
