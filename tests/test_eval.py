"""Held-out evaluation (r1hpc.stages.eval): the metrics on hand-made records with known answers,
grading in the real worker pool, and eval_task / eval_summary for real on a tiny run."""

from __future__ import annotations

import json
import math

import pytest

from r1hpc.config import load_config, write_resolved
from r1hpc.eval_metrics import Z95, majority_vote, mean_interval, paired_difference, summarize
from r1hpc.stages.common import StageContext, publish_policy
from r1hpc.stages.eval import eval_stage_name, eval_summary, eval_task, score_samples, shard_slice, summary_path
from r1hpc.store import read_shard, shard_is_complete


def rec(pid: str, correct: float, answer: str | None, difficulty: int = 1, fmt: float = 1.0, tokens: int = 10):
    return {
        "problem_id": pid,
        "difficulty": difficulty,
        "kind": "arith" if pid == "a" else "linear",
        "correct": correct,
        "format": fmt,
        "answer": answer,
        "response_tokens": tokens,
        "finish_reason": "stop",
        "model_version": "v0003",
    }


# ---------------------------------------------------------------- metrics on known records


def test_majority_vote_cases():
    assert majority_vote(["5", "5", "6"], [1, 1, 0]) == 1.0  # right answer wins
    assert majority_vote(["6", "6", "5"], [0, 0, 1]) == 0.0  # wrong answer wins despite one right
    assert majority_vote(["5", "6"], [1, 0]) == 0.5  # tie: half the tied answers right
    assert majority_vote(["5", "6", "7"], [1, 0, 0]) == pytest.approx(1 / 3)
    assert majority_vote(["3", "3", "4", "4"], [0, 0, 0, 0]) == 0.0  # all wrong
    assert majority_vote([None, None], [0, 0]) == 0.0  # nobody answered
    assert majority_vote([None, None, "5"], [0, 0, 1]) == 1.0  # no-answer samples do not vote
    with pytest.raises(ValueError, match="2 answers but 1 grades"):
        majority_vote(["1", "2"], [1])


def test_summarize_known_values_and_normal_interval():
    k = 4
    records = (
        [rec("a", 1, "5"), rec("a", 1, "5"), rec("a", 0, "6"), rec("a", 0, None)]  # pass .5, cons 1
        + [rec("b", 0, "2", 2), rec("b", 1, "3", 2), rec("b", 0, "2", 2), rec("b", 0, "4", 2)]  # .25, cons 0
        + [rec("c", 1, "9", 2, fmt=0, tokens=30)] * 2
        + [rec("c", 0, "8", 2, fmt=0, tokens=30)] * 2  # .5, tie .5
    )
    s = summarize(records, k)
    per_problem = [0.5, 0.25, 0.5]
    mean = sum(per_problem) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_problem) / 2)
    assert s["pass_at_1"] == pytest.approx(mean)
    assert s["pass_at_1_ci"] == pytest.approx([mean - Z95 * sd / math.sqrt(3), mean + Z95 * sd / math.sqrt(3)])
    assert s["pass_at_1_ci_method"] == "normal"
    assert s["cons_at_k"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert s["format_rate"] == pytest.approx(8 / 12)
    assert s["answered_rate"] == pytest.approx(11 / 12)
    assert s["mean_response_tokens"] == pytest.approx((8 * 10 + 4 * 30) / 12)
    assert set(s["by_difficulty"]) == {"1", "2"}
    assert s["by_difficulty"]["1"]["pass_at_1"] == 0.5 and s["by_difficulty"]["1"]["cons_at_k"] == 1.0
    assert s["by_difficulty"]["2"]["pass_at_1"] == pytest.approx(0.375)
    assert s["by_difficulty"]["2"]["problems"] == 2
    assert list(s["by_kind"]) == ["arith", "linear"]  # problem a is arith, b and c linear
    assert s["by_kind"]["arith"]["pass_at_1"] == 0.5 and s["by_kind"]["arith"]["problems"] == 1
    assert s["by_kind"]["linear"]["pass_at_1"] == pytest.approx(0.375) and s["by_kind"]["linear"]["problems"] == 2
    assert s["model_versions"] == ["v0003"]


def test_all_wrong_gives_wilson_interval_not_a_point():
    n = 5
    s = summarize([rec(f"p{i}", 0, "1") for i in range(n) for _ in range(2)], k=2)
    assert s["pass_at_1"] == 0.0 and s["cons_at_k"] == 0.0
    assert s["pass_at_1_ci_method"] == "wilson"
    # Wilson at p = 0: [0, z^2 / (n + z^2)]
    assert s["pass_at_1_ci"] == pytest.approx([0.0, Z95**2 / (n + Z95**2)])


def test_k1_pass_equals_cons_and_interval_matches_binomial_normal():
    correct = [1, 0, 1, 1, 0, 1, 1, 1]
    s = summarize([rec(f"p{i}", c, str(i)) for i, c in enumerate(correct)], k=1)
    p = sum(correct) / len(correct)
    assert s["pass_at_1"] == s["cons_at_k"] == pytest.approx(p)
    lo, hi, method = mean_interval(correct)
    half = Z95 * math.sqrt(p * (1 - p) * len(correct) / (len(correct) - 1)) / math.sqrt(len(correct))
    assert method == "normal" and (lo, hi) == pytest.approx((p - half, min(1.0, p + half)))


def test_summarize_rejects_wrong_sample_counts_and_missing_keys():
    with pytest.raises(ValueError, match="expected k=2 samples per problem; got a: 3"):
        summarize([rec("a", 1, "1")] * 3, k=2)
    bad = rec("a", 1, "1")
    del bad["correct"]
    with pytest.raises(ValueError, match=r"record 0 \(problem 'a'\) lacks \['correct'\]"):
        summarize([bad], k=1)


def src_rec(pid: str, source: str, correct: float, answer: str | None, fmt: float = 1.0) -> dict:
    """A record of a file problem (difficulty 0 = unknown) from benchmark `source`."""
    return {**rec(pid, correct, answer, difficulty=0, fmt=fmt), "data_source": source}


def two_source_records() -> list[dict]:
    """3 problems x k=2: math500 m1 (2/2 right, cons 1), m2 (1/2, a tie: cons .5); aime24 a1 (0/2, cons 0)."""
    return (
        [src_rec("m1", "math500", 1, "5"), src_rec("m1", "math500", 1, "5")]
        + [src_rec("m2", "math500", 1, "3"), src_rec("m2", "math500", 0, "4")]
        + [src_rec("a1", "aime24", 0, "1", fmt=0), src_rec("a1", "aime24", 0, "1", fmt=0)]
    )


def test_summarize_per_data_source_by_hand():
    s = summarize(two_source_records(), k=2)
    assert s["problems"] == 3 and s["pass_at_1"] == pytest.approx(1.5 / 3) and s["cons_at_k"] == pytest.approx(1.5 / 3)
    assert list(s["by_source"]) == ["aime24", "math500"]
    m, a = s["by_source"]["math500"], s["by_source"]["aime24"]
    assert (m["problems"], m["samples"], a["problems"], a["samples"]) == (2, 4, 1, 2)
    # math500: per-problem pass [1, .5] -> mean .75, sd sqrt(.125); normal interval clipped at 1
    half = Z95 * math.sqrt(0.125) / math.sqrt(2)
    assert m["pass_at_1"] == 0.75 and m["pass_at_1_ci"] == pytest.approx([0.75 - half, 1.0])
    assert m["pass_at_1_ci_method"] == "normal"
    assert m["cons_at_k"] == 0.75 and m["format_rate"] == 1.0
    # aime24: one problem, all wrong -> Wilson for n=1 at p=0: [0, z^2 / (1 + z^2)]
    assert a["pass_at_1"] == 0.0 and a["cons_at_k"] == 0.0 and a["format_rate"] == 0.0
    assert a["pass_at_1_ci"] == pytest.approx([0.0, Z95**2 / (1 + Z95**2)]) and a["pass_at_1_ci_method"] == "wilson"
    assert "by_difficulty" not in s  # every difficulty 0 (unknown): no per-difficulty breakdown
    assert s["problem_source"] == {"a1": "aime24", "m1": "math500", "m2": "math500"}
    assert s["per_problem_pass"] == {"a1": 0.0, "m1": 1.0, "m2": 0.5}


def test_records_without_data_source_read_as_generated():
    old = [rec("a", 1, "5"), rec("a", 0, "6"), rec("b", 1, "2", 2), rec("b", 1, "2", 2)]
    s = summarize(old, k=2)
    overall = {key: s[key] for key in s["by_source"]["generated"]}
    assert list(s["by_source"]) == ["generated"] and s["by_source"]["generated"] == overall
    assert s["problem_source"] == {"a": "generated", "b": "generated"}
    assert set(s["by_difficulty"]) == {"1", "2"}
    # old shards beside new ones: a record with data_source "generated" and one without are the same source
    mixed = summarize(old + [{**rec("c", 1, "1"), "data_source": "generated"}] * 2, k=2)
    assert list(mixed["by_source"]) == ["generated"] and mixed["by_source"]["generated"]["problems"] == 3


def test_one_problem_under_two_sources_is_an_error():
    with pytest.raises(ValueError, match=r"problem ids \['x'\] appear under more than one data_source"):
        summarize([src_rec("x", "gsm8k", 1, "1"), src_rec("x", "math500", 1, "1")], k=2)


def test_paired_difference_per_source():
    before = summarize(two_source_records(), k=2)
    after = summarize([{**r, "correct": 1.0} for r in two_source_records()], k=2)  # every sample right
    m = paired_difference(after, before, "math500")  # diffs [0, .5]
    half = Z95 * math.sqrt(0.125) / math.sqrt(2)
    assert m["problems"] == 2 and m["mean"] == 0.25 and m["ci"] == pytest.approx([0.25 - half, 0.25 + half])
    assert paired_difference(after, before, "aime24") == {"mean": 1.0, "ci": [1.0, 1.0], "problems": 1}
    assert paired_difference(after, before)["problems"] == 3
    assert paired_difference(after, before, "gsm8k") is None
    legacy = {key: v for key, v in before.items() if key != "problem_source"}  # written before problem_source
    assert paired_difference(after, legacy, "math500") is None
    assert paired_difference(legacy, legacy, "generated")["problems"] == 3


def test_shard_slice_covers_every_problem_once():
    for n, shards in ((10, 3), (2, 4), (5, 1)):
        covered = [i for s in range(shards) for i in range(*shard_slice(n, shards, s))]
        assert covered == list(range(n))
    with pytest.raises(ValueError, match="shard 3 out of range: eval.shards=3"):
        shard_slice(10, 3, 3)


def test_score_samples_in_worker_pool_known_answers():
    problems = [{"prompt": "What is 2 + 3?", "answer": "5"}] * 4 + [{"prompt": "What is 1 / 2?", "answer": "1/2"}]
    texts = [
        " 2 + 3 = 5 </think> <answer> 5 </answer>",  # right, formatted
        " add them </think> <answer> \\frac{10}{2} </answer>",  # right, other form
        " guess </think> <answer> 6 </answer>",  # wrong
        " I do not know",  # no answer at all
        " half </think> <answer> 0.5 </answer>",
    ]  # right as a decimal
    got = score_samples(texts, problems, timeout_s=10, memory_mb=1024)
    assert [g["correct"] for g in got] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert [g["format"] for g in got] == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert got[0]["answer"] == got[1]["answer"] == "5"  # canonical forms vote together
    assert got[2]["answer"] == "6" and got[3]["answer"] is None and got[4]["answer"] == "1/2"


# ---------------------------------------------------------------- eval_task on a tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run with 6 held-out problems and a 1-layer model published as models/base."""
    from r1hpc.model.factory import ModelSize, build_model
    from r1hpc.model.pretrain_corpus import build_corpus
    from r1hpc.model.tokenizer import train_tokenizer
    from r1hpc.tasks.dataset import generate_problems, write_jsonl

    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"runs_dir={root}",
            "name=t",
            "data.heldout_problems=6",
            "eval.problems=5",
            "eval.k=2",
            "eval.shards=2",
            "eval.max_new_tokens=12",
        ],
    )
    write_resolved(cfg, argv=["test"])
    run_dir = cfg.run_dir
    ctx = StageContext(run_dir)
    problems = generate_problems(0, "heldout", 6)
    for p in problems[:2]:  # the first two as if from a benchmark file; the rest generated (no data_source)
        p["data_source"] = "math500"
    write_jsonl(ctx.run.data_dir() / "problems_heldout.jsonl", problems)
    tok = train_tokenizer(build_corpus(0, 200), vocab_size=400)
    model = build_model(
        ModelSize(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, max_positions=512),
        vocab_size=len(tok),
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        seed=0,
    )
    publish_policy(ctx, "base", 0, model, tok)
    return run_dir


def test_eval_task_and_summary_for_real(tiny_run):
    run = StageContext(tiny_run).run
    stage = eval_stage_name("base")
    out = [eval_task(str(tiny_run), "base", shard) for shard in (0, 1)]
    assert [o["problems"] for o in out] == [2, 3] and [o["samples"] for o in out] == [4, 6]
    records = [r for s in (0, 1) for r in read_shard(run.shard_path(stage, 0, s, create=False))]
    heldout = [json.loads(line) for line in (tiny_run / "data" / "problems_heldout.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in records[::2]] == [p["id"] for p in heldout[:5]]  # first eval.problems, in order
    for r in records:
        assert r["correct"] in (0.0, 1.0) and r["format"] in (0.0, 1.0)
        assert r["answer"] is None or isinstance(r["answer"], str)
        assert 1 <= r["response_tokens"] <= 12 and r["model_version"] == "v0000"
        assert r["score_status"]["accuracy_math"] == "ok"
        assert r["language"] == "en" and r["mixed_language"] in (0.0, 1.0) and 0.0 <= r["language_consistency"] <= 1.0
    assert [r["data_source"] for r in records[::2]] == ["math500"] * 2 + ["generated"] * 3

    # idempotent: a rerun finds its shard complete and leaves it untouched
    before = run.shard_path(stage, 0, 0, create=False).read_bytes()
    assert eval_task(str(tiny_run), "base", 0)["skipped"] == "already complete"
    assert run.shard_path(stage, 0, 0, create=False).read_bytes() == before

    summary = eval_summary(str(tiny_run), "base")
    assert summary["problems"] == 5 and summary["samples"] == 10 and summary["k"] == 2
    assert summary["pass_at_1"] == pytest.approx(sum(r["correct"] for r in records) / 10)
    lo, hi = summary["pass_at_1_ci"]
    assert 0.0 <= lo <= summary["pass_at_1"] <= hi <= 1.0
    assert summary["temperature"] == 0.6 and summary["top_p"] == 0.95
    assert {src: m["problems"] for src, m in summary["by_source"].items()} == {"generated": 3, "math500": 2}
    assert summary["mixed_language_rate"] == pytest.approx(sum(r["mixed_language"] for r in records) / 10)
    assert list(summary["by_language"]) == ["en"] and "general" not in summary  # no reward model in this run
    assert json.loads(summary_path(tiny_run, "base").read_text())["by_source"] == summary["by_source"]
    path = summary_path(tiny_run, "base")
    first = path.read_bytes()
    eval_summary(str(tiny_run), "base")
    assert path.read_bytes() == first  # same shards -> the same file


def test_eval_task_is_deterministic_after_a_lost_shard(tiny_run):
    run = StageContext(tiny_run).run
    stage = eval_stage_name("base")
    eval_task(str(tiny_run), "base", 1)
    path = run.shard_path(stage, 0, 1, create=False)
    old = read_shard(path)
    path.unlink()  # a shard lost (or a killed task that never published): the rerun regenerates it
    eval_task(str(tiny_run), "base", 1)
    assert shard_is_complete(run, stage, 0, 1)
    assert [r["text"] for r in read_shard(path)] == [r["text"] for r in old]


def test_eval_errors_name_what_is_missing(tiny_run):
    with pytest.raises(Exception, match="models/r1_zero"):
        eval_task(str(tiny_run), "r1_zero", 0)
    with pytest.raises(ValueError, match="shard 2 out of range: eval.shards=2"):
        eval_task(str(tiny_run), "base", 2)
    with pytest.raises(Exception, match="eval-sft"):
        eval_summary(str(tiny_run), "sft")
