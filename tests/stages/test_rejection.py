"""Rejection sampling: the pure text filters, the merge with exact counts per filter on
hand-written shards, and one real sampling round on the tiny run."""

from __future__ import annotations

import json

import pytest
from tiny_stage_run import clone_run

from r1hpc.stages.common import StageContext
from r1hpc.stages.filters import (
    has_code_block,
    is_mixed_language,
    is_repetitive,
    normalize_text,
    repeated_ngram_fraction,
    target_language_share,
)
from r1hpc.stages.rejection import (
    STAT_KEYS,
    general_fallback,
    merge_records,
    rejection_items,
    rejection_merge,
    rejection_task,
)
from r1hpc.store import latest_model, publish_model, publish_shard, read_step_shards

# ---------------------------------------------------------------- filters


def test_repeated_ngram_fraction_hand_cases():
    # 12 words, 9 four-grams, 4 distinct: 5 repeats
    assert repeated_ngram_fraction("a b c d a b c d a b c d") == pytest.approx(5 / 9)
    assert repeated_ngram_fraction("Step 1: 6 + 13 = 19.") == 0.0
    assert repeated_ngram_fraction("too short") == 0.0
    assert repeated_ngram_fraction("x x x x x x", n=1) == pytest.approx(5 / 6)
    # 8 tokens (the periods count), 6 trigrams, the last two repeat the first two (case-folded)
    assert repeated_ngram_fraction("The Cat sat. the cat SAT.", n=3) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="n must be >= 1"):
        repeated_ngram_fraction("a b", n=0)


def test_is_repetitive_separates_loops_from_worked_steps():
    steps = (
        "Step 1: 12 + 7 = 19.\nStep 2: 19 - 4 = 15.\nStep 3: 15 * 2 = 30. </think> <answer> The answer is 30 </answer>"
    )
    loop = "So 3 + 4 = 7. " * 10
    assert not is_repetitive(steps)
    assert is_repetitive(loop)


def test_language_mix():
    assert target_language_share("The answer is 5") == 1.0
    assert target_language_share("x = 3 + 4") == 1.0  # no words: nothing in another language
    assert target_language_share("The 答案 is 5") == pytest.approx(2 / 4)  # Han counts per character; 5 is no word
    assert is_mixed_language("first сложить then add")
    assert not is_mixed_language("café naïve résumé")
    assert is_mixed_language("The answer is 5", language="zh")
    # the R1 tags are markup: a Russian sample in them is not mixed
    assert not is_mixed_language(" Шаг 1: 1 + 0 = 1. </think> <answer> Ответ: 1. </answer>", language="ru")
    with pytest.raises(ValueError, match="not supported"):
        target_language_share("hi", language="xx")


def test_dedup_normalisation_and_code_blocks():
    assert normalize_text("  The Answer\n\tis  5 ") == "the answer is 5"
    assert normalize_text("ＡＢＣ １２") == "abc 12"  # NFKC: full-width forms
    assert normalize_text("a b") != normalize_text("ab")  # whitespace runs collapse, not vanish
    assert has_code_block("text\n```python\nprint(1)\n```")
    assert not has_code_block("use `x` inline")


# ---------------------------------------------------------------- merge


def _rec(
    item: str, text: str, correct: bool = True, kind: str = "reasoning", lang: float | None = 1.0, finish: str = "stop"
) -> dict:
    return {
        "kind": kind,
        "item_id": item,
        "text": text,
        "correct": correct,
        "finish_reason": finish,
        "prompt": f"q {item}",
        "answer": "1",
        "rewards": {"language_consistency": lang},
    }


GOOD = " Step 1: 1 + 0 = 1. </think> <answer> The answer is 1. </answer>"
HAND_RECORDS = [
    _rec("p1", GOOD),  # kept
    _rec("p1", GOOD.upper()),  # duplicate after normalisation
    _rec("p1", " Step 1: 0 + 1 = 1. </think> <answer> 1 </answer>"),  # capped (keep 1 per prompt)
    _rec("p1", " wrong </think> <answer> 2 </answer>", correct=False),
    _rec("p2", " Schritt: 1 加 0 </think> <answer> 1 </answer>", lang=0.5),  # mixed language (reward)
    _rec("p2", " 1 plus 0 = 1 это </think> <answer> 1 </answer>", lang=None),  # mixed (script check)
    _rec("p2", " So 1 = 1. " * 8, finish="length"),  # overlong (checked before repetition)
    _rec("p2", " So 1 = 1 and 1 = 1. " * 6 + "</think> <answer> 1 </answer>"),  # repetitive
    _rec("p3", " ```\nprint(1)\n``` </think> <answer> 1 </answer>"),  # code block
    _rec("p3", GOOD),  # kept (other prompt: not a duplicate)
    _rec("g1", " ok </think> <answer> fine </answer>", kind="general"),  # kept
    _rec("g1", " no </think> <answer> no </answer>", kind="general", correct=False),
]


def test_merge_records_counts_each_sample_in_its_first_failing_filter():
    kept, stats = merge_records(HAND_RECORDS, keep_per_prompt=1)
    assert stats["total"] == {
        "sampled": 12,
        "correct": 10,
        "dropped_mixed_language": 2,
        "dropped_overlong": 1,
        "dropped_repetitive": 1,
        "dropped_code_block": 1,
        "dropped_duplicate": 1,
        "capped": 1,
        "kept": 3,
    }
    assert stats["general"] == {**dict.fromkeys(STAT_KEYS, 0), "sampled": 2, "correct": 1, "kept": 1}
    assert [(r["item_id"], r["text"]) for r in kept] == [("p1", GOOD), ("p3", GOOD), ("g1", HAND_RECORDS[10]["text"])]
    _, stats2 = merge_records(HAND_RECORDS, keep_per_prompt=2)
    assert stats2["total"]["capped"] == 0 and stats2["total"]["kept"] == 4
    with pytest.raises(ValueError, match="missing key 'correct'"):
        merge_records([{"kind": "reasoning", "item_id": "p", "text": "t"}], 1)


def test_rejection_merge_on_hand_written_shards(tmp_path):
    run = clone_run(tmp_path)
    ctx = StageContext(run)
    items = rejection_items(ctx)
    assert [it["kind"] for it in items].count("reasoning") == ctx.cfg.rejection.prompts == 6
    assert [it["kind"] for it in items].count("general") == ctx.cfg.rejection.general_prompts == 4
    assert items == rejection_items(ctx)  # the seeded draw is stable
    reasoning = [it for it in items if it["kind"] == "reasoning"]
    general = [it for it in items if it["kind"] == "general"]

    def rec(item, text, correct=True, **kw):
        # in the item's language: the tiny task asks in English and Russian, and the text filter
        # drops a Russian prompt's English chain of thought as mixed
        if item.get("language") == "ru":
            text = text.replace("Step", "Шаг").replace("The answer is", "Ответ:")
        r = _rec(item["id"], text, correct=correct, kind=item["kind"], **kw)
        r.update(prompt=item["prompt"], answer=item["answer"], **{k: item[k] for k in ("language",) if k in item})
        return r

    shard0 = [
        rec(reasoning[0], GOOD),
        rec(reasoning[0], GOOD + " "),
        rec(reasoning[1], " x </think> <answer> 9 </answer>", False),
        rec(general[0], " fine </think> <answer> ok </answer>"),
        rec(general[1], " no", False),
    ]
    shard1 = [
        rec(reasoning[2], " 1 加 1 </think> <answer> 2 </answer>", lang=0.5),
        rec(reasoning[2], " So 2. " * 9, finish="length"),
        rec(reasoning[3], GOOD),
    ]
    publish_shard(ctx.run, "rejection", 0, 0, shard0)
    publish_shard(ctx.run, "rejection", 0, 1, shard1)

    stats = rejection_merge(str(run))
    assert {k: stats[k] for k in STAT_KEYS} == {
        "sampled": 8,
        "correct": 6,
        "dropped_mixed_language": 1,
        "dropped_overlong": 1,
        "dropped_repetitive": 0,
        "dropped_code_block": 0,
        "dropped_duplicate": 1,
        "capped": 0,
        "kept": 3,
    }
    assert stats["general_from_samples"] == 1 and stats["general_fallback"] == 3  # 4 general prompts, 1 approved
    sft_reasoning = [json.loads(x) for x in (run / "data" / "sft_reasoning.jsonl").read_text().splitlines()]
    sft_general = [json.loads(x) for x in (run / "data" / "sft_general.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in sft_reasoning] == [reasoning[0]["id"], reasoning[3]["id"]]
    assert sft_reasoning[0]["prompt"] == reasoning[0]["prompt"] and sft_reasoning[0]["completion"] == GOOD
    assert [r["source"] for r in sft_general] == ["rejection", "reference", "reference", "reference"]
    assert sft_general[1]["completion"] == general_fallback(general[1]["answer"])
    on_disk = json.loads((run / "data" / "rejection_stats.json").read_text())
    assert {k: on_disk[k] for k in STAT_KEYS} == {k: stats[k] for k in STAT_KEYS}
    # idempotent: a second call reads the marker and rewrites nothing
    before = (run / "data" / "sft_general.jsonl").stat().st_mtime_ns
    assert rejection_merge(str(run)) == stats
    assert (run / "data" / "sft_general.jsonl").stat().st_mtime_ns == before


def test_rejection_merge_reports_missing_shards(tmp_path):
    run = clone_run(tmp_path)
    publish_shard(StageContext(run).run, "rejection", 0, 0, [])
    with pytest.raises(Exception, match="shard_001"):
        rejection_merge(str(run))


def test_config_asking_for_too_many_prompts_is_a_clear_error(tmp_path):
    run = clone_run(tmp_path, ["rejection.general_prompts=500"])
    with pytest.raises(ValueError, match="rejection.general_prompts = 500.*general_train.jsonl has 40"):
        rejection_items(StageContext(run))


# ---------------------------------------------------------------- one real round


@pytest.mark.slow
def test_rejection_round_samples_scores_and_merges(tmp_path):
    from r1hpc.stages.reward_model import train_reward_model

    run = clone_run(tmp_path, ["reward_model.pairs=16", "reward_model.train.epochs=1"])
    ctx = StageContext(run)
    # The base stands in for the reasoning-RL policy; the judge is a real (briefly trained) reward model.
    publish_model(ctx.run, "reasoning_rl", latest_model(ctx.run, "base").path, version=0)
    train_reward_model(str(run))
    results = [rejection_task(str(run), k) for k in range(2)]
    assert [r["samples"] for r in results] == [10, 10]  # 10 prompts x 2 samples over 2 shards
    records = read_step_shards(ctx.run, "rejection", 0, 2)
    assert {r["kind"] for r in records} == {"reasoning", "general"}
    for r in records:
        if r["kind"] == "general":
            assert 0.0 <= r["judge"]["score"] <= 1.0 and set(r["rewards"]) == {"format", "language_consistency"}
        else:
            assert r["judge"] is None and set(r["rewards"]) == {"accuracy_math", "format", "language_consistency"}
        assert r["policy"] == "reasoning_rl/v0000"
    again = rejection_task(str(run), 0)
    assert again["skipped"] == "already complete"
    stats = rejection_merge(str(run))
    assert stats["sampled"] == 20
    assert (
        stats["correct"]
        == sum(stats[k] for k in STAT_KEYS if k.startswith("dropped_")) + stats["capped"] + stats["kept"]
    )
    assert stats["sft_general"] >= 4  # every general prompt contributes (a sample or its reference)
    with pytest.raises(ValueError, match="outside 0..rejection.shards-1"):
        rejection_task(str(run), 2)
