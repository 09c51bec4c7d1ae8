"""Save / load the Megatron model with megatron-core dist_checkpointing (torch_dist format).

A checkpoint saved at one layout (TP/PP/EP) loads at any other: each rank writes its shards with
their global offsets and reads back whichever pieces its new layout owns. Next to megatron's own
files we write ``r1hpc_meta.json`` (model sizes, step) so that loading into a model of different
sizes fails with a message naming the differing fields instead of a shape error deep in torch.

Given the optimizer, its state is saved too (the distributed optimizer's ``fully_reshardable``
format: each parameter's Adam moments are tensors of the parameter's shape, so they reshard like
the weights), and a resumed job continues Adam exactly (step counts included).

Scripts that call ``save_checkpoint`` must keep their body under ``if __name__ == "__main__":``:
the saver starts a process that re-imports the main module (without the guard the save hangs).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core import parallel_state as ps

from r1hpc.megatron.model import MegatronModelConfig
from r1hpc.megatron.parallel import unwrap

META_NAME = "r1hpc_meta.json"
_STRATEGY = ("torch_dist", 1)  # a tuple: the bare string is not accepted by 0.16.1's save
# The optimizer's default format (fully_sharded_model_space) uses flattened ShardedTensors, which
# 0.16.1's own validation rejects on save. fully_reshardable gathers each DP group's state on its DP
# rank 0 into per-parameter tensors (like the weights), so it reloads at any TP/PP/EP/DP layout.
# chained_optim_avoid_prefix: the same keys whether or not experts get their own optimizer (EP > 1).
_OPTIM_META = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True}


def _state(model: Any, optimizer: Any, is_loading: bool) -> dict[str, Any]:
    """The sharded state dict: {"model": ...} plus {"optimizer": ...} when an optimizer is given."""
    model_ssd = unwrap(model).sharded_state_dict()
    state = {"model": model_ssd}
    if optimizer is not None:
        if is_loading:
            _materialise_optimizer_state(optimizer)
        state["optimizer"] = optimizer.sharded_state_dict(model_ssd, is_loading=is_loading, metadata=_OPTIM_META)
    return state


def _materialise_optimizer_state(optimizer: Any) -> None:
    """Give a fresh optimizer its Adam state tensors, which the checkpoint then overwrites in place.

    Why: with torch's Adam (no Apex/TE on CPU) the distributed optimizer reads the step count from
    per-parameter state while building the load template, and a fresh optimizer has none (assert in
    megatron-core 0.16.1). Its own helper takes one Adam step with zero gradients, which leaves the
    weights unchanged with weight_decay 0; the loaded checkpoint overwrites weights and state anyway.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is not None and not inner.state and hasattr(opt, "_init_optimizer_states_with_dummy_values"):
            opt._init_optimizer_states_with_dummy_values()


def save_checkpoint(
    model: Any,
    cfg: MegatronModelConfig,
    ckpt_dir: str | Path,
    *,
    step: int = 0,
    optimizer: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Collectively save the weights (and the optimizer's state, if given) to ``ckpt_dir`` (must not
    exist yet). All ranks call this. ``extra`` (JSON) is stored in the metadata file.

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
    dist_checkpointing.save(_state(model, optimizer, is_loading=False), str(tmp), sharded_strategy=_STRATEGY)
    dist.barrier()
    if rank == 0:
        meta = {
            "model": cfg.to_dict(),
            "step": step,
            "format": "megatron-core dist_checkpointing torch_dist",
            "optimizer": optimizer is not None,
            "extra": extra or {},
            "expert_parallel": ps.get_expert_model_parallel_world_size(),
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, final)
    dist.barrier()
    return final


# A trainer's checkpoints in its state directory: <state_dir>/megatron_step_NNNN, one per saved step.
_STEP_PREFIX = "megatron_step_"


def step_dir(state_dir: Path, step: int) -> Path:
    """Where a trainer's checkpoint of ``step`` lives in ``state_dir`` (the state before that step)."""
    return state_dir / f"{_STEP_PREFIX}{step:04d}"


def complete_steps(state_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in ``state_dir`` (their metadata file is written last), ascending."""
    out = []
    for d in state_dir.glob(f"{_STEP_PREFIX}*") if state_dir.is_dir() else []:
        tail = d.name[len(_STEP_PREFIX) :]
        if tail.isdigit() and (d / META_NAME).is_file():
            out.append(int(tail))
    return sorted(out)


def prune_steps(state_dir: Path, keep: int) -> None:
    """Drop all but the newest ``keep`` complete checkpoints of ``state_dir`` (a restore reads the newest)."""
    for n in complete_steps(state_dir)[:-keep]:
        shutil.rmtree(step_dir(state_dir, n), ignore_errors=True)


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


def load_checkpoint(model: Any, cfg: MegatronModelConfig, ckpt_dir: str | Path, *, optimizer: Any = None) -> int:
    """Collectively load weights saved at any layout into ``model`` (and the optimizer's state into
    ``optimizer`` when given); returns the saved step.

    Raises ValueError naming the fields when ``cfg`` differs from the checkpoint's model sizes, or
    when an optimizer is given but the checkpoint holds none.
    """
    meta = read_meta(ckpt_dir)
    saved = MegatronModelConfig.from_dict(meta["model"], where=f"{Path(ckpt_dir) / META_NAME}: model")
    if saved != cfg:
        diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_dict().items() if getattr(cfg, k) != v}
        raise ValueError(
            f"{ckpt_dir}: checkpoint model sizes differ from the requested ones (saved, requested): {diff}"
        )
    if optimizer is not None and not meta.get("optimizer"):
        raise ValueError(f"{ckpt_dir}: checkpoint has no optimizer state (saved without optimizer=)")
    saved_ep, ep = int(meta.get("expert_parallel", 1)), ps.get_expert_model_parallel_world_size()
    if optimizer is not None and (saved_ep > 1) != (ep > 1):
        # With EP > 1 experts get their own optimizer (a chain of two); its state does not map onto one.
        raise ValueError(
            f"{ckpt_dir}: optimizer state saved at expert parallel {saved_ep} cannot resume at {ep}; "
            "keep EP > 1 (or EP = 1) within a run, or load the weights only"
        )
    state = dist_checkpointing.load(
        _state(model, optimizer, is_loading=True), str(ckpt_dir), sharded_strategy=_STRATEGY
    )
    unwrap(model).load_state_dict(state["model"], strict=True)
    if optimizer is not None:
        _load_optimizer_state(optimizer, state["optimizer"])
    return int(meta["step"])


def _load_optimizer_state(optimizer: Any, state: Any) -> None:
    """optimizer.load_state_dict, working around torch-Adam's per-parameter 'step' (no Apex/TE).

    megatron-core 0.16.1 restores the step from the param groups, then copies every key of the
    live per-parameter state from the loaded tensors, which never include 'step' (KeyError). The
    wrapper hands the already-restored step back to it; with Apex/TE there is no such key.
    """
    chained = list(getattr(optimizer, "chained_optimizers", [optimizer]))
    for opt in chained:
        if not hasattr(opt, "_set_main_param_and_optimizer_states"):
            continue
        original = opt._set_main_param_and_optimizer_states

        def with_step(model_param: Any, tensors: dict, _opt: Any = opt, _orig: Any = original) -> None:
            if "step" not in tensors:
                group, order = _opt.model_param_group_index_map[model_param]
                live = _opt.optimizer.state[_opt.optimizer.param_groups[group]["params"][order]]
                if "step" in live:
                    tensors = {**tensors, "step": live["step"].clone()}
            _orig(model_param, tensors)

        opt._set_main_param_and_optimizer_states = with_step
    try:
        optimizer.load_state_dict(state)
    finally:
        for opt in chained:
            opt.__dict__.pop("_set_main_param_and_optimizer_states", None)
    # The loader also puts ONE step tensor into every parameter's state; torch Adam increments it in
    # place per parameter, so after one update the shared count is off (measured: resumed runs
    # drifted from uninterrupted ones). Each parameter gets its own copy.
    for opt in chained:
        inner = getattr(opt, "optimizer", None)
        for st in inner.state.values() if inner is not None else []:
            if torch.is_tensor(st.get("step")):
                st["step"] = st["step"].clone()
