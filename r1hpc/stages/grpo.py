"""A GRPO stage as Slurm jobs: for each step, a rollout array then a train job depending on it.

    rollout_task(run_dir, stage, step, shard)   one array task: G samples for each prompt of its
        shard with policy v(step - lag), scored by the rule rewards in a worker pool (and the
        learned reward model for rl_all), published as rollouts/<stage>/step_N/shard_K.jsonl.
    train_task(run_dir, stage, step)   reads every shard of step N, updates v(N) into v(N+1)
        with r1hpc.train.grpo_update, saves the optimizer state, publishes v(N+1).

Both are idempotent: a requeued or duplicated task finds its output complete and returns it.
A train job killed at any point reruns the same deterministic update (seeded by run seed, stage
and step), so the published versions equal those of an undisturbed run.

With grpo.max_staleness = 1 the rollouts of step N+1 use v(N) (lag 1) and can run while step N
trains: the trainer then corrects for the stale policy through the importance ratio against the
log-probs of the policy that generated them, which it recomputes itself.
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
    load_policy,
    log_metrics,
    log_metrics_once,
    prompt_format,
    publish_policy,
    read_data,
    reward_example,
    reward_pool,
    stage_generator,
    stage_seed,
)
from r1hpc.store import list_versions, publish_shard, read_step_shards, shard_is_complete
from r1hpc.train.checkpoint import load_checkpoint, save_checkpoint
from r1hpc.train.grpo import GRPOSettings, grpo_update

__all__ = ["rollout_task", "train_task", "prepare_stage", "step_prompts", "policy_version_for_step"]


def stage_config(ctx: StageContext, stage: str) -> RLStageConfig:
    """The RL settings of a stage: its config section in the recipe's table (distill_rl spends
    r1_zero's budget)."""
    return getattr(ctx.cfg, recipe.stage(stage).section)


def prepare_stage(run_dir: str, stage: str) -> str:
    """Publish v0000 of the stage from the model it starts from (idempotent)."""
    ctx = StageContext(run_dir)
    return init_stage_from(ctx, stage, recipe.stage(stage).init_from).name


def policy_version_for_step(g: GRPOConfig, step: int) -> int:
    """The policy version that generates step N's rollouts: v(N), or v(N-1) with one-step overlap."""
    return max(0, step - g.max_staleness)


def step_prompts(ctx: StageContext, stage: str, step: int) -> list[dict[str, Any]]:
    """The step's prompts: a deterministic draw from the training problems (same on every rerun)."""
    problems = read_data(ctx, "problems_train")
    g = ctx.cfg.grpo
    gen = torch.Generator().manual_seed(stage_seed(ctx.cfg.seed, stage, "prompts", step))
    idx = torch.randperm(len(problems), generator=gen)[: g.prompts_per_step].tolist()
    return [problems[i] for i in idx]


def rollout_task(run_dir: str, stage: str, step: int, shard: int) -> dict[str, Any]:
    """Generate, score and publish one shard of step `step` (an array task)."""
    from r1hpc.rewards.custom import reward_table
    from r1hpc.rewards.scorer import score_batch

    ctx = StageContext(run_dir)
    g = ctx.cfg.grpo
    if shard_is_complete(ctx.run, stage, step, shard):
        return {"stage": stage, "step": step, "shard": shard, "skipped": "already complete"}
    started = time.time()
    version = policy_version_for_step(g, step)
    policy = [v for v in list_versions(ctx.run, stage) if v.version == version]
    if not policy:
        raise FileNotFoundError(
            f"{ctx.run_dir}/models/{stage}: no v{version:04d} for step {step}; "
            "its train job must finish first (submit through the pipeline or after=)"
        )
    prompts = step_prompts(ctx, stage, step)
    per_shard = len(prompts) // g.rollout_shards
    mine = prompts[shard * per_shard : (shard + 1) * per_shard]
    policy_dir = policy[0].checked().path
    fmt = prompt_format(ctx.cfg, load_tokenizer(policy_dir, pad_token=ctx.cfg.model.pad_token))
    texts = [fmt.render(p) for p in mine]
    # The ids sampled from are the ids stored for the trainer to score (one encoder, BOS once).
    ids = encode_prompts(fmt.tokenizer, texts)
    generator = stage_generator(ctx.cfg, policy_dir)
    try:
        samples = generator.generate(
            ids,
            n=g.group_size,
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            stop=list(ctx.cfg.prompt.stop) or None,
            seed=stage_seed(ctx.cfg.seed, stage, "rollout", step, shard),
        )
    finally:
        generator.close()
    gen_done = time.time()
    flat = [(i, s) for i, group in enumerate(samples) for s in group]
    st = stage_config(ctx, stage)
    # max_length / overlong_cache / completion_tokens: DAPO's soft overlong penalty, in tokens
    # (scores None, i.e. not applied, unless the stage's rewards weight "overlong").
    examples = [
        reward_example(
            mine[i],
            fmt.ends_with_think,
            completion_tokens=len(s.token_ids),
            max_length=g.max_new_tokens,
            overlong_cache=g.overlong_cache,
        )
        for i, s in flat
    ]
    with reward_pool(ctx.cfg) as pool:
        scores = score_batch(
            [s.text for _, s in flat],
            examples,
            st.rewards,
            pool=pool,
            progress=False,
            reward_funcs=reward_table(ctx.cfg.rewards.custom),
        )
    rm_scores = _reward_model_scores(ctx, [texts[i] for i, _ in flat], flat) if st.reward_model_weight > 0 else None
    records = []
    for j, (i, s) in enumerate(flat):
        reward = scores.totals[j] + (st.reward_model_weight * rm_scores[j] if rm_scores is not None else 0.0)
        records.append(
            {
                "group": shard * per_shard + i,
                "problem_id": mine[i]["id"],
                "difficulty": mine[i]["difficulty"],
                "data_source": mine[i].get("data_source", "generated"),
                "prompt_ids": ids[i],
                "response_ids": s.token_ids,
                "gen_logprobs": s.logprobs,
                "text": s.text,
                "finish_reason": s.finish_reason,
                "reward": reward,
                "rewards": {name: vals[j] for name, vals in scores.values.items()},
                "reward_model": None if rm_scores is None else rm_scores[j],
                "policy_version": version,
                "gen_started": started,
                "gen_seconds": gen_done - started,
                "score_seconds": time.time() - gen_done,
            }
        )
    publish_shard(ctx.run, stage, step, shard, records)
    return {
        "stage": stage,
        "step": step,
        "shard": shard,
        "samples": len(records),
        "failed_scores": scores.num_failed,
        "seconds": time.time() - started,
    }


def _reward_model_scores(ctx: StageContext, prompts: list[str], flat: list) -> list[float]:
    """The learned helpfulness/harmlessness reward (rl_all) of each rendered prompt + sample; runs
    here, never in the trainer."""
    from r1hpc.stages.reward_model import score_with_reward_model

    return score_with_reward_model(ctx, prompts, [s.text for _, s in flat])


def _settings(g: GRPOConfig) -> GRPOSettings:
    return GRPOSettings(
        clip_low=g.clip_low,
        clip_high=g.clip_high,
        dual_clip=g.dual_clip,
        kl_coef=g.kl_coef,
        kl_estimator=g.kl_estimator,
        loss_agg=g.loss_agg,
        scale_adv_by_std=g.scale_adv_by_std,
        dynamic_sampling=g.dynamic_sampling,
        mini_batches=g.mini_batches,
        micro_batch_size=g.micro_batch_size,
        temperature=g.temperature,
        max_grad_norm=g.max_grad_norm,
        max_new_tokens=g.max_new_tokens,
    )


def _reference_version(g: GRPOConfig, step: int) -> int:
    """R1 refreshes the reference policy every `ref_refresh_steps` steps (0 = never)."""
    return 0 if g.ref_refresh_steps == 0 else (step // g.ref_refresh_steps) * g.ref_refresh_steps


def train_task(run_dir: str, stage: str, step: int) -> dict[str, Any]:
    """Update v(step) with the step's rollouts and publish v(step+1) (idempotent)."""
    ctx = StageContext(run_dir)
    g, st = ctx.cfg.grpo, stage_config(ctx, stage)
    versions = {v.version: v for v in list_versions(ctx.run, stage)}
    if step + 1 in versions:
        log_metrics_once(ctx, stage, versions[step + 1].meta["metrics"])
        return {"stage": stage, "step": step, "skipped": "already published", **versions[step + 1].meta}
    started = time.time()
    if step not in versions:
        raise FileNotFoundError(f"{ctx.run_dir}/models/{stage}: no v{step:04d} to update at step {step}")
    records = read_step_shards(ctx.run, stage, step, g.rollout_shards)
    rollout_end = max(_shard_end(ctx, stage, step, k) for k in range(g.rollout_shards))
    policy, tokenizer = load_policy(versions[step], pad_token=ctx.cfg.model.pad_token)
    ref = load_policy(versions[_reference_version(g, step)])[0] if g.kl_coef > 0 else None
    optimizer = torch.optim.AdamW(policy.parameters(), lr=st.lr, betas=(0.9, 0.99), weight_decay=0.0)
    state_dir = ctx.run.train_state_dir(stage)
    generator = torch.Generator().manual_seed(stage_seed(ctx.cfg.seed, stage, "train", step))
    if step > 0:  # the optimizer's moments carry over between steps (and jobs)
        load_checkpoint(state_dir, step, policy, optimizer, torch.Generator())
    # The policy that sampled the step (v(step - lag), grpo.max_staleness): the ratio's old log-probs.
    sampled_by = {int(r["policy_version"]) for r in records}
    if len(sampled_by) != 1 or not sampled_by <= versions.keys():
        raise ValueError(
            f"{ctx.run_dir}/rollouts/{stage}/step_{step:04d}: records sampled by policy versions "
            f"{sorted(sampled_by)}; expected one published version"
        )
    (sampler,) = sampled_by
    behaviour = None if sampler == step else load_policy(versions[sampler])[0]
    policy.train()
    metrics = grpo_update(
        policy, ref, optimizer, records, _settings(g), tokenizer.pad_token_id, generator, behaviour=behaviour
    )
    policy.eval()
    # Optimizer state first, then the model: a kill in between reruns the same update.
    save_checkpoint(state_dir, step + 1, policy, optimizer, torch.Generator(), keep=3)
    rewards_by_name = _component_means(records)
    metrics.update(_accuracy_group_fractions(records))
    gen_seconds = max(r["gen_seconds"] for r in records)
    record = {
        "step": step,
        "stage": stage,
        **metrics,
        **rewards_by_name,
        "policy_lag": step - min(r["policy_version"] for r in records),
        "time_rollout_s": gen_seconds,
        "time_score_s": max(r["score_seconds"] for r in records),
        "time_train_s": time.time() - started,
        "time_handoff_s": max(0.0, started - rollout_end),
    }
    publish_policy(ctx, stage, step + 1, policy, tokenizer, meta={"metrics": record})
    log_metrics(ctx, stage, record)
    return record


def _shard_end(ctx: StageContext, stage: str, step: int, shard: int) -> float:
    return ctx.run.shard_path(stage, step, shard, create=False).stat().st_mtime


def _accuracy_group_fractions(records: list[dict[str, Any]]) -> dict[str, float]:
    """All-correct / all-wrong group fractions by the accuracy reward, not the weighted total
    (a total >= 1 says nothing about correctness once format and learned rewards are added)."""
    from r1hpc.algos import reward_metrics

    if not records or records[0]["rewards"].get("accuracy_math") is None:
        return {}
    acc = torch.tensor([float(r["rewards"]["accuracy_math"] or 0.0) for r in records])
    groups = torch.tensor([int(r["group"]) for r in records])
    m = reward_metrics(acc, groups, correct_threshold=1.0)
    return {
        "frac_groups_all_correct": float(m["frac_groups_all_correct"]),
        "frac_groups_all_wrong": float(m["frac_groups_all_wrong"]),
    }


def _component_means(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each reward component over the step (None = not applicable, left out)."""
    out = {}
    for name in records[0]["rewards"]:
        vals = [r["rewards"][name] for r in records if r["rewards"][name] is not None]
        if vals:
            out[f"reward_{name}"] = sum(vals) / len(vals)
    return out
