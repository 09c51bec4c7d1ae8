"""The DeepSpeed backend of the SFT stages (cold_start, sft, distill; ``parallel.backend ==
"deepspeed"``): ZeRO data parallelism over the ranks of one node, for models too large to train
as one process.

How it runs. The stage job (one process, as under every backend) builds the stage's records, then
``train_in_ranks`` writes them with the stage's SFT settings to ``train_state/<stage>/deepspeed_job/``
and starts ``torchrun --standalone --nproc-per-node launch.train.tasks_per_node -m
r1hpc.stages.sft_deepspeed RUN_DIR STAGE`` on its node and waits. Every rank (``worker``) loads the
model the stage starts from, tokenizes the records exactly as the torch backend does
(sft_inputs.sft_inputs) and trains with r1hpc.train.deepspeed_sft.train_deepspeed_sft (ZeRO stage
``parallel.zero_stage``; the same data order, loss and schedule as train_sft). The gathered weights
are exported to ``train_state/<stage>/deepspeed_export``; rank 0 publishes them as models/<stage>/v0000
with the summary every backend writes.

Only the training runs in the ranks: building the records (cold_start reads R1-Zero's samples and
probes the result with a generation engine) stays in the job's one process. One node: a job of
several nodes would need one launcher per node (r1hpc.distributed.torchrun_command); the run's
checks refuse ``launch.train.nodes > 1`` with this backend (r1hpc.inputs).

A rerun after a kill resumes from the newest complete ZeRO checkpoint in
``train_state/<stage>/deepspeed`` (every ``save_every`` steps; written by the same number of ranks);
a published v0000 is returned as is.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from r1hpc.config import SFTStageConfig
from r1hpc.fsio import atomic_write_json, read_json
from r1hpc.stages.common import StageContext, log_metrics, publish_policy, stage_seed
from r1hpc.store import list_versions

__all__ = ["train_in_ranks", "worker"]

_JOB = "deepspeed_job"  # the records and settings the ranks train on
_STATE = "deepspeed"  # ZeRO checkpoints
_EXPORT = "deepspeed_export"  # the gathered HF weights rank 0 publishes


def _job_dir(ctx: StageContext, stage: str) -> Path:
    return ctx.run.train_state_dir(stage) / _JOB


def train_in_ranks(
    ctx: StageContext,
    stage: str,
    records: list[dict[str, Any]],
    settings: SFTStageConfig,
    meta: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train `records` with DeepSpeed in launch.train.tasks_per_node ranks started here, which
    publish models/<stage>/v0000; returns its summary (as sft_stage.sft_and_publish)."""
    from r1hpc.stages.sft_inputs import write_sft_records

    job = _job_dir(ctx, stage)
    job.mkdir(parents=True, exist_ok=True)
    # Rewritten by a rerun with the same content (the records are deterministic).
    write_sft_records(job / "records.jsonl", records)
    atomic_write_json(
        job / "job.json", {"settings": dataclasses.asdict(settings), "meta": meta or {}, "started": time.time()}
    )
    nproc = ctx.cfg.launch.train.tasks_per_node
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", f"--nproc-per-node={nproc}", "-m", "r1hpc.stages.sft_deepspeed"]
    cmd += [str(ctx.run_dir), stage]
    # DS_BUILD_OPS=0: nothing to compile; the CPU path uses torch's gloo collectives.
    env = {**os.environ, "DS_BUILD_OPS": "0"}
    # the job's threads (its cpus_per_task, exported by the launcher) shared by its ranks
    env["OMP_NUM_THREADS"] = str(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1) // nproc))
    proc = subprocess.run(cmd, env=env)
    what = f"{ctx.run_dir}: DeepSpeed SFT of {stage} in {nproc} ranks"
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")
    published = [v for v in list_versions(ctx.run, stage) if v.version == 0]
    if not published:
        raise RuntimeError(f"{what} exited 0 but published no models/{stage}/v0000")
    return {"version": published[0].name, **published[0].meta}


def worker(run_dir: str, stage: str) -> dict[str, float]:
    """One rank of the DeepSpeed SFT (all ranks run this); rank 0 publishes. Returns the last
    step's metrics."""
    import torch.distributed as dist

    from r1hpc.distributed import die_with_parent, init_from_env
    from r1hpc.model.factory import load_model
    from r1hpc.stages.base import sft_settings
    from r1hpc.stages.sft_inputs import read_sft_records, sft_inputs, sft_summary
    from r1hpc.train.deepspeed_sft import train_deepspeed_sft

    if os.environ.get("TORCHELASTIC_RUN_ID"):  # started by train_in_ranks' torchrun: end with it
        die_with_parent()
    ctx = StageContext(run_dir)
    job = read_json(_job_dir(ctx, stage) / "job.json")
    settings = SFTStageConfig(**job["settings"])
    records = read_sft_records(_job_dir(ctx, stage) / "records.jsonl")
    init_from_env()
    is_main = dist.get_rank() == 0
    inputs = sft_inputs(ctx, stage, records, settings)
    export = ctx.run.train_state_dir(stage) / _EXPORT
    metrics = train_deepspeed_sft(
        inputs.model,
        inputs.prompts,
        inputs.targets,
        sft_settings(settings),
        inputs.tokenizer.pad_token_id,
        seed=stage_seed(ctx.cfg.seed, stage, "train"),
        state_dir=ctx.run.train_state_dir(stage) / _STATE,
        export_dir=export,
        log=lambda m: log_metrics(ctx, stage, {"stage": stage, **m}),
        progress=False,
        zero_stage=ctx.cfg.parallel.zero_stage,
    )
    if is_main:
        summary = sft_summary(stage, inputs, metrics, float(job["started"]), job["meta"])
        summary["deepspeed"] = {"ranks": dist.get_world_size(), "zero_stage": ctx.cfg.parallel.zero_stage}
        publish_policy(ctx, stage, 0, load_model(export), inputs.tokenizer, meta=summary)
    dist.barrier()  # the job's process finds v0000 once every rank has exited
    return metrics


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: torchrun ... -m r1hpc.stages.sft_deepspeed RUN_DIR STAGE")
    worker(sys.argv[1], sys.argv[2])
