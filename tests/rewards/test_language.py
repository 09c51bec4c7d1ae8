"""Language-consistency reward: share of target-language words in the chain of thought."""

import pytest

from r1hpc.rewards.language import language_consistency_reward as lang, words_by_script


def cot(text: str) -> str:
    return f"<think>{text}</think><answer>1</answer>"


def test_pure_english_and_pure_chinese():
    assert lang(cot("Let us add the two numbers carefully"), {}) == 1.0
    assert lang(cot("我们需要计算两个数的和"), {"language": "zh"}) == 1.0
    assert lang(cot("我们需要计算两个数的和"), {"language": "en"}) == 0.0


def test_mixed_english_chinese():
    text = "First compute the sum 我们 then check"  # 6 Latin words + 2 Han characters
    assert lang(cot(text), {"language": "en"}) == pytest.approx(6 / 8)
    assert lang(cot(text), {"language": "zh"}) == pytest.approx(2 / 8)


def test_math_is_not_counted():
    # Numbers, operators, LaTeX commands, math spans and one-letter variables are ignored.
    text = r"So \frac{a}{b} = 2x + 3, and $\sum_{i=1}^n i^2 = \alpha$ hence x = 7 所以"
    assert words_by_script(text) == [("So", "Latin"), ("and", "Latin"), ("hence", "Latin"),
                                     ("所", "Han"), ("以", "Han")]
    assert lang(cot(text), {"language": "zh"}) == pytest.approx(2 / 5)


def test_pure_math_and_empty():
    assert lang(cot(r"2+2=4, \frac{1}{2} = 0.5, x = y + 1"), {"language": "zh"}) == 1.0
    assert lang(cot("   "), {}) == 0.0  # empty chain of thought
    assert lang("no think block at all", {}) == 0.0
    assert lang("<think>unclosed", {}) == 0.0


def test_other_scripts_and_prompt_template():
    assert lang(cot("Давайте посчитаем сумму"), {"language": "ru"}) == 1.0
    assert lang(cot("Давайте посчитаем sum"), {"language": "ru"}) == pytest.approx(2 / 3)
    assert lang(cot("ひらがな と カタカナ"), {"language": "ja"}) == 1.0
    assert lang("reasoning here</think><answer>1</answer>", {"prompt_ends_with_think": True}) == 1.0
    with pytest.raises(ValueError, match=r"example\['language'\]"):
        lang(cot("x"), {"language": "klingon"})
