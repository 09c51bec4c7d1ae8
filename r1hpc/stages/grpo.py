"""A GRPO stage's jobs. Two modes (grpo.jobs), the same code per step:

- `stage` (default): the stage is two submissions that start together: one rollout array
  (`rollout_loop`, one task per shard) and one train job (`train_loop`) run side by side for the
  whole stage, each holding its model (the rollout engine, the trainer's weights and optimizer) and
  handing over through the run directory: the train job first publishes v0000 (the model the stage
  starts from); a rollout task waits for policy v(step - lag), reloads it in place, publishes its
  shard of the step; the train job waits for the step's shards, updates, publishes v(step+1)
  (r1hpc.stages.handoff, r1hpc.stages.grpo_train). No job of its own publishes v0000: on a busy
  cluster each dependent job is one more wait in the queue.
- `step`: prepare_stage publishes v0000, then per step a rollout array (`rollout_task`) and a train
  job (`train_task`) depending on it: fresh jobs that fit backfill and preemptible capacity, at the
  price of a job start, imports and a model load per step.

Records: G samples for each prompt of the shard, scored by the rule rewards in a worker pool (and
the learned reward model for rl_all), as rollouts/<stage>/step_N/shard_K.jsonl.

Every job is idempotent and resumes at its first missing output: a requeued or rerun rollout task
skips published shards; a train job restores its newest checkpoint and replays the deterministic
updates after it (seeded by run seed, stage and step), so the published versions equal those of an
undisturbed run.

With grpo.max_staleness = 1 the rollouts of step N+1 use v(N) (lag 1) and run while step N trains;
the trainer takes the ratio's old log-probs from the policy that sampled them.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from r1hpc import recipe
from r1hpc.config import GRPOConfig, RLStageConfig
from r1hpc.model.prompting import encode_prompts
from r1hpc.model.tokenizer import load_tokenizer
from r1hpc.stages.common import (
    StageContext,
    init_stage_from,
    prompt_format,
    read_data,
    reward_example,
    reward_pool,
    stage_generator,
    stage_seed,
)
from r1hpc.stages.handoff import failures_recorded, heartbeat, reset_stage, wait_for
from r1hpc.store import model_version, publish_shard, shard_is_complete, version_published

__all__ = [
    "rollout_task",
    "rollout_loop",
    "train_task",
    "train_loop",
    "prepare_stage",
    "step_prompts",
    "policy_version_for_step",
    "RolloutWorker",
]


def stage_config(ctx: StageContext, stage: str) -> RLStageConfig:
    """The RL settings of a stage: its config section in the recipe's table (distill_rl spends
    r1_zero's budget)."""
    return getattr(ctx.cfg, recipe.stage(stage).section)


def prepare_stage(run_dir: str, stage: str) -> str:
    """Per-step mode (and a stage of 0 steps): publish v0000 of the stage from the model it starts
    from (idempotent), after clearing what an earlier attempt left behind (handoff.reset_stage)."""
    ctx = StageContext(run_dir)
    reset_stage(ctx.run, stage, ctx.cfg.grpo.heartbeat_timeout_s)
    return init_stage_from(ctx, stage, recipe.stage(stage).init_from).name


def policy_version_for_step(g: GRPOConfig, step: int) -> int:
    """The policy version that generates step N's rollouts: v(N), or v(N-1) with one-step overlap."""
    return max(0, step - g.max_staleness)


def step_prompts(
    ctx: StageContext,
    stage: str,
    step: int,
    problems: list[dict[str, Any]] | None = None,
    general: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The step's prompts: a deterministic draw (the same on every rerun) of grpo.prompts_per_step,
    of which the stage's general share (RLStageConfig.general_prompts) comes from
    data/general_train, marked "general": True, and the rest from the training problems; the
    general ones are spread evenly, so that every rollout shard's slice gets its part.
    problems / general: the run's data when the caller holds it already (a long-lived task)."""
    problems = read_data(ctx, "problems_train") if problems is None else problems
    g = ctx.cfg.grpo
    n_general = stage_config(ctx, stage).general_prompts(g.prompts_per_step)
    gen = torch.Generator().manual_seed(stage_seed(ctx.cfg.seed, stage, "prompts", step))
    idx = torch.randperm(len(problems), generator=gen)[: g.prompts_per_step - n_general].tolist()
    chosen = [problems[i] for i in idx]
    if n_general:
        general = read_data(ctx, "general_train") if general is None else general
        if not general:
            raise ValueError(f"{ctx.run_dir}/data/general_train.jsonl: no general prompts for {stage}.general_share")
        gen = torch.Generator().manual_seed(stage_seed(ctx.cfg.seed, stage, "general_prompts", step))
        picked = [{**general[i], "general": True} for i in torch.randperm(len(general), generator=gen)[:n_general]]
        every = (len(chosen) + len(picked)) / len(picked)  # one general prompt in the middle of each span
        for j, item in enumerate(picked):
            chosen.insert(int(j * every + every / 2), item)
    return chosen


class RolloutWorker:
    """One rollout array task's state across steps: the engine holding the current policy, the
    prompt format and the reward pool. Per-step mode makes one per step; the long-lived task keeps
    it for the stage and reloads weights in place when a new version is published."""

    def __init__(self, ctx: StageContext, stage: str, shard: int) -> None:
        self.ctx, self.stage, self.shard = ctx, stage, shard
        self.generator: Any = None
        self.fmt: Any = None
        self.version: int | None = None
        self._pool: Any = None
        self._problems: list[dict[str, Any]] | None = None  # the run's training problems, read once
        self._general: list[dict[str, Any]] = []  # and its general prompts, when the stage uses them

    def load_policy(self, version: int) -> float:
        """Hold policy v(version) in the engine (built on first use, weights reloaded after);
        returns the seconds it took (0 if it is held already)."""
        if version == self.version:
            return 0.0
        started = time.time()
        found = model_version(self.ctx.run, self.stage, version)
        if found is None:
            raise FileNotFoundError(
                f"{self.ctx.run_dir}/models/{self.stage}: no v{version:04d}; "
                "its train job must publish it first (submit through the pipeline or after=)"
            )
        policy_dir = found.checked().path
        if self.generator is None:
            cfg = self.ctx.cfg
            self.fmt = prompt_format(cfg, load_tokenizer(policy_dir, pad_token=cfg.model.pad_token))
            self.generator = stage_generator(cfg, policy_dir)
        else:
            self.generator.load_weights(policy_dir)
        self.version = version
        return time.time() - started

    def pool(self) -> Any:
        if self._pool is None:
            self._pool = reward_pool(self.ctx.cfg).__enter__()
        return self._pool

    def _score(
        self, completions: list[str], tokens: list[int], items: list[dict[str, Any]], st: RLStageConfig
    ) -> tuple[list[float], list[dict[str, float | None]], int]:
        """Rule rewards of each completion in the worker pool: weighted totals, the components
        (None where a reward does not apply) and the number of failed scores. A general prompt has
        no reference, so the rewards that grade against one (REFERENCE_GRADED) are not run on it."""
        from r1hpc.rewards import REFERENCE_GRADED
        from r1hpc.rewards.custom import reward_table
        from r1hpc.rewards.scorer import score_batch

        g = self.ctx.cfg.grpo
        totals: list[float] = [0.0] * len(items)
        rewards: list[dict[str, float | None]] = [dict.fromkeys(st.rewards) for _ in items]
        failed = 0
        general = [bool(item.get("general")) for item in items]
        for is_general in (False, True):
            which = [j for j, flag in enumerate(general) if flag == is_general]
            weights = {k: w for k, w in st.rewards.items() if not (is_general and k in REFERENCE_GRADED)}
            if not which or not weights:
                continue
            # max_length / overlong_cache / completion_tokens: DAPO's soft overlong penalty, in tokens
            # (scores None, i.e. not applied, unless the stage's rewards weight "overlong").
            examples = [
                reward_example(
                    {k: v for k, v in items[j].items() if not (is_general and k == "answer")},
                    self.fmt.ends_with_think,
                    completion_tokens=tokens[j],
                    max_length=g.max_new_tokens,
                    overlong_cache=g.overlong_cache,
                )
                for j in which
            ]
            scores = score_batch(
                [completions[j] for j in which],
                examples,
                weights,
                pool=self.pool(),
                progress=False,
                reward_funcs=reward_table(self.ctx.cfg.rewards.custom),
            )
            failed += scores.num_failed
            for n, j in enumerate(which):
                totals[j] = scores.totals[n]
                rewards[j].update({name: vals[n] for name, vals in scores.values.items()})
        return totals, rewards, failed

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
            self.generator = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.__exit__(None, None, None)

    def run_step(self, step: int, wait_seconds: float = 0.0) -> dict[str, Any]:
        """Generate, score and publish this task's shard of `step` (policy v(step - lag))."""
        ctx, stage, shard = self.ctx, self.stage, self.shard
        g = ctx.cfg.grpo
        version = policy_version_for_step(g, step)
        reload_seconds = self.load_policy(version)
        started = time.time()
        if self._problems is None:
            self._problems = read_data(ctx, "problems_train")
            self._general = read_data(ctx, "general_train") if stage_config(ctx, stage).general_share else []
        prompts = step_prompts(ctx, stage, step, self._problems, self._general)
        per_shard = len(prompts) // g.rollout_shards
        mine = prompts[shard * per_shard : (shard + 1) * per_shard]
        texts = [self.fmt.render(p) for p in mine]
        # The ids sampled from are the ids stored for the trainer to score (one encoder, BOS once).
        ids = encode_prompts(self.fmt.tokenizer, texts)
        samples = self.generator.generate(
            ids,
            n=g.group_size,
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            stop=list(ctx.cfg.prompt.stop) or None,
            seed=stage_seed(ctx.cfg.seed, stage, "rollout", step, shard),
        )
        gen_done = time.time()
        flat = [(i, s) for i, group in enumerate(samples) for s in group]
        st = stage_config(ctx, stage)
        totals, rewards, failed = self._score(
            [s.text for _, s in flat], [len(s.token_ids) for _, s in flat], [mine[i] for i, _ in flat], st
        )
        # The learned reward rates general prompts only: R1 kept neural rewards off reasoning data,
        # whose rule rewards cannot be hacked.
        rated = [j for j, (i, _) in enumerate(flat) if mine[i].get("general")] if st.reward_model_weight > 0 else []
        rm_scores: list[float | None] = [None] * len(flat)
        if rated:
            scores = _reward_model_scores(ctx, [texts[flat[j][0]] for j in rated], [flat[j] for j in rated])
            for j, score in zip(rated, scores):
                rm_scores[j] = score
        score_done = time.time()
        records = []
        for j, (i, s) in enumerate(flat):
            rm_score = rm_scores[j]
            reward = totals[j] + (st.reward_model_weight * rm_score if rm_score is not None else 0.0)
            records.append(
                {
                    "group": shard * per_shard + i,
                    "shard": shard,
                    "problem_id": mine[i]["id"],
                    "difficulty": mine[i]["difficulty"],
                    "data_source": "general" if mine[i].get("general") else mine[i].get("data_source", "generated"),
                    "prompt_ids": ids[i],
                    "response_ids": s.token_ids,
                    "gen_logprobs": s.logprobs,
                    "text": s.text,
                    "finish_reason": s.finish_reason,
                    "reward": reward,
                    "rewards": rewards[j],
                    "reward_model": rm_score,
                    "policy_version": version,
                    "gen_started": started,
                    "gen_seconds": gen_done - started,
                    "score_seconds": score_done - gen_done,
                    # what the task spent before generating: waiting for v(version), loading it
                    "wait_seconds": wait_seconds,
                    "reload_seconds": reload_seconds,
                }
            )
        publish_shard(ctx.run, stage, step, shard, records)
        return {
            "stage": stage,
            "step": step,
            "shard": shard,
            "samples": len(records),
            "failed_scores": failed,
            "seconds": time.time() - started,
        }


def rollout_task(run_dir: str, stage: str, step: int, shard: int) -> dict[str, Any]:
    """Per-step mode (grpo.jobs=step): generate, score and publish one shard of `step`."""
    ctx = StageContext(run_dir)
    if shard_is_complete(ctx.run, stage, step, shard):
        return {"stage": stage, "step": step, "shard": shard, "skipped": "already complete"}
    worker = RolloutWorker(ctx, stage, shard)
    try:
        return worker.run_step(step)
    finally:
        worker.close()


def rollout_loop(run_dir: str, stage: str, shard: int) -> dict[str, Any]:
    """Long-lived mode (grpo.jobs=stage): this shard of every step of the stage, in one job.

    Per step: skip it if the shard is published (a requeued task resumes at the first missing
    one), wait for policy v(step - lag), reload it into the engine held since the first step,
    generate, score, publish. Stops at a step boundary when Slurm signals the time limit (the job
    is requeued and resumes)."""
    from r1hpc import preemption

    ctx = StageContext(run_dir)
    g = ctx.cfg.grpo
    steps = stage_config(ctx, stage).steps
    me = f"rollout_{shard}"
    todo = [s for s in range(steps) if not shard_is_complete(ctx.run, stage, s, shard)]
    worker = RolloutWorker(ctx, stage, shard)
    done = []
    try:
        with (
            failures_recorded(ctx.run, stage, me),
            heartbeat(ctx.run, stage, me, g.heartbeat_timeout_s),
            preemption.saving_loop(),
        ):
            for step in todo:
                version = policy_version_for_step(g, step)
                waited = wait_for(
                    lambda v=version: version_published(ctx.run, stage, v),
                    f"{ctx.run_dir}/models/{stage}/v{version:04d} (the policy of step {step})",
                    ctx.run,
                    stage,
                    me,
                    timeout_s=g.wait_timeout_s,
                    max_sleep_s=g.poll_max_s,
                    partners=("train",),
                    heartbeat_timeout_s=g.heartbeat_timeout_s,
                )
                worker.run_step(step, wait_seconds=waited)
                done.append(step)
                if preemption.stop_requested():
                    preemption.hand_over()  # the requeued task resumes at the next missing shard
    finally:
        worker.close()
    return {"stage": stage, "shard": shard, "steps": len(done), "skipped": steps - len(todo)}


def _reward_model_scores(ctx: StageContext, prompts: list[str], flat: list) -> list[float]:
    """The learned helpfulness/harmlessness reward (rl_all) of each rendered prompt + sample; runs
    here, never in the trainer."""
    from r1hpc.stages.reward_model import score_with_reward_model

    return score_with_reward_model(ctx, prompts, [s.text for _, s in flat])


def train_task(run_dir: str, stage: str, step: int) -> dict[str, Any]:
    """Per-step mode (grpo.jobs=step): update v(step) with the step's rollouts, publish v(step+1)
    (idempotent). The same loop as train_loop, for one step."""
    from r1hpc.stages.grpo_train import TorchBackend, train_steps

    return train_steps(run_dir, stage, range(step, step + 1), TorchBackend)[0]


def train_loop(run_dir: str, stage: str) -> dict[str, Any]:
    """Long-lived mode (grpo.jobs=stage): every step of the stage in one job holding the model and
    optimizer (r1hpc.stages.grpo_train)."""
    from r1hpc.stages.grpo_train import TorchBackend, train_steps

    ctx = StageContext(run_dir)
    records = train_steps(run_dir, stage, range(stage_config(ctx, stage).steps), TorchBackend)
    return {"stage": stage, "steps_trained": len(records)}
