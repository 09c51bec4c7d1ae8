"""The Megatron backend of a GRPO stage's train job (used when ``parallel.backend == "megatron"``).

    train_task(run_dir, stage, step)   per-step mode (grpo.jobs=step): update v(step) into
        v(step+1), publish it, log metrics; returns the step's metrics record (idempotent).
    train_loop(run_dir, stage)         long-lived mode (grpo.jobs=stage): every step of the stage in
        one job that holds the model and optimizer; returns {"stage", "steps_trained"}.

Both run r1hpc.stages.grpo_train.train_steps, the loop every backend shares (waiting for shards,
restore + replay, reference/behaviour choice, metrics, publishing and checkpointing cadence), with
`MegatronBackend`: the model, DDP wrapper and Megatron optimizer of r1hpc/megatron built once per
job on every rank.

How it runs: inside a distributed launch (torchrun, or srun with one task per rank: WORLD_SIZE or
SLURM_NTASKS > 1) every rank runs the loop directly; otherwise (the local executor, or a one-task
Slurm job on one node) it starts ``torchrun --standalone --nproc-per-node
launch.train.tasks_per_node -m r1hpc.stages.grpo_megatron RUN_DIR STAGE FIRST LAST`` here and waits.

The backend, on every rank:
- restore: the newest complete Megatron checkpoint ``train_state/<stage>/megatron_step_NNNN``
  (weights + Adam state, the state before step NNNN's update) at or before the first unpublished
  step, else v0000 imported from its HF directory with a fresh optimizer; the loop replays the
  published steps after it.
- update: the step's records shuffled by the step's seed (rows, as the torch backend), as a
  RolloutBatch sharded over data-parallel ranks; old log-probs from the held policy (on-policy) or
  from the behaviour policy v(step-1) (grpo.max_staleness=1: a frozen copy of the policy taken
  before the previous update, imported from HF after a restart); reference log-probs from a frozen
  model re-imported only when the reference version changes; then ``grpo.mini_batches`` optimizer
  steps over consecutive chunks of this rank's micro-batches (``grpo_step.grpo_train_step``).
- publish: HF export to a temp dir (each rank writes its own tensors), tokenizer files copied from
  the restored version, ``publish_model`` by rank 0.
- save_state: the Megatron dist checkpoint (with optimizer), older ones pruned (the newest two kept).

The update is deterministic (no sampling; RNGs reseeded per step), so the versions published equal
whether the stage runs as one job, as per-step jobs, or is killed and rerun.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from r1hpc import recipe

__all__ = ["train_task", "train_loop", "worker", "MegatronBackend", "rollout_batch"]

KEEP_CHECKPOINTS = 2  # the newest and the one before (survives a save found broken later)


def _in_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (
        int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and bool(os.environ.get("SLURM_STEP_ID"))
    )


# --------------------------------------------------------------------------------------------
# Entry points


def train_task(run_dir: str, stage: str, step: int) -> dict[str, Any]:
    """Per-step mode: update v(step) with the step's rollouts and publish v(step+1) (idempotent);
    returns the step's metrics record."""
    return _run(run_dir, stage, step, step)[0]


def train_loop(run_dir: str, stage: str) -> dict[str, Any]:
    """Long-lived mode: every step of the stage in one job holding the model and optimizer."""
    from r1hpc.stages.common import StageContext

    ctx = StageContext(run_dir)
    steps = getattr(ctx.cfg, recipe.stage(stage).section).steps  # distill_rl: r1_zero's budget
    return {"stage": stage, "steps_trained": len(_run(run_dir, stage, 0, steps - 1))}


def worker(run_dir: str, stage: str, first: int, last: int) -> list[dict[str, Any]]:
    """One rank of the train job (all ranks run this): steps first..last, as train_steps returns them."""
    from r1hpc.distributed import detect, die_with_parent
    from r1hpc.stages.grpo_train import train_steps

    if os.environ.get("TORCHELASTIC_RUN_ID"):  # started by _run's torchrun: end with it
        die_with_parent()
    return train_steps(run_dir, stage, range(first, last + 1), MegatronBackend, is_main=detect().is_main)


def _run(run_dir: str, stage: str, first: int, last: int) -> list[dict[str, Any]]:
    """Steps first..last here (inside a distributed launch) or in a torchrun started for them; the
    records of the steps trained (or, with none left, the stored records, as train_steps)."""
    from r1hpc.stages.common import StageContext
    from r1hpc.stages.grpo_train import train_steps
    from r1hpc.store import list_versions, version_published

    if _in_distributed_launch():
        return worker(run_dir, stage, first, last)
    ctx = StageContext(run_dir)
    steps = range(first, last + 1)
    todo = [s for s in steps if not version_published(ctx.run, stage, s + 1)]
    if not todo:  # logs a record its job did not get to log; starts no ranks
        return train_steps(run_dir, stage, steps, _no_backend)
    p = ctx.cfg.parallel
    nproc = ctx.cfg.launch.train.tasks_per_node
    if nproc % (p.tp * p.pp):
        raise ValueError(
            f"{ctx.run_dir}/config.yaml: launch.train.tasks_per_node={nproc} is not a multiple of "
            f"parallel.tp*parallel.pp={p.tp * p.pp}"
        )
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", f"--nproc-per-node={nproc}", "-m", "r1hpc.stages.grpo_megatron"]
    cmd += [str(run_dir), stage, str(first), str(last)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    what = f"megatron train job {stage} steps {first}..{last}"
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")
    versions = {v.version: v for v in list_versions(ctx.run, stage)}
    missing = [s + 1 for s in todo if s + 1 not in versions]
    if missing:
        raise RuntimeError(f"{what} exited 0 but published no v{missing[0]:04d}")
    return [versions[s + 1].meta.get("metrics", {}) for s in todo]


def _no_backend(ctx: Any, stage: str) -> Any:
    raise RuntimeError(f"{ctx.run_dir}/models/{stage}: the Megatron ranks run in torchrun, not in this process")


# --------------------------------------------------------------------------------------------
# Batch helpers


def _settings(g: Any, micro_batch_size: int) -> Any:
    from r1hpc.algos import GRPOSettings

    unsupported = []
    if g.dynamic_sampling:
        unsupported.append("grpo.dynamic_sampling=true")
    if g.loss_agg == "seq-mean-token-sum-norm":
        unsupported.append("grpo.loss_agg=seq-mean-token-sum-norm")
    if unsupported:
        raise ValueError(f"parallel.backend=megatron does not support {', '.join(unsupported)} yet")
    return GRPOSettings.of(g, micro_batch_size=micro_batch_size)


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


# --------------------------------------------------------------------------------------------
# The backend


class MegatronBackend:
    """`r1hpc.stages.grpo_train.GRPOBackend` over megatron-core, one instance per rank per job:
    the policy (DDP) and its optimizer, a frozen reference and (lag 1) a frozen behaviour policy."""

    def __init__(self, ctx: Any, stage: str) -> None:
        import torch.distributed as dist

        from r1hpc.megatron.model import ParallelLayout
        from r1hpc.megatron.parallel import init_parallel
        from r1hpc.stages.common import stage_seed

        self.ctx, self.stage = ctx, stage
        self.cfg, self.g = ctx.cfg, ctx.cfg.grpo
        _settings(self.g, 1)  # refuse what the Megatron step does not implement before building anything
        self.lr = getattr(self.cfg, recipe.stage(stage).section).lr
        self.state_dir: Path = ctx.run.train_state_dir(stage)
        self.layout = ParallelLayout(tp=self.cfg.parallel.tp, pp=self.cfg.parallel.pp, ep=self.cfg.parallel.ep)
        # A process group made by the caller (several jobs' loops in one process: the tests) outlives
        # this backend; one made here is destroyed by close().
        self._own_process_group = not dist.is_initialized()
        if "RANK" not in os.environ and self._own_process_group:  # srun, one task per rank
            from r1hpc.distributed import init_from_env

            init_from_env()
        init_parallel(self.layout, seed=stage_seed(self.cfg.seed, stage, "megatron", 0))
        self.rank = dist.get_rank()
        self.is_main = self.rank == 0
        self.mcfg: Any = None
        self.src: Path | None = None  # the HF version restored from: tokenizer files and token ids
        self.ddp: Any = None
        self.optimizer: Any = None
        self._frozen: dict[str, Any] = {}  # "reference" / "behaviour" -> GPTModel
        self._frozen_version: dict[str, int] = {}

    # -- GRPOBackend ------------------------------------------------------------------------

    def restore(self, step: int, versions: dict[int, Any]) -> int:
        import torch.distributed as dist

        from r1hpc.megatron import checkpoint
        from r1hpc.megatron.hf_convert import import_hf, megatron_config_from_hf
        from r1hpc.megatron.model import build_model
        from r1hpc.megatron.parallel import OptimConfig, build_optimizer, wrap_ddp

        saved = [s for s in checkpoint.complete_steps(self.state_dir) if s <= step and s in versions]
        choice = [max(saved) if saved else -1]
        dist.broadcast_object_list(choice, src=0)  # every rank restores what rank 0 saw
        start = max(choice[0], 0)
        self.src = versions[start].checked().path
        self.mcfg = megatron_config_from_hf(self.src)
        model = build_model(self.mcfg, self.layout)
        if choice[0] < 0:
            import_hf(self.src, model)  # v0000: the stage's initial weights, fresh optimizer
        optim = OptimConfig(
            lr=self.lr,
            clip_grad=self.g.max_grad_norm,
            adam_beta2=0.99,
            distributed_optimizer=self.cfg.parallel.distributed_optimizer,
        )
        self.ddp = wrap_ddp(model, optim)
        self.optimizer = build_optimizer(self.ddp, optim)
        if choice[0] >= 0:
            checkpoint.load_checkpoint(
                self.ddp, self.mcfg, checkpoint.step_dir(self.state_dir, start), optimizer=self.optimizer
            )
        self._frozen_version.clear()
        return start

    def update(
        self,
        step: int,
        records: list[dict[str, Any]],
        reference: Any,
        behaviour: Any,
    ) -> dict[str, float]:
        import torch.distributed as dist
        from megatron.core import parallel_state as ps
        from megatron.core import tensor_parallel

        from r1hpc.megatron.grpo_step import grpo_train_step, is_reporting_rank, prepare_grpo_micro_batches
        from r1hpc.megatron.rollout_batch import even_micro_batch_size
        from r1hpc.stages.common import stage_seed

        seed = stage_seed(self.cfg.seed, self.stage, "megatron", step)
        torch.manual_seed(seed)
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
        # The mini-batches are random row subsets, as the torch backend's: shuffle the rows (every
        # rank the same way), then each DP rank takes its contiguous slice, cut into micro-batches.
        generator = torch.Generator().manual_seed(stage_seed(self.cfg.seed, self.stage, "train", step))
        order = torch.randperm(len(records), generator=generator).tolist()
        batch = rollout_batch([records[i] for i in order], self._pad_id(), pad_multiple=self.layout.tp)
        dp = ps.get_data_parallel_world_size()
        if batch.size % dp:
            raise ValueError(f"{batch.size} rollouts at step {step} do not split over data-parallel size {dp}")
        settings = _settings(self.g, even_micro_batch_size(batch.size // dp, self.g.micro_batch_size))
        ref = self._frozen_model("reference", reference) if reference is not None else None
        old = self._frozen_model("behaviour", behaviour) if behaviour is not None else self.ddp
        mbs = prepare_grpo_micro_batches(old, ref, batch, settings)
        if self.g.max_staleness > 0:  # v(step) samples step+1: keep a copy instead of importing it then
            self._hold_policy_copy(step)
        n_mini = min(self.g.mini_batches, len(mbs))
        bounds = torch.linspace(0, len(mbs), n_mini + 1).round().long().tolist()
        chunks = [mbs[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        per_update = [grpo_train_step(self.ddp, self.optimizer, chunk, settings) for chunk in chunks]
        metrics: dict[str, float] = {}
        if is_reporting_rank():
            metrics = {k: sum(m[k] for m in per_update) / len(per_update) for k in per_update[0]}
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, metrics)
        metrics = next(m for m in gathered if m)
        return {
            "backend": "megatron",
            "layout": vars(self.layout),
            **metrics,
            "updates": float(len(per_update)),
        }  # type: ignore[dict-item]

    def publish(self, version: int, meta: dict[str, Any]) -> None:
        from r1hpc.stages.megatron_publish import publish_megatron_model

        assert self.src is not None
        publish_megatron_model(self.ctx, self.stage, version, self.ddp, self.mcfg, self.src, meta)

    def save_state(self, step: int) -> None:
        import torch.distributed as dist

        from r1hpc.megatron import checkpoint

        target = checkpoint.step_dir(self.state_dir, step)
        done = [(target / checkpoint.META_NAME).is_file()]
        dist.broadcast_object_list(done, src=0)
        if not done[0]:  # else a previous job saved this very state (the update is deterministic)
            if self.is_main and target.exists():
                shutil.rmtree(target)  # a previous attempt died inside the save
            dist.barrier()
            checkpoint.save_checkpoint(
                self.ddp,
                self.mcfg,
                target,
                step=step,
                optimizer=self.optimizer,
                extra={"stage": self.stage, "layout": vars(self.layout)},
            )
        if self.is_main:
            checkpoint.prune_steps(self.state_dir, keep=KEEP_CHECKPOINTS)
        dist.barrier()

    def agree_stop(self, requested: bool) -> bool:
        """Whether any rank got the stop signal (Slurm signals each task on its own): then every
        rank saves at this step boundary (train_steps asks after each step)."""
        import torch.distributed as dist

        flag = torch.tensor([1 if requested else 0], dtype=torch.int64)
        if torch.cuda.is_available() and dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def close(self) -> None:
        from megatron.core import parallel_state

        from r1hpc.megatron.parallel import destroy_parallel

        self.ddp = self.optimizer = None
        self._frozen.clear()
        self._frozen_version.clear()
        if self._own_process_group:
            destroy_parallel()
        else:
            parallel_state.destroy_model_parallel()

    # -- helpers ----------------------------------------------------------------------------

    def _pad_id(self) -> int:
        from r1hpc.stages.megatron_publish import hf_pad_id

        assert self.src is not None
        return hf_pad_id(self.src)

    def _frozen_model(self, role: str, version: Any) -> Any:
        """The frozen model of `role` holding `version` (imported from its HF directory unless held)."""
        from r1hpc.megatron.hf_convert import import_hf

        model = self._frozen_slot(role)
        if self._frozen_version.get(role) != version.version:
            import_hf(version.checked().path, model)
            self._frozen_version[role] = version.version
        return model

    def _frozen_slot(self, role: str) -> Any:
        from r1hpc.megatron.model import build_model

        if role not in self._frozen:
            model = build_model(self.mcfg, self.layout)
            model.requires_grad_(False)
            model.eval()
            self._frozen[role] = model
        return self._frozen[role]

    def _hold_policy_copy(self, version: int) -> None:
        """Copy the policy's weights (and buffers: the routers' expert bias) into the behaviour slot."""
        from r1hpc.megatron.parallel import unwrap

        model = self._frozen_slot("behaviour")
        policy = unwrap(self.ddp)
        src = list(policy.named_parameters()) + list(policy.named_buffers())
        dst = list(model.named_parameters()) + list(model.named_buffers())
        if [n for n, _ in src] != [n for n, _ in dst]:
            raise RuntimeError("behaviour copy: the frozen model's tensors differ from the policy's")
        with torch.no_grad():
            for (_, s), (_, d) in zip(src, dst):
                d.copy_(s)
        self._frozen_version["behaviour"] = version


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit("usage: torchrun ... -m r1hpc.stages.grpo_megatron RUN_DIR STAGE FIRST LAST")
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
