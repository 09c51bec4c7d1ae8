"""An SFT stage's training in ranks its job starts (backends deepspeed and megatron): the job's one
process builds the records, writes them with the stage's SFT settings to
``train_state/<stage>/<backend>_job/``, starts ``torchrun --standalone --nproc-per-node
launch.train.tasks_per_node -m <worker module> RUN_DIR STAGE`` on its node and waits; the ranks read
that directory back (`read_rank_job`), train, and rank 0 publishes models/<stage>/v0000.

Only the training runs in the ranks: building the records (cold_start reads R1-Zero's samples and
probes the result with a generation engine) stays in the job's one process. One node: a job of
several nodes would need one launcher per node (r1hpc.distributed.torchrun_command).

Preemption: the stop signal (r1hpc.preemption) reaches the job's process, not its ranks. While
the ranks train, that process turns it into a request file, ``<job dir>/stop``; the ranks check it
after every step (`stop_request`, rank 0 reads it and tells the others), save at that step
boundary and exit without publishing (preemption.SavedAndStopped), and the process hands over to
the requeue. The requeued job removes the request and its ranks resume from that checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1hpc import preemption
from r1hpc.config import SFTStageConfig
from r1hpc.fsio import atomic_write_json, atomic_write_text, read_json
from r1hpc.stages.common import StageContext
from r1hpc.stages.sft_inputs import read_sft_records, write_sft_records
from r1hpc.store import list_versions

__all__ = ["RankJob", "WORKERS", "train_in_ranks", "read_rank_job", "stop_request"]

# backend -> (the module its ranks run, environment they need)
WORKERS: dict[str, tuple[str, dict[str, str]]] = {
    # DS_BUILD_OPS=0: nothing to compile; the CPU path uses torch's gloo collectives.
    "deepspeed": ("r1hpc.stages.sft_deepspeed", {"DS_BUILD_OPS": "0"}),
    "megatron": ("r1hpc.stages.sft_megatron", {}),
}


@dataclass
class RankJob:
    """What the ranks of one SFT stage job train: the records and settings its process wrote."""

    records: list[dict[str, Any]]
    settings: SFTStageConfig
    meta: dict[str, Any]  # extra keys of the published version's summary
    started: float  # when the stage job started training (the summary's seconds)


def _job_dir(ctx: StageContext, stage: str, backend: str) -> Path:
    return ctx.run.train_state_dir(stage) / f"{backend}_job"


def train_in_ranks(
    ctx: StageContext,
    stage: str,
    records: list[dict[str, Any]],
    settings: SFTStageConfig,
    meta: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train `records` in launch.train.tasks_per_node ranks of the backend's worker (WORKERS)
    started here, which publish models/<stage>/v0000; returns its summary (as
    sft_stage.sft_and_publish)."""
    backend = ctx.cfg.parallel.backend
    worker_module, env = WORKERS[backend]
    job = _job_dir(ctx, stage, backend)
    job.mkdir(parents=True, exist_ok=True)
    # Rewritten by a rerun with the same content (the records are deterministic).
    write_sft_records(job / "records.jsonl", records)
    atomic_write_json(
        job / "job.json", {"settings": dataclasses.asdict(settings), "meta": meta or {}, "started": time.time()}
    )
    nproc = ctx.cfg.launch.train.tasks_per_node
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", f"--nproc-per-node={nproc}", "-m", worker_module, str(ctx.run_dir), stage]
    run_env = {**os.environ, **env}
    # the job's threads (its cpus_per_task, exported by the launcher) shared by its ranks
    run_env["OMP_NUM_THREADS"] = str(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1) // nproc))
    stop_file = job / STOP_FILE
    stop_file.unlink(missing_ok=True)  # an earlier attempt's request: this attempt trains on
    # Slurm signals every process of the job step, ranks too (proctrack/cgroup), and USR2's default
    # action ends a process: the ranks and torchrun ignore it (inherited through exec); the job's
    # process answers for them with the request file.
    ranks = subprocess.Popen(cmd, env=run_env, preexec_fn=_ignore_stop_signal)
    returncode = _wait_for_ranks(ranks, stop_file)
    published = [v for v in list_versions(ctx.run, stage) if v.version == 0]
    if published:  # finished before it could stop, or not asked to
        return {"version": published[0].name, **published[0].meta}
    if preemption.stop_requested():
        preemption.hand_over()  # the requeued job's ranks resume from the checkpoint they saved
    what = f"{ctx.run_dir}: {backend} SFT of {stage} in {nproc} ranks"
    if returncode != 0:
        raise RuntimeError(f"{what} failed (exit {returncode}): {' '.join(cmd)}")
    raise RuntimeError(f"{what} exited 0 but published no models/{stage}/v0000")


STOP_FILE = "stop"  # in the job dir: the job is being stopped, save and exit (module doc)


def _ignore_stop_signal() -> None:
    signal.signal(preemption.STOP_SIGNAL, signal.SIG_IGN)


def _wait_for_ranks(proc: subprocess.Popen, stop_file: Path, poll_s: float = 0.5) -> int:
    """Wait for the ranks' launcher; a stop signal meanwhile becomes `stop_file`. Its exit code."""
    with preemption.saving_loop():
        while True:
            try:
                return proc.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                if preemption.stop_requested() and not stop_file.exists():
                    atomic_write_text(stop_file, f"stop requested at {time.time():.3f}\n")


def stop_request(ctx: StageContext, stage: str, backend: str) -> Callable[[], bool]:
    """For the ranks' training loop: a collective check, after each step, of whether their job
    asked them to stop (rank 0 looks for the request file; every rank gets its answer)."""
    import torch.distributed as dist

    stop_file = _job_dir(ctx, stage, backend) / STOP_FILE

    def requested() -> bool:
        flag = [dist.get_rank() == 0 and stop_file.exists()]
        dist.broadcast_object_list(flag, src=0)
        return bool(flag[0])

    return requested


def read_rank_job(ctx: StageContext, stage: str, backend: str) -> RankJob:
    """The records and settings `train_in_ranks` wrote for the ranks of `backend`."""
    job = _job_dir(ctx, stage, backend)
    spec = read_json(job / "job.json")
    return RankJob(
        records=read_sft_records(job / "records.jsonl"),
        settings=SFTStageConfig(**spec["settings"]),
        meta=spec["meta"],
        started=float(spec["started"]),
    )
