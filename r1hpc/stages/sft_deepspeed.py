"""The DeepSpeed backend of the SFT stages (cold_start, sft, distill; ``parallel.backend ==
"deepspeed"``): ZeRO data parallelism over the ranks of one node, for models too large to train
as one process.

How it runs (r1hpc.stages.sft_ranks): the stage job (one process, as under every backend) builds
the stage's records, writes them to ``train_state/<stage>/deepspeed_job/`` and starts
``launch.train.tasks_per_node`` ranks of ``python -m r1hpc.stages.sft_deepspeed RUN_DIR STAGE`` on
its node with torchrun. Every rank (``worker``) loads the model the stage starts from, tokenizes the
records exactly as the torch backend does (sft_inputs.sft_inputs) and trains with
r1hpc.train.deepspeed_sft.train_deepspeed_sft (ZeRO stage ``parallel.zero_stage``; the same data
order, loss and schedule as train_sft). The gathered weights are exported to
``train_state/<stage>/deepspeed_export``; rank 0 publishes them as models/<stage>/v0000 with the
summary every backend writes. One node: the run's checks refuse ``launch.train.nodes > 1`` with
this backend (r1hpc.inputs).

A rerun after a kill resumes from the newest complete ZeRO checkpoint in
``train_state/<stage>/deepspeed`` (every ``save_every`` steps; written by the same number of ranks);
a published v0000 is returned as is.
"""

from __future__ import annotations

import os
import sys

from r1hpc.preemption import SavedAndStopped
from r1hpc.stages.common import StageContext, log_metrics, publish_policy, stage_seed
from r1hpc.stages.sft_ranks import read_rank_job, stop_request

__all__ = ["worker"]

_STATE = "deepspeed"  # ZeRO checkpoints
_EXPORT = "deepspeed_export"  # the gathered HF weights rank 0 publishes


def worker(run_dir: str, stage: str) -> dict[str, float]:
    """One rank of the DeepSpeed SFT (all ranks run this); rank 0 publishes. Returns the last
    step's metrics ({} when the job asked the ranks to stop: they saved and publish nothing)."""
    import torch.distributed as dist

    from r1hpc.distributed import die_with_parent, init_from_env
    from r1hpc.model.factory import load_model
    from r1hpc.stages.base import sft_settings
    from r1hpc.stages.sft_inputs import sft_inputs, sft_summary
    from r1hpc.train.deepspeed_sft import train_deepspeed_sft

    if os.environ.get("TORCHELASTIC_RUN_ID"):  # started by train_in_ranks' torchrun: end with it
        die_with_parent()
    ctx = StageContext(run_dir)
    job = read_rank_job(ctx, stage, "deepspeed")
    settings = job.settings
    init_from_env()
    is_main = dist.get_rank() == 0
    inputs = sft_inputs(ctx, stage, job.records, settings)
    export = ctx.run.train_state_dir(stage) / _EXPORT
    try:
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
            stop=stop_request(ctx, stage, "deepspeed"),
        )
    except SavedAndStopped as stopped:  # the job is being requeued: it resumes from this save
        print(f"r1hpc: {stage} rank {dist.get_rank()}: {stopped}", file=sys.stderr, flush=True)
        return {}
    if is_main:
        summary = sft_summary(stage, inputs, metrics, job.started, job.meta)
        summary["deepspeed"] = {"ranks": dist.get_world_size(), "zero_stage": ctx.cfg.parallel.zero_stage}
        publish_policy(ctx, stage, 0, load_model(export), inputs.tokenizer, meta=summary)
    dist.barrier()  # the job's process finds v0000 once every rank has exited
    return metrics


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: torchrun ... -m r1hpc.stages.sft_deepspeed RUN_DIR STAGE")
    worker(sys.argv[1], sys.argv[2])
