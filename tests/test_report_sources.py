"""The run report's per-benchmark (data_source) tables: results per model stage x data source and
paired changes along the recipe per data source, only when a run has more than one source."""

from __future__ import annotations

from r1hpc.eval_metrics import summarize
from r1hpc.fsio import atomic_write_json
from r1hpc.report import build_report


def summary_of(stage: str, correct: dict[str, list[int]], k: int = 2, difficulty: int | dict[str, int] = 0) -> dict:
    """An eval summary as eval_summary writes it; correct[source][i] = right samples of problem i of source,
    at `difficulty` (one for all, or per source). source "" = records without data_source (shards written
    before the field existed)."""
    records = []
    for source, counts in correct.items():
        for i, c in enumerate(counts):
            for j in range(k):
                d = difficulty[source] if isinstance(difficulty, dict) else difficulty
                r = {
                    "problem_id": f"{source or 'gen'}-{i}",
                    "difficulty": d,
                    "correct": float(j < c),
                    "format": 1.0,
                    "answer": "7" if j < c else f"w{j}",
                    "response_tokens": 20,
                    "finish_reason": "stop",
                    "model_version": "v0001",
                }
                records.append({**r, "data_source": source} if source else r)
    return {"stage": stage, **summarize(records, k), "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 64}


def write_run(tmp_path, summaries: dict[str, dict]):
    run = tmp_path / "run"
    for stage, s in summaries.items():
        atomic_write_json(run / "eval" / f"{stage}.json", s)
    return run


def test_report_with_two_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    run = write_run(
        tmp_path,
        {
            "base": summary_of("base", {"math500": [0, 1, 2], "gsm8k": [0, 0]}),
            "r1_zero": summary_of("r1_zero", {"math500": [2, 2, 2], "gsm8k": [1, 2]}),
        },
    )
    text = build_report(run).read_text()
    assert "| stage | gsm8k (2) | math500 (3) |" in text
    # base: gsm8k all wrong (Wilson, n=2); math500 pass [0, .5, 1] (normal, clipped), cons [0, tie .5, 1]
    assert "| base | 0.000 [0.000, 0.658] / 0.000 | 0.500 [0.000, 1.000] / 0.500 |" in text
    # r1_zero: gsm8k pass [.5, 1]: .75 +- 1.96 * .3536 / sqrt(2) = .49 -> clipped at 1; math500 all right (Wilson)
    assert "| r1_zero | 0.750 [0.260, 1.000] / 0.750 | 1.000 [0.439, 1.000] / 1.000 |" in text
    assert "| cold_start | not run | not run |" in text
    # paired r1_zero - base: gsm8k diffs [.5, 1]; math500 diffs [1, .5, 0]: .5 +- 1.96 * .5 / sqrt(3);
    # all five: [.5, 1, 1, .5, 0], mean .6, sd .4183 -> +- .3666
    assert "| change | gsm8k | math500 | all sources |" in text
    assert (
        "| r1_zero vs base | +0.750 [+0.260, +1.240] (2) | +0.500 [-0.066, +1.066] (3) | +0.600 [+0.233, +0.967] (5) |"
    ) in text
    assert "Per difficulty" not in text  # every difficulty 0 (unknown)
    assert "paired over the same 5 problems the change is +0.600 [+0.233, +0.967]" in text  # overall, as before


def test_old_summaries_count_as_generated_and_one_source_adds_no_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    one = write_run(
        tmp_path / "a",
        {
            "base": summary_of("base", {"": [0, 1]}, difficulty=1),
            "r1_zero": summary_of("r1_zero", {"": [1, 2]}, difficulty=1),
        },
    )
    text = build_report(one).read_text()
    assert "Per data source" not in text and "Paired pass@1 change per data source" not in text
    assert "| stage | difficulty 1 |" in text
    old = summary_of("base", {"": [0, 1]}, difficulty=1)
    for key in ("by_source", "problem_source"):  # a summary written before data sources existed
        del old[key]
    new = summary_of("r1_zero", {"gsm8k": [2], "": [1, 2]}, difficulty={"gsm8k": 0, "": 1})
    text = build_report(write_run(tmp_path / "b", {"base": old, "r1_zero": new})).read_text()
    assert "| stage | generated (2) | gsm8k (1) |" in text
    # base pass [0, .5]: .25 +- 1.96 * .3536 / sqrt(2) = .49
    assert "| base | 0.250 [0.000, 0.740] / 0.250 | - |" in text
    assert "| r1_zero | 0.750 [0.260, 1.000] / 0.750 | 1.000 [0.207, 1.000] / 1.000 |" in text
    assert "| r1_zero vs base | +0.500 [+0.500, +0.500] (2) | - | +0.500 [+0.500, +0.500] (2) |" in text
    assert "| stage | difficulty unknown | difficulty 1 |" in text


def test_one_stage_two_sources_has_no_paired_table(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    run = write_run(tmp_path, {"sft": summary_of("sft", {"math500": [1], "aime24": [1]})})
    text = build_report(run).read_text()
    assert "| stage | aime24 (1) | math500 (1) |" in text and "Paired pass@1 change" not in text
