"""The Megatron backend of a GRPO stage's train job (used when ``parallel.backend == "megatron"``):
a stage job over the Megatron modules of r1hpc/megatron (model, conversion, GRPO step, checkpoint).

    train_task(run_dir, stage, step)    same contract as r1hpc.stages.grpo.train_task: reads the
        step's rollout shards, updates v(step) into v(step+1), publishes it, logs metrics; idempotent.

How it runs: inside a distributed launch (torchrun, or srun with one task per rank: WORLD_SIZE or
SLURM_NTASKS > 1) every rank runs the update directly; otherwise (the local executor, or a
one-task Slurm job on one node) it starts ``torchrun --standalone --nproc-per-node
launch.train.tasks_per_node`` here and waits.

Per step, on every rank:
1. weights: the Megatron checkpoint ``train_state/<stage>/megatron_step_NNNN`` (weights + Adam
   state written by the previous step's job) when present, else v(step) imported from its HF
   directory; the reference policy is imported from its HF version;
2. the GRPO update (``grpo_step``: r1hpc.algos math, inside megatron's schedule), in
   ``grpo.mini_batches`` optimizer steps;
3. checkpoint step+1 (with optimizer), HF export to a temp dir (each rank writes its own tensors),
   tokenizer files copied from v(step), ``publish_model`` and ``log_metrics`` by rank 0.
A job killed anywhere reruns the same deterministic update (no sampling inside the update).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from r1hpc import recipe

__all__ = ["train_task", "worker", "checkpoint_dir"]

_WEIGHT_FILES = (".safetensors", ".bin", ".pt")
_NOT_COPIED = {"config.json", "model.safetensors.index.json", "generation_config.json"}


def checkpoint_dir(state_dir: Path, step: int) -> Path:
    """Where the weights + optimizer state *before* step ``step``'s update live (= v(step))."""
    return state_dir / f"megatron_step_{step:04d}"


def _in_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (
        int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and bool(os.environ.get("SLURM_STEP_ID"))
    )


def train_task(run_dir: str, stage: str, step: int) -> dict[str, Any]:
    """Update v(step) with the step's rollouts and publish v(step+1) (idempotent)."""
    from r1hpc.distributed import detect
    from r1hpc.stages.common import StageContext, log_metrics_once
    from r1hpc.store import list_versions

    ctx = StageContext(run_dir)
    versions = {v.version: v for v in list_versions(ctx.run, stage)}
    if step + 1 in versions:
        if detect().is_main:  # metrics/<stage>.jsonl has one writer
            log_metrics_once(ctx, stage, versions[step + 1].meta["metrics"])
        return {"stage": stage, "step": step, "skipped": "already published", **versions[step + 1].meta}
    if _in_distributed_launch():
        return worker(run_dir, stage, step)
    p = ctx.cfg.parallel
    nproc = ctx.cfg.launch.train.tasks_per_node
    if nproc % (p.tp * p.pp):
        raise ValueError(
            f"{ctx.run_dir}/config.yaml: launch.train.tasks_per_node={nproc} is not a multiple of "
            f"parallel.tp*parallel.pp={p.tp * p.pp}"
        )
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [
        torchrun,
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "r1hpc.stages.grpo_megatron",
        str(run_dir),
        stage,
        str(step),
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"megatron train job {stage} step {step} failed (exit {proc.returncode}): {' '.join(cmd)}")
    versions = {v.version: v for v in list_versions(ctx.run, stage)}
    if step + 1 not in versions:
        raise RuntimeError(f"megatron train job {stage} step {step} exited 0 but published no v{step + 1:04d}")
    return versions[step + 1].meta.get("metrics", {})


def _hyper(g: Any, micro_batch_size: int) -> Any:
    from r1hpc.megatron.grpo_step import GRPOHyper

    unsupported = []
    if g.dynamic_sampling:
        unsupported.append("grpo.dynamic_sampling=true")
    if g.loss_agg == "seq-mean-token-sum-norm":
        unsupported.append("grpo.loss_agg=seq-mean-token-sum-norm")
    if unsupported:
        raise ValueError(f"parallel.backend=megatron does not support {', '.join(unsupported)} yet")
    return GRPOHyper(
        clip_low=g.clip_low,
        clip_high=g.clip_high,
        kl_coef=g.kl_coef,
        kl_estimator=g.kl_estimator,
        agg_mode=g.loss_agg,
        micro_batch_size=micro_batch_size,
        temperature=g.temperature,
        dual_clip=g.dual_clip,
        scale_adv_by_std=g.scale_adv_by_std,
    )


def rollout_batch(records: list[dict[str, Any]], pad_id: int, pad_multiple: int) -> Any:
    """The step's records (prompt_ids, response_ids, reward, group) as a RolloutBatch (B rows)."""
    from r1hpc.megatron.rollout_batch import from_sequences

    for i, r in enumerate(records):
        if not r["prompt_ids"] or not r["response_ids"]:
            raise ValueError(f"rollout record {i} (group {r.get('group')}): empty prompt_ids or response_ids")
    lengths = [len(r["prompt_ids"]) + len(r["response_ids"]) for r in records]
    tokens = torch.full((len(records), max(lengths)), pad_id, dtype=torch.long)
    for i, r in enumerate(records):
        tokens[i, : lengths[i]] = torch.tensor(r["prompt_ids"] + r["response_ids"], dtype=torch.long)
    start = torch.tensor([len(r["prompt_ids"]) for r in records])
    end = torch.tensor(lengths)
    rewards = torch.tensor([float(r["reward"]) for r in records])
    groups = torch.tensor([int(r["group"]) for r in records])
    return from_sequences(tokens, start, end, rewards, groups, pad_id=pad_id, pad_multiple=pad_multiple)


def _micro_batch_size(per_rank: int, wanted: int) -> int:
    """The largest divisor of the per-rank batch that is <= grpo.micro_batch_size."""
    return max(d for d in range(1, min(per_rank, wanted) + 1) if per_rank % d == 0)


def _reference_version(ref_refresh_steps: int, step: int) -> int:
    """As the torch backend: the stage's v0, or the newest multiple of ref_refresh_steps."""
    return 0 if ref_refresh_steps == 0 else (step // ref_refresh_steps) * ref_refresh_steps


def _pad_id(hf_dir: Path) -> int:
    import json

    cfg = json.loads((hf_dir / "config.json").read_text())
    pad = cfg.get("pad_token_id")
    return int(pad if pad is not None else (cfg.get("eos_token_id") or 0))


def worker(run_dir: str, stage: str, step: int) -> dict[str, Any]:
    """One rank of the train job (all ranks run this)."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from r1hpc.algos import response_length_metrics, reward_metrics
    from r1hpc.megatron import checkpoint
    from r1hpc.megatron.grpo_step import grpo_train_step, is_reporting_rank, prepare_grpo_micro_batches
    from r1hpc.megatron.hf_convert import export_hf, import_hf, megatron_config_from_hf
    from r1hpc.megatron.model import ParallelLayout, build_model
    from r1hpc.megatron.parallel import OptimConfig, build_optimizer, destroy_parallel, init_parallel, wrap_ddp
    from r1hpc.stages.common import StageContext, log_metrics, stage_seed
    from r1hpc.store import list_versions, publish_model, read_step_shards

    started = time.time()
    ctx = StageContext(run_dir)
    cfg, g = ctx.cfg, ctx.cfg.grpo
    st = getattr(cfg, recipe.stage(stage).section)  # distill_rl: r1_zero's budget (r1hpc.recipe)
    versions = {v.version: v for v in list_versions(ctx.run, stage)}
    if step not in versions:
        raise FileNotFoundError(f"{ctx.run_dir}/models/{stage}: no v{step:04d} to update at step {step}")
    records = read_step_shards(ctx.run, stage, step, g.rollout_shards)
    src = versions[step].checked().path
    mcfg = megatron_config_from_hf(src)
    layout = ParallelLayout(tp=cfg.parallel.tp, pp=cfg.parallel.pp, ep=cfg.parallel.ep)
    if "RANK" not in os.environ:  # srun with one task per rank: derive torchrun's variables
        from r1hpc.distributed import init_from_env

        init_from_env()
    init_parallel(layout, seed=stage_seed(cfg.seed, stage, "megatron", step))
    try:
        state_dir = ctx.run.train_state_dir(stage)
        model = build_model(mcfg, layout)
        resume = checkpoint_dir(state_dir, step)
        if not (resume / checkpoint.META_NAME).is_file():
            import_hf(src, model)  # step 0, or the previous job's state is gone: weights only
        ref = None
        if g.kl_coef > 0:
            ref = build_model(mcfg, layout)
            import_hf(versions[_reference_version(g.ref_refresh_steps, step)].checked().path, ref)
            ref.requires_grad_(False)
            ref.eval()
        optim = OptimConfig(
            lr=st.lr,
            clip_grad=g.max_grad_norm,
            adam_beta2=0.99,
            distributed_optimizer=cfg.parallel.distributed_optimizer,
        )
        ddp = wrap_ddp(model, optim)
        optimizer = build_optimizer(ddp, optim)
        if (resume / checkpoint.META_NAME).is_file():
            checkpoint.load_checkpoint(ddp, mcfg, resume, optimizer=optimizer)

        pad_id = _pad_id(src)
        batch = rollout_batch(records, pad_id, pad_multiple=layout.tp)
        dp = ps.get_data_parallel_world_size()
        if batch.size % dp:
            raise ValueError(f"{batch.size} rollouts at step {step} do not split over data-parallel size {dp}")
        hyper = _hyper(g, _micro_batch_size(batch.size // dp, g.micro_batch_size))
        mbs = prepare_grpo_micro_batches(ddp, ref, batch, hyper)
        n_mini = min(g.mini_batches, len(mbs))
        bounds = torch.linspace(0, len(mbs), n_mini + 1).round().long().tolist()
        chunks = [mbs[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        per_update = [grpo_train_step(ddp, optimizer, chunk, hyper) for chunk in chunks]

        target = checkpoint_dir(state_dir, step + 1)
        if not (target / checkpoint.META_NAME).is_file():
            if dist.get_rank() == 0 and target.exists():
                shutil.rmtree(target)  # a previous attempt died inside the save
            dist.barrier()
            checkpoint.save_checkpoint(
                ddp, mcfg, target, step=step + 1, optimizer=optimizer, extra={"stage": stage, "layout": vars(layout)}
            )

        tmp = [str(ctx.tmp_dir()) if dist.get_rank() == 0 else ""]
        dist.broadcast_object_list(tmp, src=0)
        out = Path(tmp[0])
        export_hf(
            ddp,
            mcfg,
            out,
            bos_id=_token_id(src, "bos_token_id", 0),
            eos_id=_token_id(src, "eos_token_id", 1),
            pad_id=pad_id,
        )
        metrics: dict[str, float] = {}
        if is_reporting_rank():
            metrics = {k: sum(m[k] for m in per_update) / len(per_update) for k in per_update[0]}
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, metrics)
        metrics = next(m for m in gathered if m)
        record: dict[str, Any] = {}
        if dist.get_rank() == 0:
            for f in src.iterdir():  # tokenizer and generation files of the policy this one came from
                if (
                    f.is_file()
                    and f.name not in _NOT_COPIED
                    and not f.name.endswith(_WEIGHT_FILES)
                    and not f.name.startswith("MANIFEST")
                ):
                    shutil.copy2(f, out / f.name)
            record = {
                "step": step,
                "stage": stage,
                "backend": "megatron",
                "layout": vars(layout),
                **{k: float(v) for k, v in reward_metrics(batch.rewards, batch.group_ids).items() if v.dim() == 0},
                **{k: float(v) for k, v in response_length_metrics(batch.mask).items()},
                **metrics,
                "updates": float(len(per_update)),
                "policy_lag": step - min(int(r.get("policy_version", step)) for r in records),
                "time_train_s": time.time() - started,
            }
            publish_model(ctx.run, stage, out, version=step + 1, meta={"metrics": record})
            log_metrics(ctx, stage, record)
            shutil.rmtree(out, ignore_errors=True)
            _prune(state_dir, keep_from=step)
        dist.barrier()
        return record
    finally:
        destroy_parallel()


def _token_id(hf_dir: Path, key: str, default: int) -> int:
    import json

    value = json.loads((hf_dir / "config.json").read_text()).get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if value is not None else default


def _prune(state_dir: Path, keep_from: int) -> None:
    """Drop Megatron checkpoints older than the one this job started from (they are never read again)."""
    for d in state_dir.glob("megatron_step_*"):
        try:
            n = int(d.name.rsplit("_", 1)[1].split(".")[0])
        except ValueError:
            continue
        if n < keep_from:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: torchrun ... -m r1hpc.stages.grpo_megatron RUN_DIR STAGE STEP")
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
