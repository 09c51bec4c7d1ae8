"""The Megatron backend of the teacher's SFT stages (cold_start, sft; ``parallel.backend ==
"megatron"``): the MoE model trained with tensor, pipeline, expert and data parallelism
(``parallel.tp/pp/ep``) over the ranks of one node, for models no single process holds.

How it runs (r1hpc.stages.sft_ranks): the stage job builds the stage's records, writes them to
``train_state/<stage>/megatron_job/`` and starts ``launch.train.tasks_per_node`` ranks of
``python -m r1hpc.stages.sft_megatron RUN_DIR STAGE`` on its node with torchrun. Every rank
(``worker``) tokenizes the records as the torch backend does (sft_inputs.sft_inputs, without
loading the transformers model), builds its shard of the Megatron model and imports the weights it
owns from the HF directory of the version the stage starts from (r1hpc.megatron.hf_convert), and
trains with r1hpc.megatron.sft.train_megatron_sft (train_sft's data order, loss and schedule). The
ranks export the result together and rank 0 publishes it as models/<stage>/v0000 with the summary
every backend writes (r1hpc.stages.megatron_publish).

The student's stage (distill) is a dense model of another architecture, which the Megatron
converter does not take (it converts DeepseekV3 checkpoints): it trains as one torch process under
this backend too (r1hpc.stages.sft_stage). A rerun after a kill resumes from the newest Megatron
checkpoint in ``train_state/<stage>/megatron`` (every ``save_every`` steps, at any layout); a
published v0000 is returned as is.
"""

from __future__ import annotations

import os
import sys

from r1hpc.preemption import SavedAndStopped
from r1hpc.stages.common import StageContext, log_metrics, stage_seed
from r1hpc.stages.sft_ranks import read_rank_job, stop_request

__all__ = ["worker"]

_STATE = "megatron"  # Megatron checkpoints (weights and Adam state) every save_every steps


def worker(run_dir: str, stage: str) -> dict[str, float]:
    """One rank of the Megatron SFT (all ranks run this); rank 0 publishes. Returns the last step's
    metrics ({} when the job asked the ranks to stop: they saved and publish nothing)."""
    import torch.distributed as dist

    from r1hpc.distributed import die_with_parent
    from r1hpc.megatron.checkpoint import complete_steps
    from r1hpc.megatron.hf_convert import import_hf, megatron_config_from_hf
    from r1hpc.megatron.model import ParallelLayout, build_model
    from r1hpc.megatron.parallel import OptimConfig, build_optimizer, destroy_parallel, init_parallel, wrap_ddp
    from r1hpc.megatron.sft import train_megatron_sft
    from r1hpc.stages.base import sft_settings
    from r1hpc.stages.megatron_publish import publish_megatron_model
    from r1hpc.stages.sft_inputs import sft_inputs, sft_summary

    if os.environ.get("TORCHELASTIC_RUN_ID"):  # started by train_in_ranks' torchrun: end with it
        die_with_parent()
    ctx = StageContext(run_dir)
    job = read_rank_job(ctx, stage, "megatron")
    s = sft_settings(job.settings)
    p = ctx.cfg.parallel
    layout = ParallelLayout(tp=p.tp, pp=p.pp, ep=p.ep)
    init_parallel(layout, seed=stage_seed(ctx.cfg.seed, stage, "megatron", 0))
    try:
        inputs = sft_inputs(ctx, stage, job.records, job.settings, with_model=False)
        mcfg = megatron_config_from_hf(inputs.source)
        model = build_model(mcfg, layout)
        state_dir = ctx.run.train_state_dir(stage) / _STATE
        resuming = [bool(complete_steps(state_dir))]
        dist.broadcast_object_list(resuming, src=0)
        if not resuming[0]:  # else the checkpoint's weights replace them
            import_hf(inputs.source, model)
        optim = OptimConfig(
            lr=s.lr,
            weight_decay=s.weight_decay,
            clip_grad=s.max_grad_norm,
            adam_beta2=0.999,  # torch AdamW's default, as train_sft
            distributed_optimizer=p.distributed_optimizer,
        )
        ddp = wrap_ddp(model, optim)
        optimizer = build_optimizer(ddp, optim)
        metrics = train_megatron_sft(
            ddp,
            optimizer,
            mcfg,
            inputs.prompts,
            inputs.targets,
            s,
            inputs.tokenizer.pad_token_id,
            seed=stage_seed(ctx.cfg.seed, stage, "train"),
            state_dir=state_dir,
            pad_multiple=layout.tp,
            log=lambda m: log_metrics(ctx, stage, {"stage": stage, **m}),
            stop=stop_request(ctx, stage, "megatron"),
        )
        summary = sft_summary(stage, inputs, metrics, job.started, job.meta)
        summary["megatron"] = {"ranks": dist.get_world_size(), "layout": vars(layout)}
        publish_megatron_model(ctx, stage, 0, ddp, mcfg, inputs.source, summary)
    except SavedAndStopped as stopped:  # the job is being requeued: it resumes from this save
        print(f"r1hpc: {stage} rank {dist.get_rank()}: {stopped}", file=sys.stderr, flush=True)
        return {}
    finally:
        destroy_parallel()
    return metrics


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: torchrun ... -m r1hpc.stages.sft_megatron RUN_DIR STAGE")
    worker(sys.argv[1], sys.argv[2])
