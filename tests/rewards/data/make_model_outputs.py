"""Writes model_outputs.jsonl: graded pairs in the output styles of real reasoning models and graders.

    .venv/bin/python tests/rewards/data/make_model_outputs.py

Kept apart from math_pairs.jsonl (written together with the verifier's policy): every answer
below is a spelling that R1-style, Qwen-Math, Minerva / lm-eval style outputs produce, wrapped in
those models' answer endings, with a label a human grader would give and the reason. Negatives
are wrong answers written in the same styles (near misses: a rounded decimal, a transposed
matrix, a strict instead of a non-strict inequality, one of two solutions). Deterministic: the
styles are assigned round-robin, so the file only changes when this script does.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("model_outputs.jsonl")

R1_THINK = "<think>\nOkay, let me work through this carefully. {work}\nLet me double-check... yes.\n</think>\n\n"
WORK = [
    "First I set up the equation and simplify both sides.",
    "Substituting the given values, the expression reduces step by step.",
    "Hmm, wait, I should check the boundary case too. It works.",
    "Let me factor and look at the sign of each factor.",
]


def r1_boxed(x: str, i: int) -> str:
    return R1_THINK.format(work=WORK[i % 4]) + f"So the answer is $\\boxed{{{x}}}$."


def r1_final_block(x: str, i: int) -> str:
    return (
        R1_THINK.format(work=WORK[i % 4]) + "To solve the problem we simplify and check the result.\n\n"
        f"**Final Answer**\n\\[\n\\boxed{{{x}}}\n\\]"
    )


def qwen_math(x: str, i: int) -> str:
    return f"Let's think step by step. {WORK[i % 4]}\n\nTherefore, the final answer is $\\boxed{{{x}}}$."


def minerva(x: str, i: int) -> str:
    return f"Solution: {WORK[i % 4]}\nFinal Answer: The final answer is ${x}$. I hope it is correct."


def lm_eval(x: str, i: int) -> str:
    return f"{WORK[i % 4]} The answer is ${x}$."


NON_ENGLISH = [
    "首先化简表达式，然后代入数值。\n因此，答案是 $\\boxed{{{x}}}$。",
    "Сначала упростим выражение.\nТаким образом, ответ: $\\boxed{{{x}}}$.",
    "Primero simplificamos la expresión.\nPor lo tanto, la respuesta es ${x}$.",
    "On simplifie d'abord l'expression.\nDonc la réponse est $\\boxed{{{x}}}$.",
    "Zuerst vereinfachen wir den Ausdruck.\nDie Antwort ist ${x}$.",
    "<think>\n先设未知数，列方程求解。\n</think>\n所以最终答案为 ${x}$。",
]


def non_english(x: str, i: int) -> str:
    return NON_ENGLISH[i % len(NON_ENGLISH)].format(x=x)


STYLES = [r1_boxed, r1_final_block, qwen_math, minerva, lm_eval, non_english]

# (category, reference, [(answer as the model writes it, reason)], [(wrong answer, reason)])
SINGLE = [
    (
        "number_spelling",
        "1250",
        [
            ("1,250", "comma thousands separator"),
            ("1250", "same integer"),
            ("1{,}250", "LaTeX comma group"),
            ("1\\,250", "thin-space group"),
            ("1 250", "space group"),
        ],
        [("1,205", "digits swapped"), ("125", "dropped a digit")],
    ),
    (
        "number_spelling",
        "12500",
        [
            ("12 500", "space thousands separator"),
            ("12\\,500", "thin space"),
            ("12\u2009500", "unicode thin space"),
            ("12,500", "comma separator"),
        ],
        [("125000", "extra zero"), ("1250", "missing zero")],
    ),
    (
        "number_spelling",
        "1000000",
        [("1,000,000", "commas"), ("10^6", "power of ten"), ("1\\,000\\,000", "thin spaces")],
        [("100000", "one zero short")],
    ),
    ("number_spelling", "-7", [("-7", "same"), ("\u22127", "unicode minus")], [("7", "sign lost")]),
    ("integer", "42", [("42", "same"), ("42.0", "trailing .0")], [("24", "digits swapped"), ("41", "off by one")]),
    ("integer", "2024", [("2024", "same")], [("2025", "off by one")]),
    (
        "decimal_approx",
        "\\frac{1}{12}",
        [
            ("\\frac{1}{12}", "same"),
            ("\\dfrac{1}{12}", "dfrac"),
            ("1/12", "slash"),
            ("0.0833333333333333", "16-digit expansion"),
            ("0.08333333333333333", "float repr"),
        ],
        [
            ("0.083", "rounded to 3 places"),
            ("0.0833", "rounded to 4 places"),
            ("\\frac{1}{11}", "wrong fraction"),
            ("0.08333", "5 significant digits is a rounding"),
        ],
    ),
    (
        "decimal_approx",
        "\\frac{2}{3}",
        [
            ("\\frac23", "short frac"),
            ("0.6666666666666666", "float repr"),
            ("0.666666666667", "12 digits, rounded last"),
        ],
        [("0.67", "rounded"), ("0.667", "rounded"), ("\\frac{3}{2}", "inverted")],
    ),
    (
        "decimal_approx",
        "\\pi",
        [("\\pi", "same"), ("3.141592653589793", "float repr of pi")],
        [
            ("3.14", "two-decimal rounding"),
            ("3.1416", "four-decimal rounding"),
            ("\\frac{22}{7}", "approximation"),
            ("3.14159", "five-decimal rounding"),
        ],
    ),
    (
        "decimal_approx",
        "\\sqrt{2}",
        [
            ("\\sqrt{2}", "same"),
            ("\\sqrt2", "no braces"),
            ("1.4142135623730951", "float repr"),
            ("2^{1/2}", "power form"),
        ],
        [("1.414", "rounded"), ("1.41421", "rounded"), ("2", "forgot the root")],
    ),
    (
        "decimal_approx",
        "\\frac{\\sqrt{3}}{2}",
        [("\\frac{\\sqrt{3}}{2}", "same"), ("0.8660254037844386", "float repr")],
        [("0.866", "rounded"), ("\\frac{\\sqrt{2}}{2}", "wrong radical")],
    ),
    (
        "decimal_approx",
        "\\frac{1}{3}",
        [("0.3333333333333333", "float repr"), ("\\frac{1}{3}", "same")],
        [("0.33", "rounded"), ("0.333333", "6 digits is a rounding")],
    ),
    (
        "decimal",
        "2.5",
        [("2.5", "same"), ("\\frac{5}{2}", "fraction"), ("2.50", "trailing zero")],
        [("2.4", "wrong"), ("25", "decimal point lost")],
    ),
    (
        "relation",
        "x \\geq 2",
        [
            ("x \\ge 2", "\\ge"),
            ("x>=2", "ascii >="),
            ("x \\geqslant 2", "\\geqslant"),
            ("2 \\le x", "reversed"),
            ("[2, \\infty)", "interval"),
            ("x \u2265 2", "unicode"),
        ],
        [("x > 2", "strict"), ("x \\le 2", "wrong direction"), ("x \\geq 3", "wrong bound")],
    ),
    (
        "relation",
        "x > 3",
        [("x \\gt 3", "\\gt"), ("(3,\\infty)", "interval"), ("3 < x", "reversed")],
        [("x \\geq 3", "non-strict"), ("x < 3", "wrong direction")],
    ),
    ("relation", "x < -1", [("x \\lt -1", "\\lt"), ("-1 > x", "reversed")], [("x > -1", "wrong direction")]),
    ("relation", "x \\neq 2", [("x != 2", "ascii !="), ("x \\ne 2", "\\ne")], [("x = 2", "equation instead")]),
    (
        "relation",
        "x \\le 5",
        [("x <= 5", "ascii <="), ("x \\leq 5", "\\leq"), ("(-\\infty, 5]", "interval")],
        [("x < 5", "strict"), ("x \\le 4", "wrong bound")],
    ),
    (
        "chained_inequality",
        "x \\in [-1, 4]",
        [
            ("-1 \\le x \\le 4", "chain"),
            ("-1 \\leq x \\leq 4", "chain \\leq"),
            ("[-1,4]", "interval"),
            ("-1 <= x <= 4", "ascii chain"),
        ],
        [("-1 < x < 4", "strict chain"), ("-1 \\le x < 4", "half open"), ("[-1, 5]", "wrong bound")],
    ),
    (
        "chained_inequality",
        "(-2, 3]",
        [("-2 < x \\le 3", "chain"), ("-2 < x <= 3", "ascii chain")],
        [("-2 \\le x \\le 3", "closed at -2"), ("(-2, 3)", "open at 3")],
    ),
    (
        "chained_inequality",
        "(-\\infty, -1] \\cup [4, \\infty)",
        [("x \\le -1 \\text{ or } x \\ge 4", "or of inequalities"), ("(-\\infty,-1]\\cup[4,\\infty)", "same union")],
        [("-1 \\le x \\le 4", "complement"), ("x < -1 \\text{ or } x > 4", "strict")],
    ),
    ("chained_inequality", "(0, 1)", [("0 < x < 1", "chain")], [("0 \\le x \\le 1", "closed")]),
    (
        "matrix",
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        [
            ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", "bmatrix"),
            ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "same"),
            ("\\left(\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 \\end{array}\\right)", "array"),
        ],
        [
            ("\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", "transposed"),
            ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 5 \\end{bmatrix}", "one entry wrong"),
        ],
    ),
    (
        "matrix",
        "\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}",
        [
            ("\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix} + \\begin{pmatrix} 2 \\\\ -1 \\end{pmatrix}", "sum of vectors"),
            ("\\begin{bmatrix} 3 \\\\ -1 \\end{bmatrix}", "bmatrix"),
        ],
        [
            ("\\begin{pmatrix} -1 \\\\ 3 \\end{pmatrix}", "entries swapped"),
            ("\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix} + \\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", "sum is (3, 1)"),
        ],
    ),
    (
        "matrix",
        "\\begin{pmatrix} \\frac{1}{2} \\\\ 0 \\end{pmatrix}",
        [
            ("\\begin{pmatrix} 0.5 \\\\ 0 \\end{pmatrix}", "decimal entry"),
            ("\\begin{pmatrix} 1/2 \\\\ 0 \\end{pmatrix}", "slash entry"),
        ],
        [("\\begin{pmatrix} 2 \\\\ 0 \\end{pmatrix}", "inverted entry")],
    ),
    (
        "units",
        "12",
        [("12 \\text{ cm}", "\\text unit"), ("12\\,\\text{cm}", "thin space unit"), ("12 \\mathrm{cm}", "mathrm unit")],
        [("13 \\text{ cm}", "wrong value")],
    ),
    (
        "units",
        "45",
        [("45^\\circ", "degrees"), ("45^{\\circ}", "degrees braces"), ("45\u00b0", "unicode degree")],
        [("135^\\circ", "supplement")],
    ),
    (
        "units",
        "18.50",
        [("\\$18.50", "dollar sign"), ("18.5 \\text{ dollars}", "dollars text")],
        [("\\$18.05", "digits swapped")],
    ),
    ("units", "60", [("60 \\text{ km/h}", "speed unit"), ("60\\text{ mph}", "mph")], [("50 \\text{ km/h}", "wrong")]),
    (
        "percent",
        "25\\%",
        [("25\\%", "same"), ("0.25", "fraction of one")],
        [("2.5\\%", "off by ten"), ("0.025", "off")],
    ),
]

# Completions written out in full: multi-part answers and answer sentences.
LITERAL = [
    # (category, completion, reference, label, reason)
    (
        "multi_part",
        R1_THINK.format(work=WORK[0]) + "The solutions are $\\boxed{3}$ and $\\boxed{5}$.",
        "3, 5",
        True,
        "two boxes joined by 'and'",
    ),
    ("multi_part", "Therefore the roots are $\\boxed{3}, \\boxed{5}$.", "3, 5", True, "two boxes, comma"),
    ("multi_part", "Therefore the roots are $\\boxed{5}, \\boxed{3}$.", "3, 5", True, "list of roots: order free"),
    ("multi_part", "Hence $x = \\boxed{3}$ or $x = \\boxed{5}$.", "3, 5", True, "x = box or x = box"),
    ("multi_part", "Therefore the roots are $\\boxed{3}, \\boxed{4}$.", "3, 5", False, "one root wrong"),
    ("multi_part", R1_THINK.format(work=WORK[1]) + "The root is $\\boxed{5}$.", "3, 5", False, "one root missing"),
    (
        "multi_part",
        "The pairs are $\\boxed{(1, 4)} \\text{ and } \\boxed{(4, 1)}$.",
        "(1,4),(4,1)",
        True,
        "two pair boxes with \\text{ and }",
    ),
    (
        "multi_part",
        "The pairs are $\\boxed{(4, 1)}$ and $\\boxed{(1, 4)}$.",
        "(1,4),(4,1)",
        True,
        "same pairs other order",
    ),
    ("multi_part", "The only pair is $\\boxed{(1, 4)}$.", "(1,4),(4,1)", False, "one pair missing"),
    (
        "multi_part",
        "The pairs are $\\boxed{(1, 4)} \\text{ and } \\boxed{(4, 2)}$.",
        "(1,4),(4,1)",
        False,
        "second pair wrong",
    ),
    ("multi_part", "We get $x = \\boxed{-2}$ or $x = \\boxed{2}$.", "-2, 2", True, "two solutions"),
    ("multi_part", "We get $x = \\boxed{2}$.", "-2, 2", False, "negative solution missing"),
    ("multi_part", "Final Answer: The final answer is $3, 5$. I hope it is correct.", "3, 5", True, "minerva list"),
    ("multi_part", "Final Answer: The final answer is $3, 6$. I hope it is correct.", "3, 5", False, "minerva wrong"),
    ("multi_part", "The answer is $2$ or $3$.", "2, 3", True, "two math spans joined by or"),
    ("multi_part", "The answer is $\\boxed{2 \\text{ or } 3}$.", "2, 3", True, "or inside the box"),
    ("multi_part", "The answer is $\\boxed{2 \\text{ or } 4}$.", "2, 3", False, "one value wrong"),
    (
        "multi_part",
        "First we get \\boxed{3}, then after correcting the sign we get \\boxed{4}.",
        "4",
        True,
        "a corrected box: only the last one is the answer",
    ),
    (
        "multi_part",
        "First we get \\boxed{4}, then after correcting the sign we get \\boxed{3}.",
        "4",
        False,
        "the final box is wrong",
    ),
    (
        "answer_sentence",
        "Final Answer: The final answer is $1,250$. I hope it is correct.",
        "1250",
        True,
        "minerva ending, comma number",
    ),
    (
        "answer_sentence",
        "Final Answer: The final answer is 1,250. I hope it is correct.",
        "1250",
        True,
        "minerva ending without $",
    ),
    (
        "answer_sentence",
        "Final Answer: The final answer is $1,205$. I hope it is correct.",
        "1250",
        False,
        "minerva ending, wrong",
    ),
    ("answer_sentence", "Final Answer: The smallest $k$ is 12.", "12", True, "answer sentence"),
    ("answer_sentence", "Final Answer: The smallest $k$ is $12$.", "12", True, "answer sentence with $"),
    ("answer_sentence", "Final Answer: The smallest $k$ is 13.", "12", False, "answer sentence wrong"),
    (
        "answer_sentence",
        "Final Answer: The area of the triangle is $24$ square units.",
        "24",
        True,
        "sentence with units",
    ),
    ("answer_sentence", "Final Answer: The area of the triangle is $48$ square units.", "24", False, "forgot the 1/2"),
    ("answer_sentence", "Natalia sold 48/2 = 24 clips in May. 48 + 24 = 72.\n#### 72", "72", True, "gsm8k ####"),
    ("answer_sentence", "Natalia sold 48/2 = 24 clips in May. 48 + 24 = 72.\n#### 96", "72", False, "gsm8k wrong"),
    ("answer_sentence", "So she has 5 apples left. The answer is 5.", "5", True, "lm-eval gsm8k-cot"),
    ("answer_sentence", "So she has 6 apples left. The answer is 6.", "5", False, "lm-eval gsm8k-cot wrong"),
    ("answer_sentence", "I think the value is probably 12 or so.", "12", False, "no answer marker: not graded"),
    (
        "answer_sentence",
        "<think>\nThe answer should be 12.\n</think>\n\nThe answer is $\\boxed{12}$.",
        "12",
        True,
        "r1 think then box",
    ),
    (
        "answer_sentence",
        "<think>\nMaybe \\boxed{10}? No, recheck.\n</think>\n\nThe answer is $\\boxed{12}$.",
        "12",
        True,
        "box inside think superseded",
    ),
    (
        "answer_sentence",
        "<think>\nMaybe \\boxed{12}? No, recheck.\n</think>\n\nThe answer is $\\boxed{10}$.",
        "12",
        False,
        "final answer after think is wrong",
    ),
    ("non_english", "所以答案是 12。", "12", True, "chinese answer phrase"),
    ("non_english", "所以答案是 13。", "12", False, "chinese wrong"),
    ("non_english", "Ответ: 12", "12", True, "russian answer phrase"),
    ("non_english", "Ответ: 21", "12", False, "russian wrong"),
    ("non_english", "Por lo tanto, la respuesta es 12.", "12", True, "spanish answer phrase"),
    ("non_english", "A resposta é $12$.", "12", True, "portuguese"),
]


def rows() -> list[dict]:
    out = []
    k = 0
    for cat, gold, goods, bads in SINGLE:
        for label, answers in ((True, goods), (False, bads)):
            for ans, reason in answers:
                for _ in range(2):  # each answer in two different styles
                    style = STYLES[k % len(STYLES)]
                    k += 1
                    out.append(
                        {
                            "completion": style(ans, k),
                            "answer": gold,
                            "label": label,
                            "category": cat,
                            "style": style.__name__,
                            "reason": reason,
                        }
                    )
    for cat, completion, gold, label, reason in LITERAL:
        out.append(
            {
                "completion": completion,
                "answer": gold,
                "label": label,
                "category": cat,
                "style": "literal",
                "reason": reason,
            }
        )
    return out


if __name__ == "__main__":
    data = rows()
    with open(OUT, "w", encoding="utf-8") as f:
        for r in data:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(data)} pairs -> {OUT}")
