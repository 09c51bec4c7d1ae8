"""Helpers of ``math_accuracy``: answer extraction details, spellings, fast paths, policies.

Pure functions. Those that only use ``re`` / ``fractions`` (extraction, normalisation, the fast
numeric path) are safe anywhere; those taking sympy expressions run, like the rest of the
verifier, only inside a ``WorkerPool`` worker. The policies are documented in
``r1hpc.rewards.math_accuracy``'s module docstring; this module only implements them.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

import sympy

# ---------------------------------------------------------------------------------------------
# Extraction: several boxed answers, answer sentences.

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
MAX_BOXES = 12  # bounds the work on strings made of many (unbalanced) \boxed{
# What may stand between two boxes of one multi-part answer: punctuation, math delimiters,
# spacing macros and the words "and" / "or" (also as \text{...}, and in a few languages).
_CONNECTOR_WORDS = r"and|or|und|oder|et|ou|y|o|e|и|или|和|或|及|与|、"
_GAP_RE = re.compile(
    r"^(?:\s|[,;]|\$|(?<![\w\\])[A-Za-z](?:_\{?\w\}?)?\s*=|\\[()\[\]]|\\q?quad|\\[,;:! ]|&|\\\\"
    r"|\\(?:text|mathrm|textrm|mbox)\{\s*(?:"
    + _CONNECTOR_WORDS
    + r"|,)?\s*\}|(?<![^\s,;$}])(?:"
    + _CONNECTOR_WORDS
    + r")(?=[\s$\\]))*$"
)
_MAX_GAP_CHARS = 40
_MAX_BOX_CHARS = 20_000  # a longer box is no answer (and scanning 1 MB per box costs)


def matching_brace(s: str, open_pos: int, max_chars: int | None = None) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_pos`` (``\\{``/``\\}`` skipped), or None
    (also when it is more than ``max_chars`` further on)."""
    depth = 0
    i = open_pos
    n = len(s) if max_chars is None else min(len(s), open_pos + max_chars)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2  # an escaped character, e.g. \{ in a set, never opens or closes a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of the last complete boxes, in text order (at most MAX_BOXES tried)."""
    starts = [(m.start(), m.end()) for m in _BOX_RE.finditer(text)][-MAX_BOXES:]
    out = []
    for begin, start in starts:
        j = start
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            end = matching_brace(text, j, _MAX_BOX_CHARS)
            if end is not None:
                out.append((begin, end + 1, text[j + 1 : end]))
        elif j > start:  # "\boxed 5": one token
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append((begin, j + tok.end(), tok.group(0)))
    # A box inside an earlier box's braces is part of that one, not an answer of its own.
    kept: list[tuple[int, int, str]] = []
    for b in out:
        if not kept or b[0] >= kept[-1][1]:
            kept.append(b)
    return kept


def last_boxed(text: str) -> str | None:
    """The final boxed answer: the last box, joined with the boxes right before it that form one
    multi-part answer (``\\boxed{3}, \\boxed{5}``, ``\\boxed{(1,4)} \\text{ and } \\boxed{(4,1)}``:
    only connectors between them) as the list ``3, 5``; repeated boxes count once."""
    boxes = _boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for b in reversed(boxes[:-1]):
        gap = text[b[1] : group[0][0]]
        if len(gap) > _MAX_GAP_CHARS or not _GAP_RE.match(gap):
            break
        group.insert(0, b)
    parts: list[str] = []
    for _, _, content in group:
        c = content.strip()
        if c and c not in parts:
            parts.append(c)
    if not parts:
        return group[-1][2]
    return parts[0] if len(parts) == 1 else ", ".join(parts)


_MATH_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.DOTALL)


def leading_math(rest: str) -> str | None:
    """The ``$...$`` math at the start of ``rest``; several joined by connectors ("$2$ or $3$",
    "$x=1$ and $y=2$") make a list "2, 3"."""
    parts: list[str] = []
    pos = 0
    while len(parts) < MAX_BOXES:
        m = _MATH_RE.match(rest, pos)
        if not m:
            break
        parts.append((m.group(1) or m.group(2)).strip())
        nxt = rest.find("$", m.end())
        if nxt == -1 or nxt - m.end() > _MAX_GAP_CHARS or not _GAP_RE.match(rest[m.end() : nxt]):
            break
        if not rest[m.end() : nxt].strip():
            break  # "$a$ $b$": not a list
        pos = nxt
    return ", ".join(parts) if parts else None


# "The smallest $k$ is 12", "the area equals $5$": the value of an answer sentence.
_VERB_RE = re.compile(r"\s(?:is|are|equals|was|=|es|est|ist|é|равно|равен|是|为)\s*", re.IGNORECASE)
_WORD_RE = re.compile(r"(?<![\\\w])[A-Za-z]{2,}\b")


def sentence_value(span: str) -> str:
    """What an answer sentence states: the math after its last "is" when the text before it is
    words ("The smallest $k$ is 12" -> "12"); the span unchanged otherwise."""
    verbs = list(_VERB_RE.finditer(span))
    if not verbs:
        return span
    head = re.sub(r"\$[^$]*\$", " ", span[: verbs[-1].start()])
    if not _WORD_RE.search(head):
        return span
    tail = span[verbs[-1].end() :].strip()
    return leading_math(tail) or tail or span


# ---------------------------------------------------------------------------------------------
# Spellings.

_RELATION_SPELLINGS = [
    (re.compile(r"\\geqslant\b|\\geq\b|\\ge\b|≥|>=|=>"), r"\\geq "),
    (re.compile(r"\\leqslant\b|\\leq\b|\\le\b|≤|<=|=<"), r"\\leq "),
    (re.compile(r"\\neq\b|\\ne\b|≠|!=|=/="), r"\\neq "),
    (re.compile(r"\\gt\b"), ">"),
    (re.compile(r"\\lt\b"), "<"),
]
# Digit groups of three after a space, thin space or LaTeX spacing: 12 500, 12\,500, 1{,}000.
_GROUP_SEP = r"(?:\{,\}|\\,|\\ |\\!|~|\\thinspace\s*|[ \u2009\u202f])"
_SPACED_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:" + _GROUP_SEP + r"\d{3})+(?![\d])")
_OR_RE = re.compile(
    r"\s*(?:\\q?quad\s*)*(?:\\(?:text|mathrm|textrm|mbox)\{\s*or\s*\}|(?<=[\s$}])or(?=[\s$\\]))\s*(?:\\q?quad\s*)*"
)


def normalize_spellings(s: str) -> str:
    """Relations (``\\ge``, ``>=``, ``≥`` -> ``\\geq``; ``\\lt`` -> ``<``), digit groups
    separated by spaces (``12 500`` -> ``12500``), "or" between list items -> ", "."""
    if "\\" in s or "=" in s or "<" in s or ">" in s or not s.isascii():
        for rx, rep in _RELATION_SPELLINGS:
            s = rx.sub(rep, s)
    s = _SPACED_THOUSANDS_RE.sub(lambda m: re.sub(_GROUP_SEP, "", m.group(0)), s)
    if "or" in s:
        s = _OR_RE.sub(", ", s)
    return s


# ---------------------------------------------------------------------------------------------
# Fast path: both answers plain numbers (no sympy, no parser).

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_RE = re.compile(r"^(" + _NUM + r")(\s*\\%)?$")
_FRAC_RE = re.compile(r"^([-+]?)\\[dt]?frac(?:\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}|(\d)(\d))$")
_SLASH_RE = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")


def plain_number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_percent) of an integer, decimal, fraction or ``X\\%``; None for anything else."""
    if len(s) > 40:
        return None
    m = _PLAIN_RE.match(s)
    if m:
        return Fraction(m.group(1)), m.group(2) is not None
    m = _FRAC_RE.match(s)
    if m:
        num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
        if int(den) == 0:
            return None
        return Fraction(int(num), int(den)) * (-1 if m.group(1) == "-" else 1), False
    m = _SLASH_RE.match(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2))), False
    return None


def plain_equal(gold: tuple[Fraction, bool], pred: tuple[Fraction, bool]) -> bool:
    """Equality of two plain numbers under the percent policy (X% matches X and X/100)."""
    (g, g_pct), (p, p_pct) = gold, pred
    if g_pct == p_pct:
        return g == p or (not g_pct and _fraction_expands(g, p))
    if p_pct:
        return p == g or p / 100 == g
    return p == g or p == g / 100


def _fraction_expands(a: Fraction, b: Fraction) -> bool:
    """One of two plain numbers is a long decimal that expands the other (a non-finite decimal)."""
    for exact, dec in ((a, b), (b, a)):
        places = _places(dec)
        if places is None or not _non_terminating(exact):
            continue
        if _significant(dec, places) >= MIN_APPROX_DIGITS and abs(exact - dec) <= Fraction(1, 10**places):
            return True
    return False


def _places(x: Fraction) -> int | None:
    """k such that x's decimal has k digits after the point (x * 10^k an integer), k <= 200."""
    d, k = x.denominator, 0
    while d % 10 == 0 and k < 200:
        d //= 10
        k += 1
    while d % 2 == 0 or d % 5 == 0:
        if k >= 200:
            return None
        d = d // 2 if d % 2 == 0 else d // 5
        k += 1
    return k if d == 1 else None


def _significant(x: Fraction, places: int) -> int:
    return len(str(abs(x.numerator) * 10**places // x.denominator).lstrip("0"))


def _non_terminating(x: Fraction) -> bool:
    return _places(x) is None


def fraction_str(x: Fraction) -> str:
    """``str`` of the equal sympy Rational ('3', '-1/2'), for votes."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


# ---------------------------------------------------------------------------------------------
# Long decimals (see "Decimal approximations" in math_accuracy's docstring).

MIN_APPROX_DIGITS = 12
_DECIMAL_RE = re.compile(r"^[-+]?(\d*)\.(\d+)$")


def long_decimal(s: str) -> tuple[Fraction, int] | None:
    """(value, digits after the point) of a decimal with >= MIN_APPROX_DIGITS significant digits."""
    m = _DECIMAL_RE.match(s.strip())
    if not m or len(s) > 200:
        return None
    if len((m.group(1) + m.group(2)).lstrip("0")) < MIN_APPROX_DIGITS:
        return None
    return Fraction(s.strip()), len(m.group(2))


def _terminates(q: sympy.Rational) -> bool:
    d = int(q.q)
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def decimal_agrees(decimal: tuple[Fraction, int], exact: Any) -> bool:
    """True if ``exact`` (a sympy number with no finite decimal form) is within one unit of the
    last written digit of ``decimal``: the digits are its truncation or rounding."""
    value, places = decimal
    if not isinstance(exact, sympy.Expr) or exact.free_symbols or exact.atoms(sympy.Float):
        return False
    if not exact.is_number or not exact.is_real:
        return False
    if isinstance(exact, sympy.Rational) and _terminates(exact):
        return False  # a finite decimal reference is compared exactly
    diff = sympy.Abs(exact - sympy.Rational(value.numerator, value.denominator)).evalf(places + 20)
    if not diff.is_Number:
        return False
    return bool(diff <= sympy.Rational(1, 10**places))


def vote_form(decimal: tuple[Fraction, int]) -> str | None:
    """The simple fraction a long decimal expands (to one unit of its last digit), for votes."""
    value, places = decimal
    # Denominators up to 10^((digits - 4) / 2): a random 12-digit decimal is that close to one of
    # them with probability ~1e-3, so distinct irrational answers do not vote together.
    digits = len(str(abs(value.numerator) * 10**places // value.denominator).lstrip("0"))
    q = value.limit_denominator(min(10**6, 10 ** max(0, (digits - 4) // 2)))
    if q.denominator > 1 and abs(q - value) <= Fraction(1, 10**places):
        return fraction_str(q)
    return None


# ---------------------------------------------------------------------------------------------
# Relations as solution sets: x >= 2 is [2, oo); -1 <= x <= 4 is [-1, 4]; x < 0 or x > 1 a union.

_REL_TYPES = (sympy.GreaterThan, sympy.StrictGreaterThan, sympy.LessThan, sympy.StrictLessThan)


def _rel_set(rel: Any) -> tuple[Any, Any] | None:
    lhs, rhs = rel.lhs, rel.rhs
    if isinstance(lhs, sympy.Symbol) and not rhs.free_symbols and rhs.is_real is not False:
        var, bound, flip = lhs, rhs, False
    elif isinstance(rhs, sympy.Symbol) and not lhs.free_symbols and lhs.is_real is not False:
        var, bound, flip = rhs, lhs, True
    else:
        return None
    greater = isinstance(rel, (sympy.GreaterThan, sympy.StrictGreaterThan)) != flip
    strict = isinstance(rel, (sympy.StrictGreaterThan, sympy.StrictLessThan))
    if greater:
        return var, sympy.Interval(bound, sympy.oo, left_open=strict, right_open=True)
    return var, sympy.Interval(-sympy.oo, bound, left_open=True, right_open=strict)


def solution_set(expr: Any) -> tuple[Any, Any, bool] | None:
    """(variable or None, set, written as a relation) of an inequality, a chain of them, an
    "or" of them, ``x \\in S`` or an interval / union; None for anything else."""
    if isinstance(expr, _REL_TYPES):
        r = _rel_set(expr)
        return (r[0], r[1], True) if r else None
    if isinstance(expr, (sympy.And, sympy.Or, sympy.FiniteSet)) and expr.args:
        parts = [solution_set(a) for a in expr.args]
        if any(p is None or not p[2] for p in parts) or len({p[0] for p in parts}) != 1:
            return None
        combine = sympy.Intersection if isinstance(expr, sympy.And) else sympy.Union
        return parts[0][0], combine(*[p[1] for p in parts]), True
    if (
        isinstance(expr, sympy.Eq)
        and isinstance(expr.lhs, sympy.Symbol)
        and isinstance(expr.rhs, (sympy.Interval, sympy.Union))
    ):
        return expr.lhs, expr.rhs, True
    if isinstance(expr, (sympy.Interval, sympy.Union)):
        return None, expr, False
    return None


def same_solution_set(g: Any, p: Any) -> bool:
    """Both answers denote the same set of values and at least one is written as a relation."""
    a, b = solution_set(g), solution_set(p)
    if a is None or b is None or not (a[2] or b[2]):
        return False
    if a[0] is not None and b[0] is not None and a[0] != b[0]:
        return False
    try:
        return bool(a[1] == b[1]) or bool(sympy.simplify(sympy.SymmetricDifference(a[1], b[1])) is sympy.S.EmptySet)
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------
# Evaluation guard.

MAX_EXACT_DIGITS = 20_000
MAX_FACTORIAL_ARG = 5_000
_EAGER_FUNCTIONS = (sympy.factorial, sympy.factorial2, sympy.binomial, sympy.gamma, sympy.subfactorial)


def cheap_to_evaluate(expr: Any, strict: bool = True) -> bool:
    """True if evaluating ``expr``'s numbers exactly cannot build a huge one: no power whose
    result has more than MAX_EXACT_DIGITS digits, no nested numeric exponent, and (``strict``)
    no factorial-like function at all, or (not ``strict``) none of a number above
    MAX_FACTORIAL_ARG or of an unevaluated numeric argument."""
    for p in expr.atoms(sympy.Pow):
        base, exp = p.base, p.exp
        if base.free_symbols:
            continue  # x^{1000} stays symbolic whatever happens to its exponent
        digits = (abs(int(base.p)).bit_length() // 3 + 1) if isinstance(base, sympy.Integer) else len(str(base))
        if not exp.is_Number:
            if exp.free_symbols:
                continue
            # A numeric exponent that is not a number: 10^{(\sqrt{13}-5)/6} is small and fine,
            # 2^{2^{40}} is not. Bound it numerically once the exponent itself is cheap.
            if not cheap_to_evaluate(exp, strict):
                return False
            try:
                size = abs(complex(exp.evalf(15)))
            except (TypeError, ValueError):
                return False
            if not math.isfinite(size) or digits * size > MAX_EXACT_DIGITS:
                return False
            continue
        if not exp.is_finite or digits * abs(exp) > MAX_EXACT_DIGITS:
            return False
    funcs = expr.atoms(*_EAGER_FUNCTIONS)
    if strict:
        return not funcs
    for f in funcs:
        for a in f.args:
            if a.free_symbols:
                continue
            if not a.is_Number or abs(a) > MAX_FACTORIAL_ARG:
                return False
    for s in expr.atoms(sympy.Sum, sympy.Product):
        for lim in s.limits:
            if any(not b.free_symbols and (not b.is_Number or abs(b) > 10**6) for b in lim[1:]):
                return False
    return True
