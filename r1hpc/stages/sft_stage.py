"""The SFT stages of R1: supervised fine-tuning on the run's SFT sets, published as a model.

    run_sft(run_dir)       models/base on data/sft_reasoning + data/sft_general (cfg.sft)
                           -> models/sft/v0000 (R1: 600k reasoning + 200k non-reasoning samples)
    run_distill(run_dir)   models/student_base on the same teacher samples (cfg.distill)
                           -> models/distill/v0000 (R1 distils with those 800k samples)

`sft_and_publish` is what these and the cold-start stage share. An SFT set is a JSONL file of
records {"prompt": question, "completion": text after the template's "<think>", ...}
(r1hpc.stages.sft_inputs); the model
sees the run's prompt format of the record (PromptFormat.render: its prompt, or its chat messages)
and is trained on completion + eos only. Idempotent (a published
v0000 is returned as is) and resumable (train_sft checkpoints in train_state/<stage>/). With
parallel.backend deepspeed, and megatron for the teacher, the training runs in ranks the job starts
(r1hpc.stages.sft_deepspeed, r1hpc.stages.sft_megatron).
"""

from __future__ import annotations

import time
from typing import Any

from r1hpc import recipe
from r1hpc.config import SFTStageConfig
from r1hpc.stages.base import sft_settings
from r1hpc.stages.common import StageContext, data_path, log_metrics, publish_policy, stage_seed
from r1hpc.stages.sft_inputs import read_sft_records, sft_inputs, sft_summary
from r1hpc.store import list_versions
from r1hpc.train.sft import train_sft

__all__ = ["SFT_SETS", "sft_and_publish", "run_sft", "run_distill"]

SFT_SETS = ("sft_reasoning", "sft_general")  # written by rejection_merge


def sft_and_publish(
    ctx: StageContext,
    stage: str,
    records: list[dict[str, Any]],
    settings: SFTStageConfig,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SFT the newest model of the stage's init_from (r1hpc.recipe) on `records` and publish
    models/<stage>/v0000: in this process (backend torch; the student under megatron), or in ranks
    this job starts: DeepSpeed ZeRO (backend deepspeed: r1hpc.stages.sft_deepspeed), megatron-core
    (the teacher under backend megatron: r1hpc.stages.sft_megatron).

    Logs one metrics line per optimizer step to metrics/<stage>.jsonl. Returns the summary that
    is also the published version's meta.
    """
    existing = [v for v in list_versions(ctx.run, stage) if v.version == 0]
    if existing:
        return {"stage": stage, "skipped": "already published", **existing[0].meta}
    if not records:
        raise ValueError(f"{stage}: no SFT records to train on")
    backend = ctx.cfg.parallel.backend
    # The Megatron converter takes DeepseekV3: the dense student trains here under that backend.
    if backend == "deepspeed" or (backend == "megatron" and not recipe.stage(stage).student):
        from r1hpc.stages.sft_ranks import train_in_ranks

        return train_in_ranks(ctx, stage, records, settings, meta)
    started = time.time()
    inputs = sft_inputs(ctx, stage, records, settings)
    metrics = train_sft(
        inputs.model,
        inputs.prompts,
        inputs.targets,
        sft_settings(settings),
        inputs.tokenizer.pad_token_id,
        seed=stage_seed(ctx.cfg.seed, stage, "train"),
        state_dir=ctx.run.train_state_dir(stage),
        log=lambda m: log_metrics(ctx, stage, {"stage": stage, **m}),
        progress=False,
    )
    summary = sft_summary(stage, inputs, metrics, started, meta)
    version = publish_policy(ctx, stage, 0, inputs.model, inputs.tokenizer, meta=summary)
    return {"version": version.name, **summary}


def _sft_sets(ctx: StageContext) -> tuple[list[dict[str, Any]], dict[str, int]]:
    records, counts = [], {}
    for name in SFT_SETS:
        part = read_sft_records(data_path(ctx, name))
        records.extend(part)
        counts[f"{name}_examples"] = len(part)
    return records, counts


def _sft_on_rejection_sets(run_dir: str, stage: str) -> dict[str, Any]:
    """SFT of the stage's init_from model (r1hpc.recipe) on the rejection-sampled sets, with the
    settings of its config section; publishes models/<stage>/v0000."""
    ctx = StageContext(run_dir)
    settings = getattr(ctx.cfg, recipe.stage(stage).section)
    if [v for v in list_versions(ctx.run, stage) if v.version == 0]:
        return sft_and_publish(ctx, stage, [], settings)
    records, counts = _sft_sets(ctx)
    return sft_and_publish(ctx, stage, records, settings, meta=counts)


def run_sft(run_dir: str) -> dict[str, Any]:
    """SFT of models/base on the rejection-sampled sets; publishes models/sft/v0000."""
    return _sft_on_rejection_sets(run_dir, "sft")


def run_distill(run_dir: str) -> dict[str, Any]:
    """SFT of the smaller student (models/student_base) on the teacher's samples; publishes
    models/distill/v0000."""
    return _sft_on_rejection_sets(run_dir, "distill")
