"""The train side of a GRPO stage: one loop for every backend, and the plain-torch backend.

    train_steps(run_dir, stage, steps, backend)   the loop both modes run: per-step mode
        (grpo.jobs=step) calls it for one step per job, long-lived mode (grpo.jobs=stage) for the
        whole stage in one job that keeps the model and optimizer in memory.

The loop owns everything but the update: which steps are left (a step is done once v(step+1) is
published), restoring the trainer state, waiting for a step's rollout shards, the reference and
behaviour policies, metrics and their timing, publishing and checkpointing. A backend (torch
here, Megatron in r1hpc.stages.grpo_megatron) holds the model and optimizer and implements
`GRPOBackend`: restore, update, publish, save_state.

Restart: the trainer state (weights + optimizer moments) is checkpointed every
grpo.checkpoint_every steps, at the end of the job and when Slurm signals the time limit. A job
that starts after a kill restores the newest checkpoint at or before the first unpublished step
and replays the published steps after it from their rollouts on disk (the update is
deterministic: seeded by run seed, stage and step), so the versions it then publishes equal an
undisturbed run's.

Timing (per step, in the metrics record): time_rollout_s / time_score_s (slowest shard),
time_train_s (this update), time_wait_s (the trainer waiting for shards), time_reload_s (slowest
shard loading the policy), time_publish_s, time_step_s (from the previous version's publish to
this one's), time_handoff_s (the step minus the rollout, scoring and training on its critical
path: job starts, handoffs, polling) and the idle share of each pool.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

from r1hpc import preemption, recipe
from r1hpc.algos import GRPOSettings, reward_metrics
from r1hpc.stages.common import (
    StageContext,
    init_stage_from,
    load_policy,
    log_metrics,
    log_metrics_once,
    publish_policy,
    stage_seed,
)
from r1hpc.stages.handoff import failures_recorded, heartbeat, wait_for
from r1hpc.store import (
    ModelVersion,
    list_versions,
    model_version,
    read_step_shards,
    shard_is_complete,
    version_published,
)
from r1hpc.train.checkpoint import checkpoint_steps, load_checkpoint, save_checkpoint

__all__ = ["GRPOBackend", "TorchBackend", "train_steps", "reference_version", "step_timing"]


class GRPOBackend(Protocol):
    """What a training backend provides to the loop. Collective backends (Megatron) run the loop on
    every rank; `is_main` is the rank that publishes and logs."""

    is_main: bool

    def restore(self, step: int, versions: dict[int, ModelVersion]) -> int:
        """Hold the trainer state before `step`'s update, or the newest checkpointed one before it;
        return the step restored (0 without a checkpoint: v0000's weights, fresh optimizer)."""
        ...

    def update(
        self,
        step: int,
        records: list[dict[str, Any]],
        reference: ModelVersion | None,
        behaviour: ModelVersion | None,
    ) -> dict[str, float]:
        """One GRPO update of the held policy with the step's records. reference: the KL
        reference (None: no KL term); behaviour: the policy that sampled the records when it is
        not the held one (a lagged rollout), None when it is."""
        ...

    def publish(self, version: int, meta: dict[str, Any]) -> None:
        """Publish the held policy as models/<stage>/v<version> (the main rank writes)."""
        ...

    def save_state(self, step: int) -> None:
        """Checkpoint the state before `step`'s update (weights + optimizer)."""
        ...

    def close(self) -> None: ...


def reference_version(ref_refresh_steps: int, step: int) -> int:
    """R1 refreshes the reference policy every `ref_refresh_steps` steps (0 = never: v0000)."""
    return 0 if ref_refresh_steps == 0 else (step // ref_refresh_steps) * ref_refresh_steps


def _publish_start(ctx: StageContext, stage: str, is_main: bool) -> None:
    """v0000, the model the stage starts from: published by the main rank (idempotent; the rollout
    tasks wait for it), awaited by the other ranks. Per-step jobs find it published by prepare_stage."""
    if version_published(ctx.run, stage, 0):
        return
    if is_main:
        init_stage_from(ctx, stage, recipe.stage(stage).init_from)
        return
    g = ctx.cfg.grpo
    wait_for(
        lambda: version_published(ctx.run, stage, 0),
        f"{ctx.run_dir}/models/{stage}/v0000 (published by the train job's first rank)",
        ctx.run,
        stage,
        "train_rank",  # not "train": the first rank's failure marker (FAILED_train) stops this wait
        timeout_s=g.wait_timeout_s,
        max_sleep_s=g.poll_max_s,
    )


def train_steps(
    run_dir: str,
    stage: str,
    steps: range,
    make_backend: Callable[[StageContext, str], GRPOBackend],
    is_main: bool = True,
) -> list[dict[str, Any]]:
    """Run the updates of `steps` that are not published yet; return their metrics records
    (a step published earlier returns its stored record)."""
    ctx = StageContext(run_dir)
    g = ctx.cfg.grpo
    todo = [s for s in steps if not version_published(ctx.run, stage, s + 1)]
    if not todo:
        versions = {v.version: v for v in list_versions(ctx.run, stage)}
        records = [versions[s + 1].meta.get("metrics", {}) for s in steps]
        if is_main:  # a job killed between publishing and logging logs when its rerun finds the version
            log_metrics_once(ctx, stage, records)
        return [{**record, "skipped": "already published"} for record in records]
    me = "train"
    out: list[dict[str, Any]] = []
    with (
        failures_recorded(ctx.run, stage, me) if is_main else contextlib.nullcontext(),
        heartbeat(ctx.run, stage, me, g.heartbeat_timeout_s) if is_main else contextlib.nullcontext(),
        preemption.saving_loop(),
    ):
        _publish_start(ctx, stage, is_main)
        backend = make_backend(ctx, stage)
        try:
            versions = {v.version: v for v in list_versions(ctx.run, stage)}
            if todo[0] not in versions:
                raise FileNotFoundError(f"{ctx.run_dir}/models/{stage}: no v{todo[0]:04d} to update at step {todo[0]}")
            step = backend.restore(todo[0], versions)
            if is_main:  # the steps published before this job, by one killed before it logged them
                log_metrics_once(ctx, stage, (versions[s + 1].meta.get("metrics", {}) for s in steps if s < todo[0]))
            last_saved = step
            while step < steps.stop:
                replay = version_published(ctx.run, stage, step + 1)  # only before todo[0]
                waited = 0.0
                if not replay:
                    waited = wait_for(
                        lambda s=step: all(shard_is_complete(ctx.run, stage, s, k) for k in range(g.rollout_shards)),
                        f"the {g.rollout_shards} rollout shard(s) of step {step} under {ctx.run_dir}/rollouts/{stage}",
                        ctx.run,
                        stage,
                        me,
                        timeout_s=g.wait_timeout_s,
                        max_sleep_s=g.poll_max_s,
                        partners=tuple(f"rollout_{k}" for k in range(g.rollout_shards)),
                        heartbeat_timeout_s=g.heartbeat_timeout_s,
                    )
                started = time.time()
                records = read_step_shards(ctx.run, stage, step, g.rollout_shards)
                # Only the versions this step needs: reading every MANIFEST each step grows with the stage.
                for v in {step, reference_version(g.ref_refresh_steps, step), *_sampled_by(records)} - versions.keys():
                    found = model_version(ctx.run, stage, v)
                    if found is not None:
                        versions[v] = found
                behaviour = _sampler(ctx, stage, step, records, versions)
                reference = versions[reference_version(g.ref_refresh_steps, step)] if g.kl_coef > 0 else None
                metrics = backend.update(step, records, reference, None if behaviour == step else versions[behaviour])
                trained = time.time()
                if not replay:
                    record = {
                        "step": step,
                        "stage": stage,
                        **metrics,
                        **_reward_summary(records),
                        "policy_lag": step - behaviour,
                        **step_timing(records, versions[step], waited, trained - started, g.max_staleness),
                    }
                    publish_started = record["time_publish_started"]
                    backend.publish(step + 1, {"metrics": record})
                    record["time_publish_s"] = time.time() - publish_started
                    if is_main:
                        log_metrics(ctx, stage, record)
                    out.append(record)
                step += 1
                stopping = _stop_requested(backend)
                if stopping or step == steps.stop or step - last_saved >= g.checkpoint_every:
                    backend.save_state(step)
                    last_saved = step
                if stopping and step < steps.stop:
                    preemption.hand_over()  # the requeued job restores this checkpoint
        finally:
            backend.close()
    return out


def _stop_requested(backend: GRPOBackend) -> bool:
    """The stop signal, agreed over the ranks of a collective backend (its optional
    `agree_stop(flag) -> bool`): every rank must save and hand over at the same step."""
    requested = preemption.stop_requested()
    agree = getattr(backend, "agree_stop", None)
    return bool(agree(requested)) if agree is not None else requested


def _sampled_by(records: list[dict[str, Any]]) -> set[int]:
    return {int(r["policy_version"]) for r in records}


def _sampler(
    ctx: StageContext, stage: str, step: int, records: list[dict[str, Any]], versions: dict[int, ModelVersion]
) -> int:
    """The one published version that sampled the step's records (the ratio's old policy)."""
    sampled_by = _sampled_by(records)
    if len(sampled_by) != 1 or not sampled_by <= versions.keys():
        raise ValueError(
            f"{ctx.run_dir}/rollouts/{stage}/step_{step:04d}: records sampled by policy versions "
            f"{sorted(sampled_by)}; expected one published version"
        )
    return sampled_by.pop()


def step_timing(
    records: list[dict[str, Any]], policy: ModelVersion, waited: float, train_s: float, lag: int
) -> dict[str, float]:
    """Where the step's wall time went (module docstring). The step runs from the publish of the
    policy being updated (v(step)) to the publish of v(step+1), which starts now."""
    now = time.time()
    previous = policy.meta.get("metrics", {}).get("time_publish_started")
    if previous is None:  # v0000, published before the first update: its MANIFEST was written last
        previous = (policy.path / "MANIFEST.json").stat().st_mtime
    step_s = max(now - float(previous), 1e-9)
    rollout = max(r["gen_seconds"] for r in records)
    score = max(r["score_seconds"] for r in records)
    # The critical path: generation + scoring, then the update; with lag >= 1 they overlap.
    critical = rollout + score + train_s if lag == 0 else max(rollout + score, train_s)
    busy_by_shard: dict[int, float] = {}
    for r in records:  # one value per shard (every record of a shard carries the same times)
        busy_by_shard[int(r.get("shard", 0))] = r["gen_seconds"] + r["score_seconds"] + r.get("reload_seconds", 0.0)
    rollout_busy = sum(busy_by_shard.values()) / len(busy_by_shard)
    return {
        "time_rollout_s": rollout,
        "time_score_s": score,
        "time_train_s": train_s,
        "time_wait_s": waited,
        "time_reload_s": max(r.get("reload_seconds", 0.0) for r in records),
        "time_step_s": step_s,
        "time_handoff_s": max(0.0, step_s - critical),
        "idle_train_frac": min(1.0, max(0.0, 1.0 - train_s / step_s)),
        "idle_rollout_frac": min(1.0, max(0.0, 1.0 - rollout_busy / step_s)),
        "time_publish_started": now,
    }


def _reward_summary(records: list[dict[str, Any]]) -> dict[str, float]:
    """Reward statistics of the step from the records alone (the same for every backend): overall
    and per-group reward metrics, each component's mean, the accuracy's group fractions."""
    rewards = torch.tensor([float(r["reward"]) for r in records], dtype=torch.float32)
    groups = torch.tensor([int(r["group"]) for r in records], dtype=torch.long)
    out = {k: float(v) for k, v in reward_metrics(rewards, groups).items() if v.dim() == 0}
    for name in records[0]["rewards"]:
        vals = [r["rewards"][name] for r in records if r["rewards"][name] is not None]
        if vals:
            out[f"reward_{name}"] = sum(vals) / len(vals)
    # The learned reward (rl_all), which rates the general prompts' samples only.
    rated = [float(r["reward_model"]) for r in _general(records) if r.get("reward_model") is not None]
    if rated:
        out["reward_model_general"] = sum(rated) / len(rated)
    # All-correct / all-wrong by the accuracy reward, not the weighted total (a total >= 1 says
    # nothing about correctness once format and learned rewards are added); general prompts
    # (no reference) are not counted.
    graded = [r for r in records if r["rewards"].get("accuracy_math") is not None]
    if graded:
        acc = torch.tensor([float(r["rewards"]["accuracy_math"]) for r in graded])
        m = reward_metrics(acc, torch.tensor([int(r["group"]) for r in graded]), correct_threshold=1.0)
        out["frac_groups_all_correct"] = float(m["frac_groups_all_correct"])
        out["frac_groups_all_wrong"] = float(m["frac_groups_all_wrong"])
    lengths = [len(r["response_ids"]) for r in records]
    out["response_length_mean"] = sum(lengths) / len(lengths)
    out["response_length_max"] = float(max(lengths))
    out["response_length_min"] = float(min(lengths))
    return out


def _general(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of general prompts (rl_all: no reference, rewarded by the reward model)."""
    return [r for r in records if r.get("data_source") == "general"]


class TorchBackend:
    """Plain torch / transformers on this process's CPU: r1hpc.train.grpo.grpo_update with AdamW."""

    is_main = True

    def __init__(self, ctx: StageContext, stage: str) -> None:
        self.ctx, self.stage = ctx, stage
        self.g = ctx.cfg.grpo
        self.lr = getattr(ctx.cfg, recipe.stage(stage).section).lr
        self.settings = GRPOSettings.of(self.g)
        self.state_dir = ctx.run.train_state_dir(stage)
        self.policy: Any = None
        self.tokenizer: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._frozen: dict[int, torch.nn.Module] = {}  # reference / behaviour policies by version

    def restore(self, step: int, versions: dict[int, ModelVersion]) -> int:
        saved = [s for s in checkpoint_steps(self.state_dir) if s <= step and s in versions]
        start = max(saved) if saved else 0
        self.policy, self.tokenizer = load_policy(versions[start], pad_token=self.ctx.cfg.model.pad_token)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=self.lr, betas=(0.9, 0.99), weight_decay=0.0)
        if saved:  # the optimizer's moments carry over between steps (and jobs)
            load_checkpoint(self.state_dir, start, self.policy, self.optimizer, torch.Generator())
        self._frozen.clear()
        return start

    def _frozen_policy(self, version: ModelVersion, keep: set[int]) -> torch.nn.Module:
        for v in [v for v in self._frozen if v not in keep]:
            del self._frozen[v]
        if version.version not in self._frozen:
            self._frozen[version.version] = load_policy(version)[0]
        return self._frozen[version.version]

    def update(
        self,
        step: int,
        records: list[dict[str, Any]],
        reference: ModelVersion | None,
        behaviour: ModelVersion | None,
    ) -> dict[str, float]:
        from r1hpc.train.grpo import grpo_update

        keep = {v.version for v in (reference, behaviour) if v is not None} | {step}
        ref = self._frozen_policy(reference, keep) if reference is not None else None
        old = self._frozen_policy(behaviour, keep) if behaviour is not None else None
        if self.g.max_staleness > 0:  # v(step) samples a later step: keep it instead of reloading it then
            self._frozen[step] = copy.deepcopy(self.policy).eval()
        generator = torch.Generator().manual_seed(stage_seed(self.ctx.cfg.seed, self.stage, "train", step))
        self.policy.train()
        metrics = grpo_update(
            self.policy,
            ref,
            self.optimizer,
            records,
            self.settings,
            self.tokenizer.pad_token_id,
            generator,
            behaviour=old,
        )
        self.policy.eval()
        return metrics

    def publish(self, version: int, meta: dict[str, Any]) -> None:
        publish_policy(self.ctx, self.stage, version, self.policy, self.tokenizer, meta=meta)

    def save_state(self, step: int) -> None:
        save_checkpoint(self.state_dir, step, self.policy, self.optimizer, torch.Generator(), keep=3)

    def close(self) -> None:
        self.policy = self.optimizer = None
        self._frozen.clear()
