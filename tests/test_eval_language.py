"""Language mixing in eval (r1hpc.stages.eval): the mixed_language definition on hand-written
completions in English and Russian, grading in the worker pool, and summaries with and without the
language keys (shards written before they existed)."""

from __future__ import annotations

import pytest

from r1hpc.eval_metrics import summarize
from r1hpc.rewards.format import think_content
from r1hpc.rewards.language import language_consistency_reward, mixed_language, words_by_script
from r1hpc.stages.common import reward_example
from r1hpc.stages.eval import problem_language, score_samples

EN = {"id": "e1", "prompt": "What is 2 + 3?", "answer": "5"}  # no "language": inferred from the prompt
RU = {"id": "r1", "prompt": "Сколько будет 2 + 3?", "answer": "5", "language": "ru"}

# (completion, mixed for EN, mixed for RU)
CASES = [
    (" add 2 and 3 to get 5 </think> <answer> 5 </answer>", 0.0, 1.0),  # all English
    (" Сложим 2 и 3, получим 5 </think> <answer> 5 </answer>", 1.0, 0.0),  # all Russian
    (" Сложим 2 и 3, then 5 </think> <answer> 5 </answer>", 1.0, 1.0),  # both scripts
    (" Сложим: $x + 3 = 5$, x = 2, sin x </think> <answer> 2 </answer>", 1.0, 0.0),  # math is no word
    (" 2 + 3 = 5 </think> <answer> 5 </answer>", 0.0, 0.0),  # no countable word: nothing mixed
    ("   </think> <answer> 5 </answer>", 0.0, 0.0),  # a blank chain of thought
    (" I think the answer is 5, ответ 5", 0.0, 0.0),  # no closed <think> block (truncated): not mixed
    (" <answer> 5 </answer>", 0.0, 0.0),  # no chain of thought at all
]


@pytest.mark.parametrize("text, mixed_en, mixed_ru", CASES)
def test_mixed_language_by_hand(text, mixed_en, mixed_ru):
    for problem, want in ((EN, mixed_en), (RU, mixed_ru)):
        example = reward_example(problem)
        assert mixed_language(text, example) == want, (problem["id"], text)
        # the definition: a chain of thought with words, not all of them in the target language
        cot = think_content(text, example)
        words = words_by_script(cot) if cot is not None else []
        share = language_consistency_reward(text, example)
        assert want == float(bool(words) and share < 1.0)


def test_problem_language():
    assert problem_language(RU) == "ru"
    assert problem_language(EN) == "en"
    assert problem_language({"prompt": "Вычислите 7 * 8."}) == "ru"  # no key: the prompt's script
    assert problem_language({"prompt": "Compute 7 * 8.", "language": "en"}) == "en"


def test_score_samples_grades_language_in_the_pool():
    texts = [CASES[0][0], CASES[1][0], CASES[2][0], CASES[6][0]]
    problems = [RU, RU, EN, EN]
    got = score_samples(texts, problems, timeout_s=10, memory_mb=1024)
    assert [g["mixed_language"] for g in got] == [1.0, 0.0, 1.0, 0.0]
    # all English for RU -> 0; all Russian for RU -> 1
    assert got[0]["language_consistency"] == 0.0 and got[1]["language_consistency"] == 1.0
    assert got[2]["language_consistency"] == pytest.approx(1 / 2)  # "Сложим" vs "then" ("и" is one letter)
    assert got[3]["language_consistency"] == 0.0  # no chain of thought: the reward's 0
    assert [g["correct"] for g in got[:3]] == [1.0, 1.0, 1.0]  # graded as before
    for g in got:
        assert g["score_status"]["language_consistency"] == g["score_status"]["mixed_language"] == "ok"


def record(pid: str, language: str | None, correct: float, mixed: float | None, consistency: float = 1.0) -> dict:
    r = {
        "problem_id": pid,
        "difficulty": 1,
        "correct": correct,
        "format": 1.0,
        "answer": "5" if correct else "4",
        "response_tokens": 10,
        "model_version": "v0001",
    }
    if language is not None:
        r["language"] = language
    if mixed is not None:
        r["mixed_language"] = mixed
        r["language_consistency"] = consistency
    return r


def test_summaries_with_the_language_keys():
    records = [
        record("e1", "en", 1.0, 0.0),
        record("e1", "en", 1.0, 1.0, 0.5),
        record("r1", "ru", 0.0, 1.0, 0.0),
        record("r1", "ru", 1.0, 1.0, 0.75),
        record("r2", "ru", 0.0, 0.0),
        record("r2", "ru", 0.0, 0.0),
    ]
    s = summarize(records, k=2)
    assert s["mixed_language_rate"] == pytest.approx(3 / 6)
    assert s["language_consistency"] == pytest.approx((1 + 0.5 + 0 + 0.75 + 1 + 1) / 6)
    assert sorted(s["by_language"]) == ["en", "ru"]
    en, ru = s["by_language"]["en"], s["by_language"]["ru"]
    assert en["problems"] == 1 and en["pass_at_1"] == 1.0 and en["mixed_language_rate"] == 0.5
    assert ru["problems"] == 2 and ru["pass_at_1"] == 0.25 and ru["mixed_language_rate"] == 0.5
    assert ru["language_consistency"] == pytest.approx((0 + 0.75 + 1 + 1) / 4)


def test_old_shards_without_the_keys_still_summarize():
    old = [record("p1", None, 1.0, None), record("p1", None, 0.0, None)]
    s = summarize(old, k=2)
    assert s["pass_at_1"] == 0.5
    assert "mixed_language_rate" not in s and "language_consistency" not in s and "by_language" not in s
    # shards of two code versions: a figure only some records have is not reported at all
    s = summarize(old + [record("p2", "en", 1.0, 1.0), record("p2", "en", 1.0, 0.0)], k=2)
    assert s["problems"] == 2 and "mixed_language_rate" not in s and "by_language" not in s
    assert s["by_source"]["generated"]["problems"] == 2
