"""Save / load the Megatron model with megatron-core dist_checkpointing (torch_dist format).

A checkpoint saved at one layout (TP/PP/EP) loads at any other: each rank writes its shards with
their global offsets and reads back whichever pieces its new layout owns. Next to megatron's own
files we write ``r1hpc_meta.json`` (model sizes, step) so that loading into a model of different
sizes fails with a message naming the differing fields instead of a shape error deep in torch.

Scripts that call ``save_checkpoint`` must keep their body under ``if __name__ == "__main__":``:
the saver starts a process that re-imports the main module (without the guard the save hangs).
Not saved yet: optimizer state (resume restarts Adam's moments).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
from megatron.core import dist_checkpointing

from r1hpc.megatron.model import MegatronModelConfig
from r1hpc.megatron.parallel import unwrap

META_NAME = "r1hpc_meta.json"
_STRATEGY = ("torch_dist", 1)  # a tuple: the bare string is not accepted by 0.16.1's save


def save_checkpoint(model: Any, cfg: MegatronModelConfig, ckpt_dir: str | Path, *, step: int = 0) -> Path:
    """Collectively save the model's weights to ``ckpt_dir`` (must not exist yet). All ranks call this.

    Written into ``<ckpt_dir>.tmp`` first and renamed by rank 0 once every rank has finished, so a
    crash never leaves a half-written directory under the final name.
    """
    final = Path(ckpt_dir)
    tmp = final.with_name(final.name + ".tmp")
    rank = dist.get_rank()
    if final.exists():
        raise FileExistsError(f"checkpoint directory {final} already exists; refusing to overwrite")
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)  # leftover of a crashed save
        tmp.mkdir(parents=True)
    dist.barrier()
    dist_checkpointing.save(unwrap(model).sharded_state_dict(), str(tmp), sharded_strategy=_STRATEGY)
    dist.barrier()
    if rank == 0:
        meta = {"model": cfg.to_dict(), "step": step, "format": "megatron-core dist_checkpointing torch_dist"}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, final)
    dist.barrier()
    return final


def read_meta(ckpt_dir: str | Path) -> dict:
    """The r1hpc metadata of a checkpoint; errors name the path and what is missing."""
    path = Path(ckpt_dir) / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {ckpt_dir} is not a complete r1hpc Megatron checkpoint")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(meta, dict) or "model" not in meta or "step" not in meta:
        raise ValueError(f"{path}: expected an object with keys 'model' and 'step'")
    return meta


def load_checkpoint(model: Any, cfg: MegatronModelConfig, ckpt_dir: str | Path) -> int:
    """Collectively load weights saved at any layout into ``model``; returns the saved step.

    Raises ValueError naming the fields when ``cfg`` differs from the checkpoint's model sizes.
    """
    meta = read_meta(ckpt_dir)
    saved = MegatronModelConfig.from_dict(meta["model"], where=f"{Path(ckpt_dir) / META_NAME}: model")
    if saved != cfg:
        diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_dict().items() if getattr(cfg, k) != v}
        raise ValueError(f"{ckpt_dir}: checkpoint model sizes differ from the requested ones (saved, requested): {diff}")
    inner = unwrap(model)
    state = dist_checkpointing.load(inner.sharded_state_dict(), str(ckpt_dir), sharded_strategy=_STRATEGY)
    inner.load_state_dict(state, strict=True)
    return int(meta["step"])
