"""Math accuracy reward: is the completion's final answer equivalent to the reference?

RUN THIS ONLY INSIDE A WORKER OF ``r1hpc.rewards.isolation.WorkerPool``: equivalence is decided by
math-verify / latex2sympy2_extended + sympy, which evaluate what they parse (``sympify`` calls
``eval``) and can hang or exhaust memory on hostile input. The functions here are pure (no I/O,
no global state besides a small parse cache); the pool supplies the time and memory limits, which
is why math-verify's own ``signal.alarm`` timeouts are switched off (they only work in a main
thread and cannot interrupt a long C-level big-integer operation anyway).

Which answer is graded (first rule that applies):
1. the last ``<answer>...</answer>`` block (an unclosed ``<answer>`` runs to the end): inside it,
   the last ``\\boxed{...}``; else the last "the answer is ..." phrase; else the whole block;
2. otherwise, after the last ``</think>`` (R1 style), the last box, else the last answer phrase;
3. otherwise the last ``\\boxed{...}`` / ``\\fbox{...}`` of the completion (nested braces matched);
4. otherwise the last "final answer is ... / the answer is ... / Answer: ... / #### ..." phrase
   (also "la respuesta es", "la réponse est", "die Antwort ist", "a resposta é", "Ответ:", "答案是");
   an answer sentence gives its value ("Final Answer: The smallest $k$ is 12." grades 12);
5. otherwise there is no answer: reward 0 (no "last number in the text" fallback, which would
   reward unformatted rambling).
"The last box" is one multi-part answer when boxes follow each other with only connectors
between them (commas, "and" / "or" also as ``\\text{...}``, ``x =``, math delimiters, spacing):
``\\boxed{3}, \\boxed{5}`` and ``$x = \\boxed{3}$ or $x = \\boxed{5}$`` are the list ``3, 5``
(a repeated box counts once); a box followed by words ("... then we get \\boxed{4}") starts anew.
Likewise "the answer is $2$ or $3$" is the list ``2, 3``. A list states no order (below), so the
parts of a multi-part answer may come in any order, in grading and in votes.
An answer longer than ``MAX_ANSWER_CHARS`` or with braces nested deeper than ``MAX_BRACE_DEPTH``
scores 0 without being parsed (no real final answer looks like that; it only costs time).

Equivalence (math-verify's rules, plus the normalisation below): integers, decimals, fractions
(``\\frac``, ``\\dfrac``, ``a/b``), scientific notation (``1.5e3``, ``1.5\\times10^3``), radicals,
pi, symbolic expressions, equations (``x = 3`` matches ``3``), intervals, sets, tuples, units in
``\\text{...}`` stripped, thousands separators (``1,000``, ``1{,}000``, and digit groups of three after
a space, thin space or ``\\,``: ``12 500``), matrices and vectors (pmatrix, bmatrix, array; a sum
of matrices is its value). Relations are spelled one way before parsing (``\\ge``, ``\\geqslant``,
``>=``, ``≥`` are ``\\geq``; ``\\lt`` is ``<``; ``!=``, ``\\ne``, ``≠`` are ``\\neq``), and an
inequality in one variable, a chain (``-1 \\le x \\le 4``) or an "or" of them is its solution set:
it matches the interval / union (``[-1, 4]``, ``x \\in [-1, 4]``) or the relation written any other
way (``2 \\le x`` for ``x \\geq 2``); ``x > 2`` is not ``x \\geq 2``. "or" between answers is a
list separator like "and".

Fast path: when both answers are plain numbers (integer, decimal, ``\\frac{a}{b}``, ``a/b``, ``X\\%``)
they are compared as exact fractions without the parser (most answers of math data sets are).
Answers whose exact value would be huge (a nested or huge power, a factorial of more than 5000,
a sum over more than 10^6 terms) are compared as written, never evaluated.

Decimals are exact: a number written with a decimal point or in scientific notation means the
rational its digits denote (``0.250`` is 1/4, ``1.23456789e10`` is 12345678900), on both sides, so
numeric equivalence is exact, not math-verify's "equal after rounding to 6 decimals". Hence a
decimal approximation of a reference that has no finite decimal form is wrong however many digits
it has (``3.14``, ``3.1416`` and ``3.14159265`` for pi; ``1.414`` for sqrt(2); ``0.333333`` for
1/3), and decimal answers match decimal references only when they are the same number
(``2.50`` = ``2.5``, ``1.2345678e10`` != 12345678900). A reference that is itself a rounded
decimal (``0.33``) therefore only accepts that decimal, not the exact 1/3.

Decimal approximations (long decimals): a decimal written with at least 12 significant digits
(``math_answers.MIN_APPROX_DIGITS``) matches a reference that has no finite decimal form (1/12,
pi, sqrt(2)) when it agrees with it to within one unit of its last written digit (the digits
are the truncation or the rounding of the exact value: ``0.0833333333333333`` and
``0.08333333333333333`` for 1/12, ``3.141592653589793`` for pi), either way round. Why 12: the
rule must not reward a rounding (``3.14``, ``3.1416``, ``0.333333``, a 10-digit calculator
display ``0.08333333333``: the precision the question or the tool chose, which also matches
nearby wrong values) and must not punish an expansion printed to float precision (15-17 digits
from code or a CAS), which cannot be written without knowing the value: a wrong answer agrees
with the reference to 12 digits by chance with probability ~1e-12. Finite references stay exact
(``0.30000000000000004`` is not 0.3). Sums, products and
powers of plain numbers are evaluated exactly too (``1e-20`` != ``2e-20``; math-verify's
15-digit numeric check would call them equal).

Sets are unordered, tuples ordered: an answer written as a set (``\\{1,2\\}``) does not match one
written as a tuple (``(1,2,3)``) or as ``(1,2)`` (an open interval or a pair, never a set), in
either direction. A bare list ``1, 2`` states no order and matches both ``\\{1,2\\}`` and ``(1,2)``;
"and" separates list items (``2 and 3`` matches ``2, 3``, a list of answers).

Percent policy: the percent sign is read as "this number, in percent". ``50\\%`` matches a
reference of ``50``, ``50\\%`` or ``0.5``/``\\frac12``; a bare ``0.5`` matches ``50\\%`` but not a
reference of ``50`` (nothing says it is a fraction of 100).

Multiple choice: ``example["choices"]`` is a list of option texts (A, B, C, ... in order) or a
dict ``{letter: text}``; ``example["answer"]`` is the correct letter or the correct option's
text. A predicted letter (``B``, ``(B)``, ``\\text{B}``, ``B)``) must be the correct letter; a
predicted option text must be equivalent to the correct option. Without ``choices``, a reference
that is a single capital letter A-J is graded as a letter.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import sympy
from latex2sympy2_extended.sets import FiniteSet as L2SFiniteSet
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from r1hpc.rewards import math_answers as ma
from r1hpc.rewards.math_answers import last_boxed as _last_boxed

# Timeouts are disabled on purpose (see module docstring); math-verify warns about that on every
# first call, which in workers is noise.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_ANSWER_CHARS = 1000
MAX_BRACE_DEPTH = 30

_PHRASE_RE = re.compile(
    r"(?:(?:final answer|the answer|answer)\s*(?:is|:|=)|^####|\n####"
    r"|(?:la )?respuesta(?: final)? es|(?:la )?réponse(?: finale)? est"
    r"|(?:die )?antwort (?:ist|lautet)|(?:a )?resposta (?:final )?é|ответ\s*:|答案\s*(?:是|为|：|:))\s*(?:[:=：]\s*)?",
    re.IGNORECASE,
)
_LETTER_RE = re.compile(r"^\(?\s*([A-J])\s*\)?(?:\s*[.):]|\s*$)")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?$")
_SCI_E_RE = re.compile(r"(?<![\w\\])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
# Unicode a model may emit instead of LaTeX; latex2sympy does not read these.
_UNICODE_MATH = {
    "\u2212": "-",
    "\u00d7": "\\times ",
    "\u00b7": "\\cdot ",
    "\u03c0": "\\pi ",
    "\u221e": "\\infty ",
    "\u00bd": "\\frac{1}{2}",
    "\u2153": "\\frac{1}{3}",
    "\u2154": "\\frac{2}{3}",
    "\u00bc": "\\frac{1}{4}",
    "\u00be": "\\frac{3}{4}",
    "\u215b": "\\frac{1}{8}",
    "\u200b": "",
    "\u00a0": " ",
}
_UNICODE_TABLE = str.maketrans(_UNICODE_MATH)
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\{(.*)\}$", re.DOTALL)


def _phrase_answer(text: str) -> str | None:
    """What follows the last "the answer is" / "final answer:" phrase, up to the sentence end."""
    last = None
    for m in _PHRASE_RE.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end() :].lstrip()
    if rest.startswith("$"):  # $...$ or $$...$$: take the math ("$2$ or $3$": both)
        math = ma.leading_math(rest)
        if math:
            return math
    if rest.startswith("\\boxed") or rest.startswith("\\fbox"):
        return _last_boxed(rest[: rest.find("\n") if "\n" in rest else len(rest)]) or None
    line = rest.split("\n", 1)[0]
    # Sentence end: a period (or 。) followed by a space or the end (not a decimal point).
    m = re.search(r"\.(?:\s|$)|。", line)
    span = line[: m.start()] if m else line
    return ma.sentence_value(span.strip()).strip() or None


def extract_answer_span(completion: str) -> str | None:
    """The raw final-answer text by the priority in the module docstring (string ops only)."""
    start = completion.rfind("<answer>")
    if start != -1:
        end = completion.find("</answer>", start)
        block = completion[start + len("<answer>") : end if end != -1 else len(completion)]
        span = _last_boxed(block) or _phrase_answer(block) or block
    else:
        span = None
        think_end = completion.rfind("</think>")
        if think_end != -1:  # R1 style: the answer after the reasoning comes first
            tail = completion[think_end + len("</think>") :]
            span = _last_boxed(tail) or _phrase_answer(tail)
        if span is None:
            span = _last_boxed(completion)
        if span is None:
            span = _phrase_answer(completion)
    if span is None:
        return None
    span = span.strip()
    return span or None


def normalize_span(span: str) -> str:
    """Cheap textual clean-up that math-verify does not do (no parsing, safe anywhere)."""
    s = span.translate(_UNICODE_TABLE).strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    s = s.rstrip(" .;。")
    s = ma.normalize_spellings(s)
    if _THOUSANDS_RE.match(s):
        s = s.replace("{,}", "").replace(",", "")
    s = _SCI_E_RE.sub(r"\1\\times 10^{\2}", s)
    return s


def _brace_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c == "{":
            depth += 1
            best = max(best, depth)
        elif c == "}":
            depth -= 1
    return best


def _too_big(s: str) -> bool:
    return len(s) > MAX_ANSWER_CHARS or _brace_depth(s) > MAX_BRACE_DEPTH


_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _cheap_to_evaluate(expr: Any) -> bool:
    """True if evaluating ``expr``'s numbers exactly cannot build a huge one: no power with more
    than ``math_answers.MAX_EXACT_DIGITS`` digits (1.5 \\times 10^{10^{9}} would be a
    billion-digit integer), no nested numeric power, no factorial."""
    return ma.cheap_to_evaluate(expr, strict=True)


def _is_number_tree(expr: Any) -> bool:
    """Sums, products and powers of plain numbers only (no pi, no percent, no symbol)."""
    if isinstance(expr, sympy.Number):
        return True
    return isinstance(expr, (sympy.Add, sympy.Mul, sympy.Pow)) and all(_is_number_tree(a) for a in expr.args)


def _exact_numbers(expr: Any) -> Any:
    """``expr`` with decimals read as exact rationals and plain arithmetic on numbers evaluated.

    latex2sympy reads ``1.23456789`` as a binary Float, and math-verify compares Floats after
    rounding to 6 decimals (or, inside expressions, numerically to 15 digits with tiny
    differences chopped to 0), so ``1.23456789\\times10^{10}`` missed 12345678900 (binary error
    x 10^10 is not 0), ``3.14159265`` matched pi (same 6 decimals) and ``1e-20`` matched
    ``2e-20`` (their difference is below the chop). Here every Float becomes the rational its
    decimal digits denote (``0.250`` is 1/4; a decimal never equals pi, sqrt(2) or 1/3), and a
    tree of sums, products and powers of numbers (``1.5\\times10^{3}``, ``10^{-20}``) is
    evaluated to one exact number. Expressions where that could be expensive (huge or nested
    exponents, factorials) are returned unchanged.
    """
    if not isinstance(expr, (sympy.Basic, sympy.MatrixBase)) or not _cheap_to_evaluate(expr):
        return expr
    floats = expr.atoms(sympy.Float)
    if floats:
        exact = {}
        for f in floats:
            try:
                # str() gives the Float's decimal digits at the precision latex2sympy read it
                # with (all digits written), so Rational of it is exact. inf/nan raise.
                exact[f] = sympy.Rational(str(f))
            except (TypeError, ValueError):
                return expr
        expr = expr.xreplace(exact)  # rebuilding evaluates: 0.5 x -> x/2
    if not isinstance(expr, sympy.Number) and _is_number_tree(expr):
        expr = expr.doit()
    return expr


def _parse_span(span: str) -> list:
    """math-verify parse of an already extracted answer, decimals made exact; [] when nothing parses."""
    # Boxing the span makes math-verify take exactly this text as the answer (its own search
    # would otherwise look for other candidates inside it).
    parsed = parse("\\boxed{" + span + "}", extraction_config=_EXTRACTION, parsing_timeout=None)
    if not parsed or not isinstance(parsed[0], (sympy.Basic, sympy.MatrixBase)):
        plain = parse(span, extraction_config=_EXTRACTION, parsing_timeout=None)
        if plain and isinstance(plain[0], (sympy.Basic, sympy.MatrixBase)):
            parsed = plain
    return [_exact_numbers(x) for x in parsed]


@lru_cache(maxsize=4096)
def _parse_gold(answer: str) -> tuple:
    # Cached: a GRPO group grades G completions against the same reference.
    return tuple(_parse_span(normalize_span(answer)))


def _equivalent(gold: str, pred: str) -> bool:
    """Equivalence of two answer strings (both already extracted): module docstring."""
    if _too_big(pred):
        return False
    gold_n, pred = normalize_span(gold), normalize_span(pred)
    g_plain, p_plain = ma.plain_number(gold_n), ma.plain_number(pred)
    if g_plain is not None and p_plain is not None:
        return ma.plain_equal(g_plain, p_plain)  # fast path: no parser, no sympy
    g = list(_parse_gold(gold))
    p = _parse_span(pred)
    if not g or not p:
        return False
    g0, p0 = g[0], p[0]
    if _set_vs_ordered(gold_n, g0, pred, p0):
        return False
    if isinstance(p0, sympy.Basic) and not ma.cheap_to_evaluate(p0, strict=False):
        # 2^{2^{40}}, 10^8!: math-verify would evaluate it (and be killed at the time limit).
        # Only the same expression written the same way can match.
        return bool(p0 == g0)
    if verify(g, p, timeout_seconds=None):
        return True
    if ma.same_solution_set(g0, p0):  # x \geq 2 vs [2, \infty); -1 \le x \le 4 vs x \in [-1, 4]
        return True
    g_dec, p_dec = ma.long_decimal(_equation_rhs(gold_n)), ma.long_decimal(_equation_rhs(pred))
    if p_dec is not None and g_dec is None and ma.decimal_agrees(p_dec, _rhs(g0)):
        return True
    if g_dec is not None and p_dec is None and ma.decimal_agrees(g_dec, _rhs(p0)):
        return True
    # Percent policy: "X%" also matches a reference of X, either way round. math-verify unwraps
    # the percent for integers only (50% = 50), so 12.5% missed 12.5.
    g_num, p_num = _percent_value(g0), _percent_value(p0)
    if g_num is None and p_num is None:
        return False
    return bool(verify([g0 if g_num is None else g_num], [p0 if p_num is None else p_num], timeout_seconds=None))


_EQ_PREFIX_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")


def _equation_rhs(span: str) -> str:
    """ "x = 0.25" -> "0.25" (text)."""
    return _EQ_PREFIX_RE.sub("", span, count=1)


def _rhs(expr: Any) -> Any:
    """Eq(x, 3) -> 3 (expression), as "x = 3" is graded like "3"."""
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):
        return expr.rhs
    return expr


def _percent_value(expr: Any) -> Any:
    """X for latex2sympy's percent form X * UnevaluatedExpr(1/100) with a plain number X; else None."""
    if (
        isinstance(expr, sympy.Mul)
        and len(expr.args) == 2
        and isinstance(expr.args[0], sympy.Number)
        and expr.args[1] == sympy.UnevaluatedExpr(sympy.Rational(1, 100))
    ):
        return expr.args[0]
    return None


_EXPLICIT_SET_RE = re.compile(r"^\\(?:left\\)?\{.*\\(?:right\\)?\}$", re.DOTALL)


def _set_vs_ordered(gold: str, g: Any, pred: str, p: Any) -> bool:
    """True if one answer is written as a set ``\\{a,b\\}`` and the other is ordered: a tuple
    ``(a,b,c)`` or ``(a,b)`` (which latex2sympy reads as an open interval; math-verify then
    compares it with any two-element set as the pair (a, b)). A set is neither an ordered pair
    nor an interval. A bare list ``a, b`` stays comparable with both (it states no order)."""

    def ordered(x: Any) -> bool:
        return isinstance(x, sympy.Tuple) or (isinstance(x, sympy.Interval) and x.left_open and x.right_open)

    return (bool(_EXPLICIT_SET_RE.match(gold)) and ordered(p)) or (bool(_EXPLICIT_SET_RE.match(pred)) and ordered(g))


def _letter(s: str) -> str | None:
    s = s.strip()
    m = _TEXT_WRAP_RE.match(s)
    if m:
        s = m.group(1).strip()
    m = _LETTER_RE.match(s)
    return m.group(1) if m else None


def _choice_list(choices: Any) -> dict[str, str]:
    if isinstance(choices, dict):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    if isinstance(choices, (list, tuple)):
        return {chr(ord("A") + i): str(v) for i, v in enumerate(choices)}
    raise ValueError(
        f'example["choices"]: expected a list of option texts or a {{letter: text}} dict, got {type(choices).__name__}'
    )


def _multiple_choice(pred: str, gold: str, choices: Any) -> bool:
    options = _choice_list(choices)
    gold_letter = _letter(gold)
    if gold_letter is None or gold_letter not in options:
        # The reference is the option text: find its letter.
        matches = [k for k, v in options.items() if v.strip() == gold.strip()]
        if not matches:
            raise ValueError(
                f'example["answer"]={gold!r} is neither a letter of example["choices"] nor one of its texts'
            )
        gold_letter = matches[0]
    pred_letter = _letter(pred)
    if pred_letter is not None:
        return pred_letter == gold_letter
    return _equivalent(options[gold_letter], pred)


def accuracy_math(completion: str, example: dict) -> float:
    """1.0 if the completion's final answer is equivalent to ``example["answer"]``, else 0.0.

    ``example["answer"]``: the reference (str; numbers are accepted and turned into str).
    ``example["choices"]`` (optional): options of a multiple-choice question (module docstring).
    """
    if "answer" not in example:
        raise KeyError('accuracy_math: example has no "answer" key (the reference answer)')
    gold = str(example["answer"])
    span = extract_answer_span(completion)
    if span is None:
        return 0.0
    if "choices" in example and example["choices"] is not None:
        return 1.0 if _multiple_choice(span, gold, example["choices"]) else 0.0
    gold_letter = _letter(gold)
    if gold_letter is not None and gold.strip().strip("()").strip() == gold_letter:
        return 1.0 if _letter(span) == gold_letter else 0.0
    return 1.0 if _equivalent(gold, span) else 0.0


def _canonical(expr: Any) -> str:
    """A string equal for answers that are the same number (0.5, 1/2, 50%: '1/2' / '50')."""
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):
        expr = expr.rhs  # "x = 3" votes with "3", as accuracy_math grades them alike
    if _percent_value(expr) is not None:
        expr = expr.args[0]  # percent: vote on the number before the % sign (policy above)
    if (
        isinstance(expr, sympy.FiniteSet)
        and expr.args
        and all(isinstance(a, sympy.Eq) and isinstance(a.lhs, sympy.Symbol) for a in expr.args)
    ):
        expr = sympy.FiniteSet(*[a.rhs for a in expr.args])  # "x = 2 or x = 3" votes with "2, 3"
    solution = ma.solution_set(expr)
    if solution is not None and solution[2]:
        return str(solution[1])  # x \geq 2, 2 \le x and x \in [2, \infty) vote together
    if isinstance(expr, (sympy.MatrixBase, sympy.MatrixExpr)) and ma.cheap_to_evaluate(expr, strict=False):
        try:
            expr = sympy.ImmutableMatrix(expr.doit()).applyfunc(sympy.nsimplify)  # a sum of matrices: its value
        except Exception:
            pass
        return str(expr).replace("\n", "")
    if isinstance(expr, sympy.Basic) and not isinstance(expr, L2SFiniteSet) and expr.is_number:
        if not ma.cheap_to_evaluate(expr, strict=False):
            return str(expr)
        try:
            expr = expr.doit()
        except Exception:
            pass
    if isinstance(expr, sympy.Float):
        expr = sympy.Rational(str(expr)).limit_denominator(10**12)
    return str(expr)


def extract_answer(completion: str) -> str | None:
    """Canonical form of the final answer, for majority voting (cons@k); None if there is none.

    Parses with sympy, so it too must run inside a pool worker. Numbers are canonical (0.5, 1/2
    and \\frac{1}{2} all give '1/2'); a decimal of at least ``math_answers.MIN_APPROX_DIGITS``
    significant digits that expands a fraction with denominator up to 10^6 gives that fraction
    (``0.0833333333333333`` votes with ``1/12``); relations give their solution set (``x \\geq 2``,
    ``x>=2`` and ``[2,\\infty)`` vote together); a multi-part answer (several boxes, a list)
    gives its set of parts, unordered as the verifier grades it (``\\boxed{3}, \\boxed{5}`` votes
    with ``\\boxed{5}, \\boxed{3}``); matrices give their value (a sum of matrices is added up);
    other expressions give sympy's printed form, and text that does not parse gives the
    normalised answer text.
    """
    span = extract_answer_span(completion)
    if span is None:
        return None
    s = normalize_span(span)
    if _too_big(s):
        return None
    letter = _letter(s)
    if letter is not None:
        return letter
    dec = ma.long_decimal(_equation_rhs(s))
    if dec is not None:
        form = ma.vote_form(dec)
        if form is not None:
            return form
    plain = ma.plain_number(s)
    if plain is not None:
        return ma.fraction_str(plain[0])  # percent: the number before the % sign (policy above)
    parsed = _parse_span(s)
    if parsed and isinstance(parsed[0], (sympy.Basic, sympy.MatrixBase)):
        try:
            return _canonical(parsed[0])
        except ValueError:  # a number too long for str() (Python's 4300-digit limit): vote on the text
            return s
    return s
