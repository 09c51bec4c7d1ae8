"""Regenerates tests/rewards/data/math_pairs.jsonl (hand-written pairs x completion templates):
.venv/bin/python tools/make_math_pairs.py     (writes that file, prints "<rows> <true labels>")"""

import json
from pathlib import Path

T, F = True, False
TEMPLATES = [
    lambda a: f"We simplify step by step. Therefore the answer is $\\boxed{{{a}}}$.",
    lambda a: f"<think>\nLet me compute this carefully.\n</think>\n<answer>\n\\boxed{{{a}}}\n</answer>",
    lambda a: f"<think>Working it out.</think><answer>The answer is ${a}$.</answer>",
    lambda a: f"After checking again, the final answer is ${a}$.",
    lambda a: f"<think>ok</think>\n<answer>{a}</answer>",
]

C = {}
C["integer"] = [
    ("42", "42", T),
    ("42", "43", F),
    ("-7", "-7", T),
    ("-7", "7", F),
    ("0", "0", T),
    ("0", "1", F),
    ("1000000", "10^6", T),
    ("12", "12.0", T),
    ("12", "12.5", F),
    ("100", "1e2", T),
    ("2024", "2024", T),
    ("2024", "2025", F),
    ("5", "+5", T),
    ("3", "\\sqrt{9}", T),
    ("8", "2^3", T),
    ("9", "3^2+1", F),
    ("15", "15", T),
    ("15", "-15", F),
    ("256", "2^{8}", T),
    ("7", "\\frac{14}{2}", T),
]
C["decimal"] = [
    ("0.25", "\\frac14", T),
    ("0.25", "0.250", T),
    ("0.25", "0.26", F),
    ("3.5", "7/2", T),
    ("3.5", "3.05", F),
    ("0.1", ".1", T),
    ("-0.75", "-\\frac{3}{4}", T),
    ("-0.75", "0.75", F),
    ("2.5", "\\frac{5}{2}", T),
    ("0.125", "1/8", T),
    ("0.125", "0.12", F),
    ("1.2", "1.20", T),
    ("6.75", "6.57", F),
    ("0.002", "2\\times 10^{-3}", T),
    ("0.1", "0.1000001", F),
    ("2.5", "2.500000", T),
]
C["fraction"] = [
    ("\\frac{1}{2}", "1/2", T),
    ("\\frac{1}{2}", "\\dfrac{1}{2}", T),
    ("\\frac{1}{2}", "\\tfrac12", T),
    ("\\frac{1}{2}", "\\frac{2}{4}", T),
    ("\\frac{3}{4}", "\\frac{4}{3}", F),
    ("\\frac{3}{4}", "0.75", T),
    ("\\frac{1}{3}", "0.33", F),
    ("\\frac{-1}{2}", "-\\frac12", T),
    ("\\frac{7}{3}", "2\\frac{1}{3}", T),
    ("\\frac{5}{6}", "\\frac{5}{7}", F),
    ("\\frac{22}{7}", "\\pi", F),
    ("\\dfrac{9}{16}", "9/16", T),
    ("\\frac{1}{2}", "\\frac{1}{2}", T),
    ("-\\frac{2}{3}", "\\frac{2}{-3}", T),
    ("\\frac{10}{3}", "3.33", F),
    ("\\frac{1}{3}", "0.333333", F),
    ("\\frac{1}{7}", "0.142857143", F),
]
C["percent"] = [
    ("50", "50\\%", T),
    ("0.5", "50\\%", T),
    ("50\\%", "0.5", T),
    ("50", "0.5", F),
    ("25\\%", "25", T),
    ("12.5\\%", "0.125", T),
    ("30\\%", "40\\%", F),
    ("0.3", "30\\%", T),
    ("0.3", "3\\%", F),
    ("75", "75\\%", T),
    ("20\\%", "\\frac{1}{5}", T),
    ("20\\%", "0.02", F),
    # non-integer percentages unwrap like integer ones (math-verify unwraps only integers)
    ("12.5", "12.5\\%", T),
    ("12.5\\%", "12.5", T),
    ("12.5", "1.25\\%", F),
    ("2.5", "2.5\\%", T),
]
C["scientific"] = [
    ("1500", "1.5\\times10^3", T),
    ("1500", "1.5e3", T),
    ("1500", "1.5 \\cdot 10^{3}", T),
    ("3\\times10^{8}", "300000000", T),
    ("6.02\\times10^{23}", "6.02e23", T),
    ("0.001", "10^{-3}", T),
    ("0.001", "1e-3", T),
    ("1500", "1.5\\times10^4", F),
    ("200000", "2E5", T),
    ("6.02\\times10^{23}", "6.02\\times10^{22}", F),
    ("4.2\\times 10^{-5}", "0.000042", T),
    ("1e6", "1000000", T),
    # many significant digits: equal only as exact rationals (a binary float misses by its rounding error x 10^k)
    ("12345678900", "1.23456789e10", T),
    ("12345678900", "1.2345678e10", F),
    ("602200000000000000000000", "6.022\\times10^{23}", T),
    ("602200000000000000000000", "6.0221\\times10^{23}", F),
    ("1.23456789\\times10^{10}", "12345678900", T),
    ("0.00000042", "4.2\\times10^{-7}", T),
    ("0.00000042", "4.3\\times10^{-7}", F),
    ("2\\times10^{-20}", "1e-20", F),
]
C["radical"] = [
    ("2\\sqrt{2}", "\\sqrt{8}", T),
    ("\\sqrt{2}", "1.414", F),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}2", T),
    ("3\\sqrt{3}", "\\sqrt{27}", T),
    ("\\sqrt[3]{8}", "2", T),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", T),
    ("2+\\sqrt{3}", "\\sqrt{3}+2", T),
    ("2+\\sqrt{3}", "2-\\sqrt{3}", F),
    ("\\sqrt{5}", "\\sqrt{6}", F),
    ("4\\sqrt{2}", "\\sqrt{32}", T),
    ("\\sqrt{12}", "2\\sqrt{3}", T),
    ("\\sqrt{12}", "3\\sqrt{2}", F),
]
C["pi"] = [
    ("\\pi", "\\pi", T),
    ("2\\pi", "2 \\pi", T),
    ("\\frac{\\pi}{2}", "\\pi/2", T),
    ("\\pi", "3.14", F),
    ("\\frac{3\\pi}{4}", "0.75\\pi", T),
    ("100\\pi", "100\\pi", T),
    ("\\pi^2", "\\pi \\cdot \\pi", T),
    ("2\\pi", "\\pi", F),
    ("36\\pi", "36 \\pi", T),
    ("\\frac{\\pi}{3}", "60", F),
    ("4\\pi", "4\\pi r^2", F),
    # a decimal is never equal to pi, however many digits (math-verify alone accepts 6 correct decimals)
    ("\\pi", "3.14159265", F),
    ("\\pi", "3.1416", F),
    ("2\\pi", "6.283185307179586", F),
]
C["expression"] = [
    ("x^2+2x+1", "(x+1)^2", T),
    ("2x+3", "3+2x", T),
    ("x^2-1", "(x-1)(x+1)", T),
    ("x^2-1", "(x-1)^2", F),
    ("\\frac{x}{2}", "x/2", T),
    ("a+b", "b+a", T),
    ("e^{2}", "\\exp(2)", T),
    ("\\log_2 8", "3", T),
    ("2^{10}", "1024", T),
    ("\\frac{n(n+1)}{2}", "\\frac{n^2+n}{2}", T),
    ("2x", "x+x", T),
    ("3x+1", "3x-1", F),
    ("x^3", "x^2", F),
    ("\\frac{1}{x+1}", "\\frac{1}{x}+1", F),
    ("\\sin^2 x+\\cos^2 x", "1", T),
    ("(a+b)^2", "a^2+b^2", F),
]
C["equation"] = [
    ("3", "x=3", T),
    ("x=3", "3", T),
    ("y=2x+1", "y=1+2x", T),
    ("2x+1", "y=2x+1", T),
    ("3", "x=4", F),
    ("y=2x+1", "y=2x-1", F),
    ("x=2", "x = 2", T),
    ("5", "k=5", T),
    ("x=-1", "-1", T),
    ("y=x^2", "y=x^{2}", T),
    ("y=3x", "y=4x", F),
    ("x^2+y^2=1", "y^2+x^2=1", T),
]
C["interval"] = [
    ("(1,2]", "(1,2]", T),
    ("(1,2]", "[1,2]", F),
    ("[0,\\infty)", "[0,\\infty)", T),
    ("(-\\infty,3)", "(-\\infty, 3)", T),
    ("[2,5]", "x \\in [2,5]", T),
    ("(0,1)\\cup(2,3)", "(0,1) \\cup (2,3)", T),
    ("(0,1)\\cup(2,3)", "(0,3)", F),
    ("[1,5)", "[1,5]", F),
    ("(-\\infty,3)", "x<3", T),
    ("(-2,2)", "(-2, 2)", T),
    ("[3,\\infty)", "(3,\\infty)", F),
]
C["set_tuple"] = [
    ("\\{1,2\\}", "\\{2,1\\}", T),
    ("\\{1,2\\}", "\\{1,2,3\\}", F),
    ("(1,2)", "(2,1)", F),
    ("(3,4)", "(3, 4)", T),
    ("2,3", "3,2", T),
    ("1, 2, 3", "\\{1,2,3\\}", T),
    ("(1,-2)", "(1,-2)", T),
    ("(1,-2)", "(-2,1)", F),
    ("\\{-1,1\\}", "\\{1,-1\\}", T),
    ("(2,3,4)", "(2,3,5)", F),
    ("\\{0\\}", "\\{1\\}", F),
    ("(\\frac{1}{2}, 3)", "(0.5, 3)", T),
    # a set is not an ordered pair / open interval; a bare list states no order
    ("(1,2)", "\\{1,2\\}", F),
    ("\\{1,2\\}", "(1,2)", F),
    ("(1,2,3)", "\\{1,2,3\\}", F),
    ("(1,2)", "1, 2", T),
]
C["units"] = [
    ("5", "5\\text{ cm}", T),
    ("5", "5 \\text{cm}^2", T),
    ("30", "30^\\circ", T),
    ("30^\\circ", "30", T),
    ("5", "\\$5", T),
    ("12", "12\\text{ meters}", T),
    ("12", "13\\text{ meters}", F),
    ("4.5", "4.5\\,\\text{kg}", T),
    ("60", "60 \\mbox{ mph}", T),
    ("7", "7 \\text{ units}", T),
    ("90", "90^{\\circ}", T),
    ("45", "50^\\circ", F),
]
C["formatting"] = [
    ("1000", "1,000", T),
    ("1000", "1{,}000", T),
    ("1234567", "1,234,567", T),
    ("5", "5.", T),
    ("\\frac12", "\\dfrac{1}{2}", T),
    ("\\frac{1}{2}", " \\frac { 1 } { 2 } ", T),
    ("-3", "- 3", T),
    ("1000", "1,001", F),
    ("10000", "10,000", T),
    ("2.5", "2.50", T),
    ("12", "12.", T),
    ("100", "1,000", F),
]

C["text"] = [
    ("\\text{Monday}", "\\text{Monday}", T),
    ("\\text{Monday}", "\\text{Tuesday}", F),
    ("\\text{Monday}", "Monday", T),
    ("3, 5", "3 \\text{ and } 5", T),
    ("\\text{no solution}", "\\text{No solution}", T),
    ("\\text{even}", "\\text{odd}", F),
    ("\\frac{3}{4}", "¾", T),
    ("2000", "2×10^3", T),
    ("-\\infty", "−∞", T),
    ("\\infty", "-\\infty", F),
]
MC_CHOICES = ["10", "11", "12", "\\frac{1}{2}", "\\sqrt{2}"]
MC = [
    ("B", "B", T),
    ("B", "(B)", T),
    ("B", "\\text{(B)}", T),
    ("B", "B) 11", T),
    ("B", "C", F),
    ("B", "(A)", F),
    ("12", "C", T),
    ("12", "12", T),
    ("12", "11", F),
    ("C", "\\frac{24}{2}", T),
    ("D", "0.5", T),
    ("D", "\\sqrt{2}", F),
    ("E", "\\sqrt{2}", T),
    ("A", "A.", T),
    ("A", "E", F),
]

rows = []


def add(cat, completion, answer, label, **extra):
    r = {"completion": completion, "answer": answer, "label": label, "category": cat}
    r.update(extra)
    rows.append(r)


for cat, pairs in C.items():
    for i, (gold, pred, lab) in enumerate(pairs):
        # each pair in two different completion formats
        for k in (i % len(TEMPLATES), (i + 2) % len(TEMPLATES)):
            add(cat, TEMPLATES[k](pred), gold, lab)
for i, (gold, pred, lab) in enumerate(MC):
    for k in (i % len(TEMPLATES), (i + 3) % len(TEMPLATES)):
        add("multiple_choice", TEMPLATES[k](pred), gold, lab, choices=MC_CHOICES)
# letter references without choices
for gold, pred, lab in [("C", "C", T), ("C", "(C)", T), ("C", "D", F), ("A", "\\textbf{A}", T)]:
    add("multiple_choice", TEMPLATES[0](pred), gold, lab)

E = "extraction"
add(E, "First guess \\boxed{3}. Wait, that is wrong; recomputing gives \\boxed{4}.", "4", T)
add(E, "First guess \\boxed{3}. Wait, that is wrong; recomputing gives \\boxed{4}.", "3", F)
add(E, "<think>Maybe \\boxed{3}</think>\n<answer>4</answer>", "4", T)
add(E, "<think>Maybe \\boxed{3}</think>\n<answer>4</answer>", "3", F)
add(E, "I think it's 5", "5", F)
add(E, "The result is \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}", T)
add(E, "The answer is: 7", "7", T)
add(E, "Final Answer: The final answer is $8$. I hope it is correct.", "8", T)
add(E, "<think>long</think><answer>\\boxed{9}", "9", T)
add(E, "so we get \\boxed 5", "5", T)
add(E, "hence \\fbox{6}", "6", T)
add(E, "The answer is $\\frac{3}{4}$ and that is final.", "0.75", T)
add(E, "Answer: 2.5", "5/2", T)
add(E, "$$\\boxed{x = 5}$$", "5", T)
add(E, "We get \\boxed{\\{1, 2\\}} as the solution set.", "\\{1,2\\}", T)
add(E, "No idea.", "0", F)
add(E, "", "0", F)
add(E, "<answer></answer>", "0", F)
add(E, "the answer is 3.14.", "3.14", T)
add(E, "\\boxed{\\boxed{7}}", "7", T)

A = "adversarial"
add(A, "\\boxed{10^{10^{10^{10}}}}", "5", F)
add(A, "\\boxed{9^{9^{9^9}}}", "5", F)
add(A, "The answer is 10**10**10**10.", "5", F)
add(A, "\\boxed{2^{2^{40}}}", "5", F)
add(A, "\\boxed{100000000!}", "5", F)
add(A, "\\boxed{x^{x^{x^{x^{x}}}}}", "1", F)
add(A, "\\boxed{\\sum_{n=1}^{10^{20}} n}", "5", F)
add(A, "\\boxed{\\frac{1}{0}}", "0", F)
add(A, "\\boxed{" + "{" * 300 + "1" + "}" * 300 + "}", "2", F)
add(A, "", "1", F, repeat_prefix={"text": "\\boxed{", "times": 100000})
add(A, "\\boxed{}", "4", F)
add(A, "<answer>\\boxed{}</answer>", "0", F)
add(A, "\\boxed{__import__('os').system('touch /tmp/r1hpc_pwned')}", "0", F)
add(A, "The answer is __import__('os').getpid().", "0", F)
add(A, "\\boxed{eval('1+1')}", "2", F)
add(A, "\\boxed{exec(\"import os; os.system('touch /tmp/r1hpc_pwned')\")}", "0", F)
add(A, "\\boxed{lambda: 0}", "0", F)
add(A, "\\boxed{" + "9" * 900 + "}", "9" * 900, T)
add(A, "\\boxed{" + "9" * 5000 + "}", "1", F)
add(A, "\\boxed{π}", "\\pi", T)
add(A, "\\boxed{½}", "\\frac{1}{2}", T)
add(A, "\\boxed{−5}", "-5", T)
add(A, "答案是 \\boxed{3}", "3", T)
add(A, "Ответ: \\boxed{12}", "12", T)
add(A, "\\boxed{3} 🎉🎉", "3", T)
add(A, "\\boxed{3\u200b}", "3", T)
add(A, "\\boxed{\\int_0^1 e^{-x^2}\\,dx}", "1", F)
add(A, "\\boxed{\\left(\\left(\\left(1\\right)\\right)\\right)}", "1", T)
# 1 MB strings: expanded by the loader (repeat_prefix) so the file stays small.
add(A, "Therefore \\boxed{3}", "3", T, repeat_prefix={"text": "lorem ipsum ", "times": 90000})
add(A, "1}", "2", F, repeat_prefix={"head": "\\boxed{", "text": "1+", "times": 500000})
add(A, "", "1", F, repeat_prefix={"text": "{", "times": 1000000})
add(A, "\\boxed{7}", "7", T, repeat_prefix={"text": "\\boxed{", "times": 150000})

OUT = Path(__file__).resolve().parents[1] / "tests" / "rewards" / "data" / "math_pairs.jsonl"
with open(OUT, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(rows), sum(r["label"] for r in rows))
