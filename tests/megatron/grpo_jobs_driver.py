"""Several GRPO train jobs of the Megatron backend in one torchrun launch (for test_train_job.py).

    torchrun --standalone --nproc-per-node 2 tests/megatron/grpo_jobs_driver.py ROOT

ROOT holds the run directories test_train_job.py prepared (ROOT/<name>). One process group for
all of them; each job is `grpo_megatron.worker` as a real job runs it, with its own
MegatronBackend (model, optimizer and frozen models built, restored from the run directory,
closed), so only the process (and its imports) is shared: what passes between jobs passes through
the run directory, as between Slurm jobs.

- step:        per-step mode: one job per step (each restores the previous job's checkpoint);
- killed:      the whole stage, where v0001 was published by a killed job that left no checkpoint;
- stage_lag1:  max_staleness=1, the whole stage in one job (checkpoint_every=1);
- killed_lag1: max_staleness=1, stage_lag1's v0001 and step-1 checkpoint copied in, then step 1 alone.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

STAGE = "r1_zero"


def copy_version(src_run: Path, dst_run: Path, version: int) -> None:
    """Publish `src_run`'s v<version> in `dst_run` as its own job had published it."""
    from r1hpc.store import RunDir, list_versions, publish_model

    v = {v.version: v for v in list_versions(RunDir(src_run), STAGE)}[version]
    staging = dst_run / f"copy_v{version:04d}"
    shutil.copytree(v.path, staging, ignore=shutil.ignore_patterns("MANIFEST*"))
    publish_model(RunDir(dst_run), STAGE, staging, version=version, meta=v.meta)
    shutil.rmtree(staging)


def copy_checkpoint(src_run: Path, dst_run: Path, step: int) -> None:
    from r1hpc.megatron.checkpoint import step_dir
    from r1hpc.store import RunDir

    src, dst = (step_dir(RunDir(r).train_state_dir(STAGE), step) for r in (src_run, dst_run))
    shutil.copytree(src, dst)


def main(root: Path) -> None:
    import torch.distributed as dist

    from r1hpc.config import read_run_config
    from r1hpc.stages.grpo_megatron import worker

    dist.init_process_group("gloo")
    runs = root
    steps = read_run_config(runs / "step").r1_zero.steps
    for step in range(steps):
        worker(str(runs / "step"), STAGE, step, step)
    worker(str(runs / "killed"), STAGE, 0, steps - 1)
    worker(str(runs / "stage_lag1"), STAGE, 0, steps - 1)
    if dist.get_rank() == 0:
        copy_version(runs / "stage_lag1", runs / "killed_lag1", 1)
        copy_checkpoint(runs / "stage_lag1", runs / "killed_lag1", 1)
    dist.barrier()
    worker(str(runs / "killed_lag1"), STAGE, 1, steps - 1)
    dist.destroy_process_group()


if __name__ == "__main__":  # the checkpoint saver's spawned helper re-imports this file
    main(Path(sys.argv[1]))
