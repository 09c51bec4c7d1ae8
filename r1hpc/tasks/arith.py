"""Generators for symbolic math problems with exact answers: integer arithmetic, fractions and
linear equations, each at difficulty 1..4.

Every function takes a `random.Random` and a difficulty and returns one `Problem`; values are
computed with `fractions.Fraction` (exact), and the tests recompute every answer independently
with sympy from the prompt text.
"""

from __future__ import annotations

import random
from fractions import Fraction

from r1hpc.tasks.phrasing import arith_prompts, fraction_prompt, linear_prompt, localize_step
from r1hpc.tasks.problem import Problem, fmt_num, make_problem

# An expression tree: an int leaf, or (op, left, right) with op in "+-*".
Expr = int | tuple[str, "Expr", "Expr"]
_PREC = {"+": 1, "-": 1, "*": 2}


def _render(e: Expr) -> str:
    if isinstance(e, int):
        return str(e) if e >= 0 else f"({e})"
    op, left, right = e
    ls, rs = _render(left), _render(right)
    # Parenthesise a child that binds looser than its parent, and a right child of "-" of
    # equal precedence (a - (b + c) differs from a - b + c).
    if not isinstance(left, int) and _PREC[left[0]] < _PREC[op]:
        ls = f"({ls})"
    if not isinstance(right, int) and (_PREC[right[0]] < _PREC[op] or (_PREC[right[0]] == _PREC[op] and op == "-")):
        rs = f"({rs})"
    return f"{ls} {op} {rs}"


def _solve(e: Expr, steps: list[str]) -> int:
    """Evaluate post-order, appending one 'a op b = c' step per operation."""
    if isinstance(e, int):
        return e
    op, left, right = e
    a, b = _solve(left, steps), _solve(right, steps)
    v = a + b if op == "+" else a - b if op == "-" else a * b
    steps.append(f"{fmt_num(a)} {op} {fmt_num(b)} = {fmt_num(v)}")
    return v


def _insert(rng: random.Random, e: Expr, op: str, leaf: int) -> Expr:
    """Combine a new leaf with a random subtree of `e` (so trees of every shape occur)."""
    if isinstance(e, int) or rng.random() < 0.5:
        return (op, e, leaf) if rng.random() < 0.6 else (op, leaf, e)
    o, left, right = e
    if rng.random() < 0.5:
        return (o, _insert(rng, left, op, leaf), right)
    return (o, left, _insert(rng, right, op, leaf))


def _random_tree(rng: random.Random, ops: list[str], lo: int, hi: int) -> Expr:
    """A random expression tree with one internal node per entry of `ops`, leaves in lo..hi."""
    tree: Expr = rng.randint(lo, hi)
    for op in ops:
        tree = _insert(rng, tree, op, rng.randint(lo, hi))
    return tree


def gen_arith(rng: random.Random, difficulty: int, language: str = "en") -> Problem:
    """Integer arithmetic; d1 one +/- of single digits, d2 two +/- of single digits or one
    product from the times table, d3 three operations with a product, d4 four operations on
    numbers up to 20 (may go negative). d1/d2 stay within the reach of a ~1M-parameter base
    pretrained for a few CPU-minutes (so R1-Zero has something to sharpen)."""
    if difficulty == 1:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        op = rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a
        tree: Expr = (op, a, b)
    elif difficulty == 2:
        if rng.random() < 0.4:
            tree = ("*", rng.randint(2, 9), rng.randint(2, 9))
        else:
            tree = _random_tree(rng, [rng.choice("+-"), rng.choice("+-")], 1, 9)
    elif difficulty == 3:
        ops = [rng.choice("+-"), "*", rng.choice("+-")]
        rng.shuffle(ops)
        tree = _random_tree(rng, ops, 1, 12)
    else:
        ops = ["*", rng.choice("+-*"), rng.choice("+-"), rng.choice("+-")]
        rng.shuffle(ops)
        tree = _random_tree(rng, ops, 1, 20)
    steps: list[str] = []
    value = _solve(tree, steps)
    if difficulty <= 2 and value < 0:  # keep the easy levels non-negative
        return gen_arith(rng, difficulty, language)
    prompt = rng.choice(arith_prompts(language)).format(e=_render(tree))
    return make_problem("arith", difficulty, prompt, value, steps, language)


def _add_steps(op: str, a: tuple[int, int], b: tuple[int, int], steps: list[str]) -> Fraction:
    """a op b for written fractions a=(n, d), b=(n, d), op in "+-", via a common denominator."""
    (an, ad), (bn, bd) = a, b
    if ad == bd:
        n = an + bn if op == "+" else an - bn
        steps.append(f"{an}/{ad} {op} {bn}/{bd} = {n}/{ad}")
        den = ad
    else:
        den = ad * bd // _gcd(ad, bd)
        an2, bn2 = an * (den // ad), bn * (den // bd)
        steps.append(f"{an}/{ad} = {an2}/{den} and {bn}/{bd} = {bn2}/{den}")
        n = an2 + bn2 if op == "+" else an2 - bn2
        steps.append(f"{an2}/{den} {op} {bn2}/{den} = {n}/{den}")
    value = Fraction(n, den)
    if value.denominator != den:
        steps.append(f"{n}/{den} = {fmt_num(value)}")
    return value


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return abs(a)


def _mul_steps(a: tuple[int, int], b: tuple[int, int], steps: list[str], divide: bool) -> Fraction:
    (an, ad), (bn, bd) = a, b
    if divide:
        steps.append(f"{an}/{ad} divided by {bn}/{bd} = {an}/{ad} * {bd}/{bn}")
        bn, bd = bd, bn
    n, d = an * bn, ad * bd
    steps.append(f"{an}/{ad} * {bn}/{bd} = {n}/{d}")
    value = Fraction(n, d)
    if value.denominator != d:
        steps.append(f"{n}/{d} = {fmt_num(value)}")
    return value


def _written(rng: random.Random, max_den: int) -> tuple[int, int]:
    d = rng.randint(2, max_den)
    return rng.randint(1, d - 1), d


def gen_fraction(rng: random.Random, difficulty: int, language: str = "en") -> Problem:
    """Fractions; d1 same one-digit denominator +/-, d2 different denominators +/-, d3 product or
    quotient, d4 a sum/difference with a product (a/b op c/d * e/f)."""
    steps: list[str] = []
    if difficulty == 1:
        d = rng.randint(2, 9)
        a, b = (rng.randint(1, d - 1), d), (rng.randint(1, d - 1), d)
        op = rng.choice("+-")
        if op == "-" and b[0] > a[0]:
            a, b = b, a
        value = _add_steps(op, a, b, steps)
        text = f"{a[0]}/{a[1]} {op} {b[0]}/{b[1]}"
    elif difficulty == 2:
        a, b = _written(rng, 8), _written(rng, 8)
        while a[1] == b[1]:
            b = _written(rng, 8)
        op = rng.choice("+-")
        value = _add_steps(op, a, b, steps)
        text = f"{a[0]}/{a[1]} {op} {b[0]}/{b[1]}"
    elif difficulty == 3:
        a, b = _written(rng, 9), _written(rng, 9)
        divide = rng.random() < 0.5
        value = _mul_steps(a, b, steps, divide)
        text = localize_step(f"{a[0]}/{a[1]} {'divided by' if divide else '*'} {b[0]}/{b[1]}", language)
    else:
        a, b, c = _written(rng, 6), _written(rng, 6), _written(rng, 6)
        op = rng.choice("+-")
        prod = _mul_steps(b, c, steps, divide=False)
        pn, pd = prod.numerator, prod.denominator
        value = _add_steps(op, a, (pn, pd), steps)
        text = f"{a[0]}/{a[1]} {op} {b[0]}/{b[1]} * {c[0]}/{c[1]}"
    prompt = fraction_prompt(language).format(e=text)
    return make_problem("fraction", difficulty, prompt, value, [localize_step(s, language) for s in steps], language)


def _lin(a: int, b: int) -> str:
    """Render a*x + b as text: '3x - 2', '-x + 4', 'x', '7'."""
    if a == 0:
        return str(b)
    xs = "x" if a == 1 else "-x" if a == -1 else f"{a}x"
    if b == 0:
        return xs
    return f"{xs} + {b}" if b > 0 else f"{xs} - {-b}"


def gen_linear(rng: random.Random, difficulty: int, language: str = "en") -> Problem:
    """Solve for x; d1 x + a = b (x and a single digits), d2 a x + b = c, d3 x on both sides, d4 with brackets and a
    possibly fractional solution. Written as A x + B = C x + D and solved in named steps."""
    steps: list[str] = []
    if difficulty == 1:
        x, a = rng.randint(0, 9), rng.randint(1, 9)
        b = rng.choice([a, -a])
        lhs_a, lhs_b, rhs_c, rhs_d = 1, b, 0, x + b
        left = _lin(1, b)
        sol = Fraction(x)
    elif difficulty == 2:
        x, a, b = rng.randint(-10, 10), rng.randint(2, 9), rng.randint(-20, 20)
        lhs_a, lhs_b, rhs_c, rhs_d = a, b, 0, a * x + b
        left = _lin(a, b)
        sol = Fraction(x)
    elif difficulty == 3:
        x = rng.randint(-10, 10)
        a, c = rng.sample([v for v in range(-9, 10) if v != 0], 2)
        b = rng.randint(-20, 20)
        lhs_a, lhs_b, rhs_c, rhs_d = a, b, c, (a - c) * x + b
        left = _lin(a, b)
        sol = Fraction(x)
    else:
        k = rng.randint(2, 6)
        m = rng.randint(-9, 9) or 1
        c = rng.choice([v for v in range(-9, 10) if v not in (0, k)])
        d = rng.randint(-20, 20)
        left = f"{k}({_lin(1, m)})"
        lhs_a, lhs_b, rhs_c, rhs_d = k, k * m, c, d
        steps.append(f"Expand: {_lin(k, k * m)} = {_lin(c, d)}")
        sol = Fraction(d - k * m, k - c)
    right = _lin(rhs_c, rhs_d)
    coef, const = lhs_a - rhs_c, rhs_d - lhs_b
    if rhs_c != 0:
        verb = "Subtract" if rhs_c > 0 else "Add"
        steps.append(f"{verb} {_lin(abs(rhs_c), 0)} on both sides: {_lin(coef, lhs_b)} = {rhs_d}")
    if lhs_b != 0:
        verb = "Subtract" if lhs_b > 0 else "Add"
        steps.append(f"{verb} {abs(lhs_b)} on both sides: {_lin(coef, 0)} = {const}")
    if coef != 1:
        steps.append(f"Divide both sides by {coef}: x = {fmt_num(sol)}")
    assert Fraction(const, coef) == sol
    prompt = linear_prompt(language).format(e=f"{left} = {right}")
    return make_problem("linear", difficulty, prompt, sol, [localize_step(s, language) for s in steps], language)
