"""Cold start: readable rewriting, building the set from hand-written R1-Zero shards (correct and
wrong samples, unreadable ones, the human-written fill-up), and the SFT job on the tiny run."""

from __future__ import annotations

import json

import pytest
from tiny_stage_run import clone_run

from r1hpc.rewards.format import format_reward
from r1hpc.rewards.language import language_consistency_reward
from r1hpc.stages.cold_start import build_cold_start, readable_completion, readable_steps, run_cold_start
from r1hpc.stages.common import StageContext, load_policy, read_data, read_metrics
from r1hpc.store import latest_model, publish_shard
from r1hpc.tasks.phrasing import summary_answer

EXAMPLE = {"prompt_ends_with_think": True}


def test_readable_steps_and_format():
    raw = "Step 1: 3 + 4 = 7. 7 * 2 = 14\n<answer>\n2) 7 * 2 = 14\nThe answer is 14. 1.5 stays one step."
    # numbering and tags removed, the repeated step and the answer line dropped, no split at "1.5"
    assert readable_steps(raw) == ["3 + 4 = 7", "7 * 2 = 14", "1.5 stays one step"]
    completion = readable_completion(["3 + 4 = 7", "7 * 2 = 14"], "14")
    assert completion == (
        " Step 1: 3 + 4 = 7.\nStep 2: 7 * 2 = 14. </think> <answer> 7 * 2 = 14. The answer is 14. </answer>"
    )
    assert format_reward(completion, EXAMPLE) == 1.0  # a string check; safe outside the worker pool
    with pytest.raises(ValueError, match="no reasoning steps"):
        readable_completion([], "1")


def test_readable_russian():
    # R1 writes the readable form in the prompt's language: Russian labels and answer sentence,
    # and the Russian labels and answer lines of a sample are recognised as such
    assert readable_steps("Шаг 1: 3 + 4 = 7\nЗатем 7 * 2 = 14.\nИтак, ответ: 14.") == ["3 + 4 = 7", "Затем 7 * 2 = 14"]
    completion = readable_completion(["3 + 4 = 7"], "7", "ru")
    assert completion == " Шаг 1: 3 + 4 = 7. </think> <answer> 3 + 4 = 7. Ответ: 7. </answer>"
    assert language_consistency_reward(completion, {**EXAMPLE, "language": "ru"}) == 1.0
    assert language_consistency_reward(readable_completion(["3 + 4 = 7"], "7"), {**EXAMPLE, "language": "ru"}) == 0.0


def _sample(problem: dict, correct: bool, text: str | None = None) -> dict:
    answer = problem["answer"] if correct else "999"
    return {
        "problem_id": problem["id"],
        "rewards": {"accuracy_math": 1.0 if correct else 0.0, "format": 0.0},
        "text": text or f" {' '.join(problem['solution_steps'])} </think> The answer is {answer}",
        "finish_reason": "stop",
    }


def test_build_from_r1_zero_shards_with_human_fill_up(tmp_path):
    run = clone_run(tmp_path)  # cold_start.examples = 24, grpo.rollout_shards = 2
    ctx = StageContext(run)
    p = read_data(ctx, "problems_train")
    # step 6 (older) and step 7 (newest): p0 solved in both (kept once, from step 7), p1 only wrong,
    # p2 solved but unreadable (a loop), p3 solved in step 6 only, p4 solved with no </think>.
    loop = " 1 + 1 = 2. " * 12 + "</think> <answer> 2 </answer>"
    publish_shard(ctx.run, "r1_zero", 7, 0, [_sample(p[0], True), _sample(p[1], False)])
    publish_shard(
        ctx.run,
        "r1_zero",
        7,
        1,
        [
            _sample(p[2], True, loop),
            _sample(p[4], True, f" {p[4]['solution_steps'][0]} <answer> {p[4]['answer']} </answer>"),
        ],
    )
    publish_shard(ctx.run, "r1_zero", 6, 0, [_sample(p[0], True), _sample(p[3], True)])
    publish_shard(ctx.run, "r1_zero", 6, 1, [_sample(p[1], False)])
    info = build_cold_start(str(run))
    assert info["from_r1_zero"] == 3 and info["from_human"] == 21 and info["examples"] == 24
    assert info["r1_zero_steps_read"] == [7, 6] and info["r1_zero_samples"] == 7
    assert info["r1_zero_correct"] == 5 and info["r1_zero_unreadable"] == 1
    rows = [json.loads(x) for x in (run / "data" / "cold_start.jsonl").read_text().splitlines()]
    assert [(r["problem_id"], r["r1_zero_step"]) for r in rows[:3]] == [
        (p[0]["id"], 7),
        (p[4]["id"], 7),
        (p[3]["id"], 6),
    ]
    assert {r["source"] for r in rows[3:]} == {"human"}
    assert len({r["problem_id"] for r in rows}) == 24  # one example per problem
    assert all(format_reward(r["completion"], EXAMPLE) == 1.0 for r in rows)
    # each example in its prompt's language (configs/tiny.yaml asks in English and Russian)
    language = {q["id"]: q["language"] for q in p}
    assert {language[r["problem_id"]] for r in rows} == {"en", "ru"}
    assert all(summary_answer(language[r["problem_id"]], r["answer"]) in r["completion"] for r in rows)
    assert all(
        language_consistency_reward(r["completion"], {**EXAMPLE, "language": language[r["problem_id"]]}) == 1.0
        for r in rows
    )
    assert build_cold_start(str(run)) == info  # idempotent


def test_build_without_r1_zero_rollouts_is_all_human(tmp_path):
    info = build_cold_start(str(clone_run(tmp_path)))
    assert info["from_r1_zero"] == 0 and info["from_human"] == 24 and info["r1_zero_steps_read"] == []


def test_unknown_problem_id_in_a_shard_is_a_clear_error(tmp_path):
    run = clone_run(tmp_path)
    publish_shard(
        StageContext(run).run, "r1_zero", 0, 0, [{"problem_id": "nope", "text": "x", "rewards": {"accuracy_math": 1.0}}]
    )
    publish_shard(StageContext(run).run, "r1_zero", 0, 1, [])
    with pytest.raises(ValueError, match="problem_id 'nope'.*problems_train"):
        build_cold_start(str(run))


def test_run_cold_start_publishes_a_loadable_model_and_probes_it(tmp_path):
    run = clone_run(tmp_path, ["cold_start.sft.epochs=2"])
    result = run_cold_start(str(run))
    assert result["version"] == "v0000" and result["examples"] == 24 and result["steps"] == 6
    assert result["from_human"] == 24
    for key in ("probe_format", "probe_accuracy", "probe_truncated"):
        assert 0.0 <= result[key] <= 1.0
    rows = read_metrics(run, "cold_start")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["probe_samples"] == 16 and rows[-1]["loss"] < rows[0]["loss"]
    model, tokenizer = load_policy(latest_model(StageContext(run).run, "cold_start"))
    assert model.config.num_hidden_layers == 2 and tokenizer.eos_token_id is not None
    again = run_cold_start(str(run))
    assert again["skipped"] == "already published" and again["probe_format"] == result["probe_format"]


@pytest.mark.slow
def test_cold_start_sft_teaches_the_format(tmp_path):
    """R1's reason for the cold start: readable, well-formed outputs. The tiny base almost never
    writes the exact format; after ~150 SFT steps most samples do (0.69-0.94 measured, depending
    on float summation order, i.e. the thread count)."""
    from r1hpc.stages.cold_start import probe_samples
    from r1hpc.stages.common import stage_seed

    run = clone_run(
        tmp_path,
        [
            "cold_start.examples=60",
            "cold_start.sft.epochs=40",
            "cold_start.sft.batch_size=16",
            "cold_start.sft.micro_batch_size=16",
            "cold_start.sft.save_every=1000",
        ],
    )
    ctx = StageContext(run)
    heldout = read_data(ctx, "problems_heldout")[:16]
    before = probe_samples(ctx, latest_model(ctx.run, "base").path, heldout, stage_seed(0, "cold_start", "probe"))
    after = run_cold_start(str(run))
    assert after["steps"] == 150
    assert before["probe_format"] <= 0.25 and after["probe_format"] >= 0.5, (before, after)
