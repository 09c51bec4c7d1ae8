"""One real GRPO step on the tiny run: the rollout shards apply the configured rewards (the soft
overlong penalty in tokens included), and a train job rerun after a kill between publishing
v(N+1) and logging its metrics logs them exactly once."""

from __future__ import annotations

import pytest
from tiny_stage_run import clone_run

from r1hpc.fsio import read_jsonl
from r1hpc.stages.common import StageContext, read_metrics
from r1hpc.stages.grpo import prepare_stage, rollout_task, train_task
from r1hpc.store import list_versions, read_step_shards


def _expected_overlong(tokens: int, max_length: int, cache: int) -> float:
    """DAPO's soft overlong punishment, written out independently of r1hpc.rewards.length."""
    if tokens <= max_length - cache:
        return 0.0
    return -1.0 if tokens > max_length else (max_length - cache - tokens) / cache


def test_grpo_step_scores_overlong_in_tokens_and_logs_metrics_once(tmp_path):
    # 64 new tokens at most; the last 48 are the soft window, so most tiny-model samples are in it.
    run_dir = clone_run(
        tmp_path, ["grpo.overlong_cache=48", "r1_zero.rewards={accuracy_math: 1.0, format: 0.5, overlong: 1.0}"]
    )
    ctx = StageContext(run_dir)
    prepare_stage(str(run_dir), "r1_zero")
    for shard in range(ctx.cfg.grpo.rollout_shards):
        rollout_task(str(run_dir), "r1_zero", 0, shard)
    records = read_step_shards(ctx.run, "r1_zero", 0, ctx.cfg.grpo.rollout_shards)
    assert len(records) == ctx.cfg.grpo.prompts_per_step * ctx.cfg.grpo.group_size
    penalties = []
    for r in records:
        expected = _expected_overlong(len(r["response_ids"]), 64, 48)
        assert r["rewards"]["overlong"] == pytest.approx(expected)
        acc, fmt = (r["rewards"][k] or 0.0 for k in ("accuracy_math", "format"))
        assert r["reward"] == pytest.approx(acc + 0.5 * fmt + expected)
        penalties.append(expected)
    assert min(penalties) < 0, "no sample reached the soft window: the test would not see the penalty"

    first = train_task(str(run_dir), "r1_zero", 0)
    assert [m["step"] for m in read_metrics(run_dir, "r1_zero")] == [0]
    # A train job killed after publishing v1 but before logging: its rerun logs the step from v1's meta.
    metrics_file = ctx.run.metrics_path("r1_zero")
    metrics_file.unlink()
    again = train_task(str(run_dir), "r1_zero", 0)
    assert again["skipped"] == "already published"
    rows = read_jsonl(metrics_file)
    assert len(rows) == 1 and rows[0]["loss"] == pytest.approx(first["loss"])
    train_task(str(run_dir), "r1_zero", 0)
    assert len(read_jsonl(metrics_file)) == 1
    assert [v.version for v in list_versions(ctx.run, "r1_zero")] == [0, 1]


def test_general_prompts_are_rewarded_by_the_reward_model_and_the_form_rules(tmp_path):
    """R1's RL for all scenarios: a share of the step's prompts are general requests with no
    reference answer; their reward is the learned reward model's plus the rules that need none."""
    from r1hpc.model.tokenizer import load_tokenizer
    from r1hpc.stages.common import prompt_format, read_data
    from r1hpc.stages.grpo import step_prompts
    from r1hpc.stages.reward_model import score_with_reward_model, train_reward_model
    from r1hpc.store import latest_model

    run_dir = clone_run(
        tmp_path,
        [
            "reward_model.pairs=32",
            "reward_model.train.epochs=1",
            "r1_zero.general_share=0.5",
            "r1_zero.reward_model_weight=0.5",
            "r1_zero.rewards={accuracy_math: 1.0, format: 0.5, language_consistency: 0.25}",
        ],
    )
    ctx = StageContext(run_dir)
    train_reward_model(str(run_dir))
    prompts = step_prompts(ctx, "r1_zero", 0)
    # 4 prompts per step, 2 general, one in each shard's slice of 2; the same draw on a rerun
    assert [bool(p.get("general")) for p in prompts] == [False, True, False, True]
    assert step_prompts(ctx, "r1_zero", 0) == prompts and step_prompts(ctx, "r1_zero", 1) != prompts
    general_ids = {g["id"] for g in read_data(ctx, "general_train")}
    assert {p["id"] for p in prompts if p.get("general")} <= general_ids

    prepare_stage(str(run_dir), "r1_zero")
    for shard in range(ctx.cfg.grpo.rollout_shards):
        rollout_task(str(run_dir), "r1_zero", 0, shard)
    records = read_step_shards(ctx.run, "r1_zero", 0, ctx.cfg.grpo.rollout_shards)
    general = [r for r in records if r["data_source"] == "general"]
    assert len(general) == len(records) // 2 and {r["problem_id"] for r in general} <= general_ids
    fmt = prompt_format(
        ctx.cfg, load_tokenizer(latest_model(ctx.run, "r1_zero").path, pad_token=ctx.cfg.model.pad_token)
    )
    by_id = {p["id"]: p for p in prompts}
    rm = score_with_reward_model(
        ctx, [fmt.render(by_id[r["problem_id"]]) for r in general], [r["text"] for r in general]
    )
    for r, score in zip(general, rm):  # no reference: the accuracy reward is not run
        assert r["reward_model"] == pytest.approx(score, abs=1e-6)
        assert r["rewards"]["accuracy_math"] is None
        fmt_r, lang = r["rewards"]["format"], r["rewards"]["language_consistency"] or 0.0
        assert r["reward"] == pytest.approx(0.5 * fmt_r + 0.25 * lang + 0.5 * score)
    for r in records:  # reasoning prompts: the rules alone, as R1 kept the reward model off them
        if r["data_source"] != "general":
            fmt_r, lang = r["rewards"]["format"], r["rewards"]["language_consistency"] or 0.0
            assert r["reward_model"] is None and r["rewards"]["accuracy_math"] in (0.0, 1.0)
            assert r["reward"] == pytest.approx(r["rewards"]["accuracy_math"] + 0.5 * fmt_r + 0.25 * lang)

    train_task(str(run_dir), "r1_zero", 0)
    (row,) = read_metrics(run_dir, "r1_zero")
    reasoning = [r for r in records if r["data_source"] != "general"]
    assert row["reward_accuracy_math"] == pytest.approx(
        sum(r["rewards"]["accuracy_math"] for r in reasoning) / len(reasoning)
    )
    assert row["reward_model_general"] == pytest.approx(sum(r["reward_model"] for r in general) / len(general))
