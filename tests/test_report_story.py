"""The report's "The R1 story in this run" (r1hpc.report_story): the verdict read from a paired
interval, the claims table against the recipe, and the section built from a synthetic run directory
with eval summaries and per-problem eval records as r1hpc.stages.eval writes them."""

from __future__ import annotations

import re
import statistics

import pytest
from PIL import Image

from r1hpc import recipe
from r1hpc.eval_metrics import summarize, summarize_general
from r1hpc.fsio import append_jsonl, atomic_write_json
from r1hpc.report import build_report
from r1hpc.report_story import CONTRADICTED, NOT_SHOWN, SHOWN, STORY, verdict
from r1hpc.stages.eval import eval_stage_name
from r1hpc.store import RunDir, publish_shard

K = 4


def test_verdict_on_hand_made_intervals():
    assert verdict([0.01, 0.30]) == SHOWN
    assert verdict([-0.10, 0.20]) == NOT_SHOWN
    assert verdict([-0.30, -0.02]) == CONTRADICTED
    assert verdict([0.0, 0.2]) == NOT_SHOWN  # an end at 0 is not entirely on a side
    assert verdict([-0.2, 0.0]) == NOT_SHOWN
    # a claim that something falls: the sides swap
    assert verdict([-0.30, -0.02], sign=-1) == SHOWN
    assert verdict([0.01, 0.30], sign=-1) == CONTRADICTED
    assert verdict([-0.10, 0.20], sign=-1) == NOT_SHOWN
    with pytest.raises(ValueError, match="sign"):
        verdict([0.1, 0.2], sign=0)


def test_story_table_names_recipe_stages():
    evaluated = set(recipe.evaluated())
    for entry in STORY:
        for claim in entry.claims:
            assert claim.stage in evaluated and claim.baseline in evaluated, claim
            assert claim.text.endswith(".") and claim.figures
    # every evaluated stage but the two bases has a claim of its own
    claimed = {c.stage for e in STORY for c in e.claims}
    assert claimed == evaluated - {"base", "student_base"}


def records_for(correct: list[int], fmt: float | None = None, tokens: int = 40) -> list[dict]:
    """Eval records: problem i has correct[i] of K right; format 1 for the right samples (or `fmt`
    for all); response tokens tokens + 10 * correct[i] + sample index."""
    out = []
    for i, c in enumerate(correct):
        for j in range(K):
            out.append(
                {
                    "problem_id": f"p{i}",
                    "difficulty": 1,
                    "correct": float(j < c),
                    "format": fmt if fmt is not None else float(j < c),
                    "answer": "7" if j < c else f"w{j}",
                    "response_tokens": tokens + 10 * c + j,
                    "finish_reason": "stop",
                    "model_version": "v0003",
                }
            )
    return out


def paired(after: list[float], before: list[float], digits: int = 3) -> str:
    """The expected paired difference, computed here: mean +- 1.96 sd / sqrt(n) of the differences."""
    diffs = [a - b for a, b in zip(after, before)]
    mean = sum(diffs) / len(diffs)
    half = 1.959963984540054 * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{mean:+.{digits}f} [{mean - half:+.{digits}f}, {mean + half:+.{digits}f}] ({len(diffs)})"


@pytest.fixture
def story_run(tmp_path):
    run = tmp_path / "story"
    n = 20
    evals = {  # stage: (correct per problem, format for every sample or None = right ones, base tokens)
        "base": ([0] * 18 + [1] * 2, None, 40),
        "r1_zero": ([4] * 10 + [2] * 8 + [0] * 2, None, 60),
        "cold_start": ([1] * n, 1.0, 40),
        "reasoning_rl": ([3] * 18 + [0] * 2, None, 60),
        "student_base": ([0] * n, None, 40),
        "distill": ([2] * 10 + [1] * 10, None, 40),
        "distill_rl": ([3] * 10 + [2] * 10, None, 40),
    }
    for stage, (correct, fmt, tokens) in evals.items():
        records = records_for(correct, fmt, tokens)
        atomic_write_json(run / "eval" / f"{stage}.json", {"stage": stage, **summarize(records, K)})
        if stage in ("base", "r1_zero", "cold_start"):  # per-problem records of three stages only
            publish_shard(RunDir(run), eval_stage_name(stage), 0, 0, records)
    for step in range(5):
        append_jsonl(
            run / "metrics" / "r1_zero.jsonl",
            {"step": step, "reward_accuracy_math": 0.1 * step, "response_length_mean": 40.0 + 8 * step},
        )
    # rl_all trained two steps but was never evaluated: it ran, its claims are not measured
    for step in range(2):
        append_jsonl(run / "metrics" / "rl_all.jsonl", {"step": step, "reward_accuracy_math": 0.5})
    return run


def test_story_section_from_a_synthetic_run(story_run, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no sacct
    text = build_report(story_run).read_text()
    assert text.index("## The R1 story in this run") < text.index("## What this shows")
    story = text.split("## The R1 story in this run")[1].split("## What this shows")[0]

    def entry(title: str) -> str:
        return story.split(f"### {title}")[1].split("###")[0]

    # every stage that ran has its entry; rejection + sft did not run: left out, not "failed"
    for title in (
        "r1_zero: pure RL from the base",
        "cold_start: readable long-CoT SFT",
        "reasoning_rl: RL after the cold start",
        "rl_all: RL for all scenarios (DeepSeek-R1)",
        "distill: SFT of a small student on the teacher's samples",
        "distill_rl: RL directly on the student",
    ):
        assert f"### {title}" in story
    assert "### rejection + sft" not in story and "sft - " not in story
    assert "failed" not in story and "not run |" not in story

    base = [0.0] * 18 + [0.25] * 2
    r1_zero = [1.0] * 10 + [0.5] * 8 + [0.0] * 2
    z = entry("r1_zero: pure RL from the base")
    assert "AIME pass@1 15.6 -> 71.0" in z and "(plots/rl_stages.png)" in z
    assert (
        f"r1_zero - base, held-out pass@1: {paired(r1_zero, base)}. **shown**: r1_zero's held-out pass@1 "
        "is higher than base's, beyond the noise of 20 shared problems."
    ) in z
    # response length from the per-problem records: mean tokens per problem 41.5 + 10c (base), 61.5 + 10c
    z_tokens = [61.5 + 10 * c for c in [4] * 10 + [2] * 8 + [0] * 2]
    b_tokens = [41.5 + 10 * c for c in [0] * 18 + [1] * 2]
    assert (
        f"r1_zero - base, held-out response length (tokens): {paired(z_tokens, b_tokens, 1)}. **shown**: "
        "r1_zero's held-out response length (tokens) is higher than base's"
    ) in z
    # cold_start: format 1.0 on every sample against base's right samples only (0.25 on p18, p19)
    c = entry("cold_start: readable long-CoT SFT")
    assert f"cold_start - base, held-out format rate: {paired([1.0] * 20, base)}. **shown**" in c
    # reasoning_rl: beats its cold start; against r1_zero the interval straddles 0
    r = entry("reasoning_rl: RL after the cold start")
    rl = [0.75] * 18 + [0.0] * 2
    assert f"reasoning_rl - cold_start, held-out pass@1: {paired(rl, [0.25] * 20)}. **shown**" in r
    assert (
        f"reasoning_rl - r1_zero, held-out pass@1: {paired(rl, r1_zero)}. **not shown (the interval includes 0)**: "
        "over 20 shared problems this run cannot tell reasoning_rl from r1_zero."
    ) in r
    # reasoning_rl's per-problem records were not kept: its mixed-language claims are not measured
    assert r.count("**not measured**: no per-problem eval records of reasoning_rl") == 2
    # rl_all ran (metrics) but was not evaluated
    assert entry("rl_all: RL for all scenarios (DeepSeek-R1)").count("**not measured**: rl_all was not evaluated") == 4
    # distillation loses to RL on this student: contradicted
    d = entry("distill: SFT of a small student on the teacher's samples")
    distill, distill_rl = [0.5] * 10 + [0.25] * 10, [0.75] * 10 + [0.5] * 10
    assert f"distill - student_base, held-out pass@1: {paired(distill, [0.0] * 20)}. **shown**" in d
    assert (
        f"distill - distill_rl, held-out pass@1: {paired(distill, distill_rl)}. **contradicted**: "
        "distill's held-out pass@1 is lower than distill_rl's, beyond the noise of 20 shared problems."
    ) in d
    assert "Claims: 6 shown, 1 not shown (the interval includes 0), 1 contradicted, 6 not measured" in story
    for name in ("story_paired.png", "rl_stages.png", "heldout_pass1.png"):
        with Image.open(story_run / "plots" / name) as im:
            im.verify()


def test_story_needs_per_problem_records_for_format(story_run, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    for shard in (story_run / "rollouts").rglob("shard_*.jsonl"):
        shard.unlink()
    story = build_report(story_run).read_text().split("## What this shows")[0]
    assert (
        "cold_start - base, held-out format rate: -. **not measured**: no per-problem eval records of "
        "cold_start (rollouts/eval-cold_start/step_0000/)."
    ) in story
    assert "r1_zero - base, held-out pass@1: +0.675" in story  # pass@1 needs only the summaries


def test_empty_run_has_no_story_entries(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    story = build_report(run).read_text().split("## What this shows")[0]
    assert "No stage of the recipe has run yet." in story and "###" not in story


def test_gpu_hours_from_sacct_reach_the_report(tmp_path, monkeypatch):
    """GPU-hours come only from sacct (elapsed x allocated GPUs); faked here, the report's sentence
    and the compute plot carry them, and local jobs add none."""
    import r1hpc.report as report

    run = tmp_path / "gpu"
    for stage, executor, tid in (("r1_zero", "slurm", "9001"), ("base", "local", "111")):
        append_jsonl(
            run / "jobs.jsonl",
            {"stage": stage, "kind": "train", "executor": executor, "job_id": tid, "task_ids": [tid]},
        )
    monkeypatch.setattr(report, "_sacct_seconds", lambda ids: {"9001": [1800.0, 4 * 1800.0]})  # 30 min on 4 GPUs
    times = report.job_times(run)
    assert times["r1_zero"]["gpu_seconds"] == {"train": 7200.0} and times["base"]["gpu_seconds"] == {}
    text = build_report(run).read_text()
    assert (
        "Compute: 30.0 job-minutes in all; r1_zero took the most (30.0 min, 100%); 2.00 GPU-hours from sacct." in text
    )
    with Image.open(run / "plots" / "compute_time.png") as im:
        im.verify()
        assert im.size[0] > 1000  # two panels: time and GPU-hours


def language_records(correct: list[int], mixed: list[int], langs: list[str] | None = None) -> list[dict]:
    """records_for(correct) with problem i's first mixed[i] of K samples mixing languages, and its language."""
    out = records_for(correct)
    for r in out:
        r["language"] = (langs or ["en"] * len(correct))[int(r["problem_id"][1:])]
    for i in range(len(correct)):
        group = [r for r in out if r["problem_id"] == f"p{i}"]
        for j, r in enumerate(group):
            r["mixed_language"] = float(j < mixed[i])
            r["language_consistency"] = 0.5 if j < mixed[i] else 1.0
    return out


def general_summary_of(per_prompt: list[float]) -> dict:
    """A summary's "general" from K samples per prompt that all score the prompt's value."""
    records = [
        {
            "prompt_id": f"g{i}",
            "rm_score": v,
            "helpfulness": v,
            "harmlessness": v,
            "response_tokens": 9,
            "reward_model_version": "v0000",
        }
        for i, v in enumerate(per_prompt)
        for _ in range(K)
    ]
    return summarize_general(records, K)


@pytest.fixture
def language_run(tmp_path):
    """r1_zero mixes languages on most problems, cold_start on a few, reasoning_rl on none; sft and
    rl_all were evaluated on the general prompts by the reward model, rl_all higher."""
    run = tmp_path / "lang"
    n = 20
    langs = ["en"] * 10 + ["ru"] * 10
    evals = {
        "r1_zero": ([2] * n, [4] * 12 + [2] * 8),
        "cold_start": ([2] * n, [1] * 10 + [0] * 10),
        "reasoning_rl": ([3] * n, [0] * n),
        "sft": ([2] * n, [0] * n),
        "rl_all": ([2] * n, [0] * n),
    }
    general = {
        "sft": [0.40 + 0.01 * i for i in range(10)],
        "rl_all": [0.55 + 0.01 * i + 0.02 * (i % 3) for i in range(10)],
    }
    for stage, (correct, mixed) in evals.items():
        records = language_records(correct, mixed, langs)
        summary = {"stage": stage, **summarize(records, K)}
        if stage in general:
            summary["general"] = general_summary_of(general[stage])
        atomic_write_json(run / "eval" / f"{stage}.json", summary)
        publish_shard(RunDir(run), eval_stage_name(stage), 0, 0, records)
    return run, evals, general


def test_language_and_reward_model_claims(language_run, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    run, evals, general = language_run
    text = build_report(run).read_text()
    story = text.split("## The R1 story in this run")[1].split("## What this shows")[0]
    r = story.split("### reasoning_rl: RL after the cold start")[1].split("###")[0]
    rate = {s: [m / K for m in mixed] for s, (_, mixed) in evals.items()}
    assert "R1-Zero's chains of thought mix languages" in r and "(#held-out-evaluation)" in r
    assert (
        f"reasoning_rl - r1_zero, held-out mixed-language rate: {paired(rate['reasoning_rl'], rate['r1_zero'])}. "
        "**shown**: reasoning_rl's held-out mixed-language rate is lower than r1_zero's, beyond the noise of "
        "20 shared problems."
    ) in r
    assert (
        f"reasoning_rl - cold_start, held-out mixed-language rate: "
        f"{paired(rate['reasoning_rl'], rate['cold_start'])}. **shown**"
    ) in r
    a = story.split("### rl_all: RL for all scenarios (DeepSeek-R1)")[1].split("###")[0]
    assert (
        f"rl_all - sft, reward-model score on held-out general prompts: {paired(general['rl_all'], general['sft'])}. "
        "**shown**: rl_all's reward-model score on held-out general prompts is higher than sft's, beyond the "
        "noise of 10 shared prompts."
    ) in a
    # the held-out table's mixed-language column, the per-language table and the general-prompt table
    assert "| mixed-language rate |" in text
    assert re.search(r"\n\| r1_zero \| 0\.500 \[[^|]*\] \| [\d.]+ \| [\d.]+ \| 0\.800 \| ", text)
    assert "| stage | en | ru |" in text
    assert re.search(r"\n\| cold_start \| 0\.500 \[[^|]*\] / 0\.250 \| 0\.500 \[[^|]*\] / 0\.000 \|", text)
    assert "### General prompts scored by the reward model" in text
    sft_mean = sum(general["sft"]) / 10
    assert re.search(
        rf"\n\| sft \| {sft_mean:.3f} \[[^|]*\] \| {sft_mean:.3f} \| {sft_mean:.3f} \| 9\.0 \| 10 x 4 \| v0000 \|", text
    )
    assert "| r1_zero | not measured |" in text.split("### General prompts")[1]


def test_language_claims_not_measured_for_records_without_the_key(language_run, monkeypatch):
    """cold_start evaluated before mixed_language existed (its records lack it): that claim is not
    measured; a run without a reward model has no general figures: not measured either."""
    monkeypatch.setenv("PATH", "/nonexistent")
    run, evals, _ = language_run
    old = records_for(evals["cold_start"][0])
    (run / "rollouts" / eval_stage_name("cold_start")).rename(run / "cold_start_records")
    publish_shard(RunDir(run), eval_stage_name("cold_start"), 0, 0, old)
    atomic_write_json(run / "eval" / "cold_start.json", {"stage": "cold_start", **summarize(old, K)})
    for stage in ("sft", "rl_all"):
        summary = summarize(language_records(*evals[stage]), K)
        atomic_write_json(run / "eval" / f"{stage}.json", {"stage": stage, **summary})
    text = build_report(run).read_text()
    story = text.split("## What this shows")[0]
    assert (
        "reasoning_rl - cold_start, held-out mixed-language rate: -. **not measured**: eval records of cold_start "
        "have no 'mixed_language' (evaluated before it was measured)."
    ) in story
    assert "reasoning_rl - r1_zero, held-out mixed-language rate: " in story and story.count("**shown**") >= 1
    assert (
        "rl_all - sft, reward-model score on held-out general prompts: -. **not measured**: rl_all has no "
        "reward-model score on general prompts (the run has no reward model, or eval.general is off)."
    ) in story
    assert "Not measured: the run has no reward model (or eval.general is off)." in text
    assert re.search(r"\n\| cold_start \| 0\.500 \[[^|]*\] \| [\d.]+ \| [\d.]+ \| - \| ", text)  # old summary: "-"
