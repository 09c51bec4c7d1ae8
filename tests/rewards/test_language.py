"""Language-consistency reward: share of target-language words in the chain of thought."""

import pytest

from r1hpc.rewards.language import language_consistency_reward as lang
from r1hpc.rewards.language import words_by_script


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
    assert words_by_script(text) == [
        ("So", "Latin"),
        ("and", "Latin"),
        ("hence", "Latin"),
        ("所", "Han"),
        ("以", "Han"),
    ]
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


def test_math_names_and_variables_are_not_words():
    # A Chinese CoT that writes sin/cos bare (not \sin) is still all Chinese.
    text = "我们知道 sin x + cos x 的最大值是 根号2, 且 gcd(a, b) = 1, log 2 与 ln 2 不同"
    assert lang(cot(text), {"language": "zh"}) == 1.0
    assert lang(cot(text), {"language": "en"}) == 0.0
    # Only the exact lower-case names: glued to a variable or capitalised, they are words.
    assert words_by_script("max sinx Max mod lcm cost") == [("sinx", "Latin"), ("Max", "Latin"), ("cost", "Latin")]


def test_target_language_inferred_from_prompt():
    zh_cot = cot("我们需要计算两个数的和")
    en_cot = cot("Let us add the two numbers")
    zh_prompt = "求 sin x + cos x 的最大值 (answer in \\boxed{})."  # Han characters outnumber the Latin words
    assert lang(zh_cot, {"prompt": zh_prompt}) == 1.0
    assert lang(en_cot, {"prompt": zh_prompt}) == 0.0
    assert lang(en_cot, {"prompt": "What is the sum of 2 and 3?"}) == 1.0
    assert lang(zh_cot, {"prompt": "What is the sum of 2 and 3?"}) == 0.0
    assert lang(cot("Давайте посчитаем сумму"), {"prompt": "Найдите сумму 2 и 3."}) == 1.0
    assert lang(cot("ひらがな と カタカナ"), {"prompt": "次の和を求めよ: 2+3"}) == 1.0  # kana: Japanese
    assert lang(zh_cot, {"prompt": [{"role": "user", "content": "计算 2+3"}]}) == 1.0  # chat messages
    assert lang(zh_cot, {"prompt": "计算 2+3", "language": None}) == 1.0
    # An explicit language wins over the prompt; no prompt and no language: English.
    assert lang(zh_cot, {"prompt": "计算 2+3", "language": "en"}) == 0.0
    assert lang(en_cot, {}) == 1.0 and lang(en_cot, {"prompt": "2+3=?"}) == 1.0
