"""The general held-out prompts scored by the learned reward model, inside eval's array task
(r1hpc.stages.eval): on a tiny real run with a trained reward model, published apart from the
problem shards, idempotent, regenerated identically when lost, and not measured without a reward
model or with eval.general off."""

from __future__ import annotations

import shutil

import pytest
from tiny_stage_run import clone_run

from r1hpc.eval_metrics import paired_difference, summarize_general
from r1hpc.fsio import read_json
from r1hpc.model.tokenizer import load_tokenizer
from r1hpc.stages.common import StageContext, prompt_format, read_data
from r1hpc.stages.eval import eval_stage_name, eval_summary, eval_task, general_stage_name, summary_path
from r1hpc.stages.reward_model import score_with_reward_model, train_reward_model
from r1hpc.store import latest_model, read_shard

EVAL = ["eval.k=2", "eval.problems=4", "eval.shards=2", "eval.max_new_tokens=24"]
RM = ["reward_model.pairs=32", "reward_model.train.epochs=1", "reward_model.train.save_every=100"]


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    """A tiny run with the base and a trained reward model; base evaluated on both shards."""
    run = clone_run(tmp_path_factory.mktemp("general"), EVAL + RM)
    train_reward_model(str(run))
    return run


def test_general_prompts_scored_by_the_reward_model(rm_run):
    ctx = StageContext(rm_run)
    out = [eval_task(str(rm_run), "base", shard) for shard in (0, 1)]
    general = read_data(ctx, "general_heldout")  # 20 prompts: 10 per shard
    assert [o["general_prompts"] for o in out] == [10, 10] and [o["general_samples"] for o in out] == [20, 20]
    assert [o["problems"] for o in out] == [2, 2]
    # The task that published the last shard wrote the model's summary; the first could not yet.
    path = summary_path(rm_run, "base")
    assert out[0]["summary"] is None and out[1]["summary"] == str(path)
    written = read_json(path)
    records = [
        r for s in (0, 1) for r in read_shard(ctx.run.shard_path(general_stage_name("base"), 0, s, create=False))
    ]
    assert [r["prompt_id"] for r in records[::2]] == [g["id"] for g in general]
    for r in records:
        assert 0.0 <= r["rm_score"] <= 1.0 and r["rm_score"] == pytest.approx(
            0.5 * (r["helpfulness"] + r["harmlessness"])
        )
        assert r["reward_model_version"] == "v0000" and r["model_version"] == "v0000"
    # the score is the one rl_all optimizes: the same rendered prompt + sample, scored again here
    fmt = prompt_format(ctx.cfg, load_tokenizer(latest_model(ctx.run, "base").path, pad_token=ctx.cfg.model.pad_token))
    by_id = {g["id"]: g for g in general}
    again = score_with_reward_model(
        ctx, [fmt.render(by_id[r["prompt_id"]]) for r in records[:4]], [r["text"] for r in records[:4]]
    )
    assert again == pytest.approx([r["rm_score"] for r in records[:4]], abs=1e-6)

    summary = eval_summary(str(rm_run), "base")
    assert written == read_json(path) and written["general"]["rm_score"] == summary["general"]["rm_score"]
    g = summary["general"]
    assert g["prompts"] == 20 and g["samples"] == 40 and g["k"] == 2
    per_prompt = {}
    for r in records:
        per_prompt.setdefault(r["prompt_id"], []).append(r["rm_score"])
    assert g["per_prompt_rm_score"] == pytest.approx({p: sum(v) / 2 for p, v in per_prompt.items()})
    assert g["rm_score"] == pytest.approx(sum(r["rm_score"] for r in records) / 40)
    lo, hi = g["rm_score_ci"]
    assert 0.0 <= lo <= g["rm_score"] <= hi <= 1.0
    assert summary["problems"] == 4  # the problem eval is unchanged beside it

    # idempotent: both outputs complete, a rerun does nothing
    assert eval_task(str(rm_run), "base", 0)["skipped"] == "already complete"


def test_a_lost_general_shard_is_resampled_alone_and_identically(rm_run):
    run = StageContext(rm_run).run
    eval_task(str(rm_run), "base", 1)
    general_path = run.shard_path(general_stage_name("base"), 0, 1, create=False)
    problem_path = run.shard_path(eval_stage_name("base"), 0, 1, create=False)
    old, problems_before = read_shard(general_path), problem_path.read_bytes()
    general_path.unlink()
    out = eval_task(str(rm_run), "base", 1)
    assert out["problems_skipped"] == "already complete" and out["general_samples"] == 20
    assert problem_path.read_bytes() == problems_before
    assert [(r["text"], r["rm_score"]) for r in read_shard(general_path)] == [(r["text"], r["rm_score"]) for r in old]


def test_incomplete_general_shards_are_not_measured_not_fatal(rm_run):
    run = StageContext(rm_run).run
    eval_task(str(rm_run), "base", 0)
    eval_task(str(rm_run), "base", 1)
    path = run.shard_path(general_stage_name("base"), 0, 1, create=False)
    saved = path.read_bytes()
    path.unlink()
    try:
        summary = eval_summary(str(rm_run), "base")
        assert "general" not in summary and "incomplete" in summary["general_not_measured"]
        assert summary["problems"] == 4
    finally:
        path.write_bytes(saved)


def test_without_a_reward_model_or_with_general_off_nothing_is_measured(rm_run, tmp_path):
    for name, extra in (("no_rm", []), ("off", ["eval.general=false"])):
        run = clone_run(tmp_path / name, EVAL + extra)
        if extra:  # the published reward model is there, but eval.general is off
            shutil.copytree(rm_run / "models" / "reward_model", run / "models" / "reward_model")
        out = eval_task(str(run), "base", 0)
        assert "general_prompts" not in out and out["problems"] == 2
        assert not (run / "rollouts" / general_stage_name("base")).exists()
        # no general prompts to wait for: the last problem shard completes the summary
        assert eval_task(str(run), "base", 1)["summary"] == str(summary_path(run, "base"))
        assert "general" not in read_json(summary_path(run, "base"))


def test_summarize_general_and_per_prompt_pairing():
    def recs(scores: dict[str, list[float]]) -> list[dict]:
        return [
            {"prompt_id": p, "rm_score": s, "helpfulness": s, "harmlessness": s, "response_tokens": 5}
            for p, ss in scores.items()
            for s in ss
        ]

    sft = summarize_general(recs({"g1": [0.2, 0.4], "g2": [0.5, 0.5], "g3": [0.1, 0.3]}), k=2)
    rl = summarize_general(recs({"g1": [0.6, 0.6], "g2": [0.7, 0.9], "g3": [0.4, 0.4]}), k=2)
    assert sft["per_prompt_rm_score"] == pytest.approx({"g1": 0.3, "g2": 0.5, "g3": 0.2})
    assert sft["rm_score"] == pytest.approx(1 / 3) and sft["rm_score_ci_method"] == "normal"
    d = paired_difference(
        {"per_problem_pass": rl["per_prompt_rm_score"]}, {"per_problem_pass": sft["per_prompt_rm_score"]}
    )
    assert d["problems"] == 3 and d["mean"] == pytest.approx((0.3 + 0.3 + 0.2) / 3)
    with pytest.raises(ValueError, match="expected k=2 samples per prompt"):
        summarize_general(recs({"g1": [0.2]}), k=2)
    with pytest.raises(ValueError, match="lacks"):
        summarize_general([{"prompt_id": "g1"}], k=1)
