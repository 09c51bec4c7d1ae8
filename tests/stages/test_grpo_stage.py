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
