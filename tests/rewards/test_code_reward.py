"""Code reward: program extraction and scoring by running the example's tests in the sandbox."""

import pytest

from r1hpc.rewards.code import code_reward, extract_program
from r1hpc.rewards.sandbox import SandboxConfig

SUM = {
    "tests": [
        {"input": "1 2\n", "output": "3\n"},
        {"input": "5 5", "output": "10"},
        {"input": "-1 1\n", "output": "0"},
    ],
    "time_limit_s": 2.0,
}


def fenced(code: str, lang: str = "python") -> str:
    return f"<think>plan</think><answer>\n```{lang}\n{code}\n```\n</answer>"


def test_correct_partial_and_wrong():
    good = "a, b = map(int, input().split())\nprint(a + b)"
    assert code_reward(fenced(good), SUM) == 1.0
    # Wrong only for negative numbers: passes 2 of 3.
    partial = "a, b = map(int, input().split())\nprint(abs(a) + abs(b))"
    assert code_reward(fenced(partial), SUM) == pytest.approx(2 / 3)
    assert code_reward(fenced("print(0)"), SUM) == pytest.approx(1 / 3)
    assert code_reward(fenced("raise SystemExit(1)"), SUM) == 0.0


def test_whitespace_and_multiline_comparison():
    ex = {"tests": [{"input": "", "output": "1 2\n3\n"}]}
    assert code_reward(fenced("print('1 2  ')\nprint('3')\n\n"), ex) == 1.0
    assert code_reward(fenced("print('1 2 3')"), ex) == 0.0  # line structure matters


def test_failures_score_zero():
    assert code_reward(fenced("while True: pass"), {**SUM, "time_limit_s": 0.5}) == 0.0
    assert code_reward(fenced("def f(:\n  pass"), SUM) == 0.0  # does not compile
    assert code_reward("<think>no code</think><answer>just words?</answer>", SUM) == 0.0
    assert code_reward("nothing at all", SUM) == 0.0


def test_not_applicable_and_bad_examples():
    assert code_reward(fenced("print(1)"), {"answer": "1"}) is None
    with pytest.raises(ValueError, match=r"example\['tests'\]\[1\]"):
        code_reward("x", {"tests": [{"input": "", "output": ""}, {"input": 1, "output": "2"}]})
    with pytest.raises(ValueError, match=r"example\['tests'\]"):
        code_reward("x", {"tests": []})
    with pytest.raises(ValueError, match="time_limit_s"):
        code_reward("x", {"tests": [{"input": "", "output": ""}], "time_limit_s": -1})


def test_extraction():
    two = "<think>```python\nprint('draft')\n```</think>```python\nprint(1)\n```\nthen\n```py\nprint(2)\n```"
    assert extract_program(two, {}).strip() == "print(2)"  # last block after the CoT
    assert extract_program("<think>t</think><answer>print(3)</answer>", {}) == "print(3)"
    assert extract_program("<think>t</think><answer>```\nprint(4)\n```</answer>", {}).strip() == "print(4)"
    assert extract_program("<think>```python\nprint(5)\n```</think>", {}) is None


def test_fallback_isolation_scores_the_same():
    good = "a, b = map(int, input().split())\nprint(a + b)"
    assert code_reward(fenced(good), SUM, config=SandboxConfig(namespaces=False)) == 1.0
