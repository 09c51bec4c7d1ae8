"""Rejection sampling of DeepSeek-R1: many samples per prompt from the reasoning-RL checkpoint,
keep the correct / approved ones, filter, and write the SFT sets of the next stage.

    rejection_task(run_dir, shard)   an array task: for its share of the prompts
        (rejection.prompts train problems + rejection.general_prompts general requests, a seeded
        draw, dealt round-robin over rejection.shards) samples rejection.samples_per_prompt
        answers from the newest models/reasoning_rl; reasoning samples are scored by the rule
        rewards (accuracy + format + language consistency, in the worker pool), general ones by
        the rule format/language rewards and by the judge; publishes rollouts/rejection/step_0000/shard_K.
    rejection_merge(run_dir)   reads every shard, keeps the correct (reasoning) / approved
        (general) samples, drops mixed-language, overlong, repetitive and code-block samples and
        duplicates, keeps at most rejection.keep_per_prompt per prompt, and writes
        data/sft_reasoning.jsonl, data/sft_general.jsonl and data/rejection_stats.json.

The judge. R1 asks DeepSeek-V3 whether a non-verifiable answer is acceptable; this project has no
such model, so the judge is the run's learned reward model (r1hpc.stages.reward_model): a general
sample is approved when it has the R1 format and its reward-model score (mean of helpfulness on
the final answer and harmlessness on the whole output, in [0, 1]) is >= rejection.judge_min_score.
A general prompt with no approved sample contributes its reference answer instead (R1's
non-reasoning data reuses the DeepSeek-V3 SFT set the same way).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from r1hpc import recipe
from r1hpc.fsio import atomic_write_json
from r1hpc.model.prompting import encode_prompts
from r1hpc.rewards.language import target_language
from r1hpc.stages.common import (
    StageContext,
    data_path,
    prompt_format,
    read_data,
    reward_example,
    reward_pool,
    stage_generator,
    stage_seed,
)
from r1hpc.stages.filters import has_code_block, is_mixed_language, is_repetitive, normalize_text
from r1hpc.stages.sft_inputs import write_sft_records
from r1hpc.store import done_info, latest_model, mark_done, publish_shard, read_step_shards, shard_is_complete

__all__ = ["rejection_items", "rejection_task", "merge_records", "rejection_merge", "general_fallback"]

STAGE = "rejection"
STEP = 0  # one generation round: the shards live in rollouts/rejection/step_0000/
POLICY_STAGE = recipe.stage(STAGE).init_from  # the policy sampled (reasoning_rl)
REASONING_RULES = {"accuracy_math": 1.0, "format": 1.0, "language_consistency": 1.0}
GENERAL_RULES = {"format": 1.0, "language_consistency": 1.0}
STAT_KEYS = (
    "sampled",
    "correct",
    "dropped_mixed_language",
    "dropped_overlong",
    "dropped_repetitive",
    "dropped_code_block",
    "dropped_duplicate",
    "capped",
    "kept",
)
# R1 gives simple non-reasoning requests no chain of thought; this template always opens one,
# so the reference-answer fallback gets a short fixed one.
GENERAL_FALLBACK_THINK = "This request needs no long reasoning."
# What a dataset's problem may carry beyond prompt and answer (r1hpc.datasets): kept on the items,
# the shard records and the SFT records, so rewards and the prompt format see them.
PROBLEM_EXTRAS = ("messages", "tests", "language", "data_source", "choices")


def rejection_items(ctx: StageContext) -> list[dict[str, Any]]:
    """Every prompt of the round: {"kind": "reasoning"|"general", "id", "prompt", "answer"}, a
    seeded draw of rejection.prompts problems and rejection.general_prompts general examples."""
    rj = ctx.cfg.rejection
    problems, general = read_data(ctx, "problems_train"), read_data(ctx, "general_train")
    for key, want, have, name in (
        ("rejection.prompts", rj.prompts, len(problems), "problems_train"),
        ("rejection.general_prompts", rj.general_prompts, len(general), "general_train"),
    ):
        if not 0 <= want <= have:
            raise ValueError(f"{ctx.run_dir}/config.yaml: {key} = {want}, but data/{name}.jsonl has {have} examples")
    items = []
    for kind, pool, want in (("reasoning", problems, rj.prompts), ("general", general, rj.general_prompts)):
        gen = torch.Generator().manual_seed(stage_seed(ctx.cfg.seed, STAGE, "prompts", kind))
        for i in torch.randperm(len(pool), generator=gen)[:want].tolist():
            ex = pool[i]
            items.append(
                {
                    "kind": kind,
                    "id": ex["id"],
                    "prompt": ex["prompt"],
                    "answer": ex["answer"],
                    **{k: ex[k] for k in PROBLEM_EXTRAS if k in ex},
                }
            )
    return items


def _shard_items(items: list[dict[str, Any]], shard: int, shards: int) -> list[dict[str, Any]]:
    """Round-robin: both kinds spread evenly over the shards."""
    return items[shard::shards]


def rejection_task(run_dir: str, shard: int) -> dict[str, Any]:
    """Sample, score and publish shard `shard` of the rejection round (an array task)."""
    from r1hpc.model.tokenizer import load_tokenizer
    from r1hpc.rewards.scorer import score_batch
    from r1hpc.stages.reward_model import reward_model_components

    ctx = StageContext(run_dir)
    cfg, rj = ctx.cfg, ctx.cfg.rejection
    if not 0 <= shard < rj.shards:
        raise ValueError(f"rejection_task: shard {shard} is outside 0..rejection.shards-1 = {rj.shards - 1}")
    if shard_is_complete(ctx.run, STAGE, STEP, shard):
        return {"stage": STAGE, "shard": shard, "skipped": "already complete"}
    started = time.time()
    policy = latest_model(ctx.run, POLICY_STAGE, verify="sha256")
    mine = _shard_items(rejection_items(ctx), shard, rj.shards)
    samples: list[list[Any]] = []
    fmt = prompt_format(cfg, load_tokenizer(policy.path, pad_token=cfg.model.pad_token))
    prompts = [fmt.render(it) for it in mine]
    if mine:
        generator = stage_generator(cfg, policy.path)
        try:
            samples = generator.generate(
                encode_prompts(fmt.tokenizer, prompts),
                n=rj.samples_per_prompt,
                max_new_tokens=cfg.grpo.max_new_tokens,
                temperature=rj.temperature,
                top_p=1.0,
                stop=list(cfg.prompt.stop) or None,
                seed=stage_seed(cfg.seed, STAGE, "sample", shard),
            )
        finally:
            generator.close()
    flat = [(i, j, s) for i, group in enumerate(samples) for j, s in enumerate(group)]
    reasoning = [k for k, (i, _, _) in enumerate(flat) if mine[i]["kind"] == "reasoning"]
    general = [k for k, (i, _, _) in enumerate(flat) if mine[i]["kind"] == "general"]
    rewards: list[dict[str, Any]] = [{} for _ in flat]
    failed = 0
    # code problems (with tests) are graded by running them in the sandbox
    code_rules = {**REASONING_RULES, "code": 1.0} if any("tests" in it for it in mine) else REASONING_RULES
    with reward_pool(cfg) as pool:
        for idx, rules in ((reasoning, code_rules), (general, GENERAL_RULES)):
            if not idx:
                continue
            examples = [reward_example(mine[flat[k][0]], fmt.ends_with_think) for k in idx]
            scores = score_batch([flat[k][2].text for k in idx], examples, rules, pool=pool, progress=False)
            failed += scores.num_failed
            for pos, k in enumerate(idx):
                rewards[k] = {name: vals[pos] for name, vals in scores.values.items()}
    judged = (
        reward_model_components(ctx, [prompts[flat[k][0]] for k in general], [flat[k][2].text for k in general])
        if general
        else []
    )
    judge = {k: j for k, j in zip(general, judged)}
    records = []
    for k, (i, j, s) in enumerate(flat):
        item, r = mine[i], rewards[k]
        if item["kind"] == "reasoning":
            correct = r.get("code" if "tests" in item else "accuracy_math") == 1.0 and r.get("format") == 1.0
        else:
            correct = r.get("format") == 1.0 and judge[k]["score"] >= rj.judge_min_score
        records.append(
            {
                "kind": item["kind"],
                "item_id": item["id"],
                "sample": j,
                "prompt": item["prompt"],
                "answer": item["answer"],
                "text": s.text,
                "finish_reason": s.finish_reason,
                "rewards": r,
                "judge": judge.get(k),
                "correct": bool(correct),
                "policy": f"{POLICY_STAGE}/{policy.name}",
                **{k: item[k] for k in PROBLEM_EXTRAS if k in item},
            }
        )
    publish_shard(ctx.run, STAGE, STEP, shard, records)
    return {
        "stage": STAGE,
        "shard": shard,
        "prompts": len(mine),
        "samples": len(records),
        "correct": sum(r["correct"] for r in records),
        "failed_scores": failed,
        "policy": f"{POLICY_STAGE}/{policy.name}",
        "seconds": round(time.time() - started, 1),
    }


def _drop_reason(r: dict[str, Any]) -> str | None:
    """The first filter a correct sample fails, in the order of STAT_KEYS; None if it passes."""
    lang = r.get("rewards", {}).get("language_consistency")
    if (lang is not None and lang < 1.0) or is_mixed_language(r["text"], target_language(r)):
        return "dropped_mixed_language"
    if r.get("finish_reason") == "length":
        return "dropped_overlong"
    if is_repetitive(r["text"]):
        return "dropped_repetitive"
    if has_code_block(r["text"]):
        return "dropped_code_block"
    return None


def merge_records(records: list[dict[str, Any]], keep_per_prompt: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The kept samples (in input order) and the count per filter: each sample is counted in the
    first filter that drops it, so correct = sum(dropped_*) + capped + kept. Pure."""
    if keep_per_prompt < 1:
        raise ValueError(f"merge_records: keep_per_prompt must be >= 1, got {keep_per_prompt}")
    stats: dict[str, Any] = {"total": dict.fromkeys(STAT_KEYS, 0)}
    seen: set[tuple[str, str]] = set()
    per_prompt: dict[str, int] = {}
    kept = []
    for n, r in enumerate(records):
        for key in ("kind", "item_id", "text", "correct"):
            if key not in r:
                raise ValueError(f"rejection record {n}: missing key {key!r} (have {sorted(r)})")
        counts = stats.setdefault(r["kind"], dict.fromkeys(STAT_KEYS, 0))
        outcome = ["sampled"]
        if r["correct"]:
            outcome.append("correct")
            reason = _drop_reason(r)
            if reason is None:
                key = (r["item_id"], normalize_text(r["text"]))
                if key in seen:
                    reason = "dropped_duplicate"
                else:
                    seen.add(key)
                    reason = "capped" if per_prompt.get(r["item_id"], 0) >= keep_per_prompt else "kept"
            if reason == "kept":
                per_prompt[r["item_id"]] = per_prompt.get(r["item_id"], 0) + 1
                kept.append(r)
            outcome.append(reason)
        for name in outcome:
            counts[name] += 1
            stats["total"][name] += 1
    return kept, stats


def general_fallback(answer: str) -> str:
    """The completion written from a general example's reference answer."""
    return f" {GENERAL_FALLBACK_THINK} </think> <answer> {answer} </answer>"


def rejection_merge(run_dir: str) -> dict[str, Any]:
    """Filter all shards into data/sft_reasoning.jsonl + data/sft_general.jsonl (idempotent)."""
    ctx = StageContext(run_dir)
    done = done_info(ctx.run, STAGE, "merge")
    if done is not None:
        return done
    rj = ctx.cfg.rejection
    records = read_step_shards(ctx.run, STAGE, STEP, rj.shards)
    kept, by_kind = merge_records(records, rj.keep_per_prompt)
    reasoning = [
        {
            "prompt": r["prompt"],
            "completion": r["text"],
            "source": "rejection",
            "item_id": r["item_id"],
            "answer": r["answer"],
            **({"messages": r["messages"]} if "messages" in r else {}),
        }
        for r in kept
        if r["kind"] == "reasoning"
    ]
    general_kept: dict[str, list[dict[str, Any]]] = {}
    for r in kept:
        if r["kind"] == "general":
            general_kept.setdefault(r["item_id"], []).append(r)
    general, fallback = [], 0
    for item in (it for it in rejection_items(ctx) if it["kind"] == "general"):
        approved = general_kept.get(item["id"], [])
        for r in approved:
            general.append(
                {
                    "prompt": item["prompt"],
                    "completion": r["text"],
                    "source": "rejection",
                    "item_id": item["id"],
                    "answer": item["answer"],
                    "judge": r.get("judge"),
                }
            )
        if not approved:
            fallback += 1
            general.append(
                {
                    "prompt": item["prompt"],
                    "completion": general_fallback(item["answer"]),
                    "source": "reference",
                    "item_id": item["id"],
                    "answer": item["answer"],
                }
            )
    write_sft_records(data_path(ctx, "sft_reasoning"), reasoning)
    write_sft_records(data_path(ctx, "sft_general"), general)
    stats = {
        **by_kind.pop("total"),
        "by_kind": by_kind,
        "policies": sorted({r.get("policy", "?") for r in records}),
        "sft_reasoning": len(reasoning),
        "sft_general": len(general),
        "general_from_samples": len(general) - fallback,
        "general_fallback": fallback,
        "reasoning_prompts_kept": len({r["item_id"] for r in kept if r["kind"] == "reasoning"}),
    }
    atomic_write_json(ctx.run.data_dir() / "rejection_stats.json", stats)
    mark_done(ctx.run, STAGE, "merge", stats)
    return stats
