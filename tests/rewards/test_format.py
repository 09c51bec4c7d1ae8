"""Strict R1 format reward: many positive and negative cases."""

import pytest

from r1hpc.rewards.format import answer_content, format_reward, think_content
from r1hpc.rewards.length import overlong_penalty

GOOD = [
    "<think>reasoning</think><answer>42</answer>",
    "<think>\nstep 1\nstep 2\n</think>\n<answer>\n42\n</answer>\n",
    "  \n<think>a</think>   \t\n<answer>b</answer>  ",
    "<think>x < y and y > z</think><answer>1 < 2</answer>",  # comparison signs are not tags
    "<think>I wrote <thinking> once</think><answer>ok</answer>",  # other tag names are text
]
BAD = [
    "",
    "42",
    "<think>reasoning</think>",  # no answer
    "<answer>42</answer>",  # no think
    "<answer>42</answer><think>r</think>",  # wrong order
    "<think>r</think><answer>42",  # missing close
    "<think>r<answer>42</answer>",  # think not closed
    "<think>r</think><answer>42</answer> trailing text",
    "preamble <think>r</think><answer>42</answer>",
    "<think>r</think> between <answer>42</answer>",
    "<think></think><answer>42</answer>",  # empty think
    "<think>  \n </think><answer>42</answer>",  # whitespace-only think
    "<think>r</think><answer> </answer>",  # empty answer
    "<think>a<think>b</think>c</think><answer>1</answer>",  # nested think
    "<think>a</think><think>b</think><answer>1</answer>",  # two thinks
    "<think>a</think><answer>1</answer><answer>2</answer>",  # two answers
    "<think>a</think><answer>see <think>x</think></answer>",  # tag inside answer
    "<think>a <answer>x</answer></think><answer>1</answer>",  # answer tag inside think
    "<think>a</think><answer>1</answer></answer>",  # stray close
    "<THINK>a</THINK><ANSWER>1</ANSWER>",  # tags are case-sensitive
    "<think >a</think><answer>1</answer>",  # no attributes/spaces in tags
]


@pytest.mark.parametrize("completion", GOOD)
def test_good(completion):
    assert format_reward(completion, {}) == 1.0


@pytest.mark.parametrize("completion", BAD)
def test_bad(completion):
    assert format_reward(completion, {}) == 0.0


def test_prompt_ending_with_think():
    ex = {"prompt_ends_with_think": True}
    assert format_reward("reasoning</think><answer>1</answer>", ex) == 1.0
    assert format_reward("<think>reasoning</think><answer>1</answer>", ex) == 0.0  # opened twice
    assert format_reward("</think><answer>1</answer>", ex) == 0.0  # empty think
    assert think_content("reasoning</think><answer>1</answer>", ex) == "reasoning"
    with pytest.raises(ValueError, match="prompt_ends_with_think"):
        format_reward("x", {"prompt_ends_with_think": "yes"})


def test_helpers():
    c = "<think>t</think><answer>a1</answer> <answer>a2</answer>"
    assert think_content(c, {}) == "t" and answer_content(c, {}) == "a2"
    assert think_content("<think>never closed", {}) is None
    assert answer_content("<think>t</think> no answer", {}) is None


@pytest.mark.parametrize("length,expected", [(0, 0.0), (60, 0.0), (70, -0.25), (100, -1.0), (101, -1.0), (80, -0.5)])
def test_overlong_penalty_tokens(length, expected):
    ex = {"max_length": 100, "overlong_cache": 40, "completion_tokens": length}
    assert overlong_penalty("ignored when tokens are given", ex) == pytest.approx(expected)


def test_overlong_penalty_characters_and_errors():
    ex = {"max_length": 10, "overlong_cache": 4}
    assert overlong_penalty("x" * 6, ex) == 0.0
    assert overlong_penalty("x" * 8, ex) == pytest.approx(-0.5)
    assert overlong_penalty("x" * 11, ex) == -1.0
    assert overlong_penalty("x" * 11, {"max_length": 10, "overlong_cache": 0}) == -1.0
    assert overlong_penalty("x" * 10, {"max_length": 10, "overlong_cache": 0}) == 0.0
    assert overlong_penalty("anything", {}) is None
    with pytest.raises(ValueError, match="overlong_cache"):
        overlong_penalty("x", {"max_length": 10})
    with pytest.raises(ValueError, match="exceeds"):
        overlong_penalty("x", {"max_length": 10, "overlong_cache": 11})
    with pytest.raises(ValueError, match="completion_tokens"):
        overlong_penalty("x", {"max_length": 10, "overlong_cache": 2, "completion_tokens": "5"})
