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
2. otherwise the last ``\\boxed{...}`` / ``\\fbox{...}`` of the completion (nested braces matched);
3. otherwise the last "final answer is ... / the answer is ... / Answer: ..." phrase;
4. otherwise there is no answer: reward 0 (no "last number in the text" fallback, which would
   reward unformatted rambling).
An answer longer than ``MAX_ANSWER_CHARS`` or with braces nested deeper than ``MAX_BRACE_DEPTH``
scores 0 without being parsed (no real final answer looks like that; it only costs time).

Equivalence (math-verify's rules, plus the normalisation below): integers, decimals, fractions
(``\\frac``, ``\\dfrac``, ``a/b``), scientific notation (``1.5e3``, ``1.5\\times10^3``), radicals,
pi, symbolic expressions, equations (``x = 3`` matches ``3``), intervals, sets, tuples, units in
``\\text{...}`` stripped, thousands separators (``1,000`` and ``1{,}000``). A decimal approximation
of an irrational reference (3.14 for pi) is wrong.

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

# Timeouts are disabled on purpose (see module docstring); math-verify warns about that on every
# first call, which in workers is noise.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_ANSWER_CHARS = 1000
MAX_BRACE_DEPTH = 30
_MAX_BOXED_CANDIDATES = 5  # bounds the work on strings made of many unbalanced \boxed{

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_PHRASE_RE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(?:[:=]\s*)?", re.IGNORECASE
)
_LETTER_RE = re.compile(r"^\(?\s*([A-J])\s*\)?(?:\s*[.):]|\s*$)")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?$")
_SCI_E_RE = re.compile(r"(?<![\w\\])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
# Unicode a model may emit instead of LaTeX; latex2sympy does not read these.
_UNICODE_MATH = {
    "\u2212": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u03c0": "\\pi ", "\u221e": "\\infty ",
    "\u00bd": "\\frac{1}{2}", "\u2153": "\\frac{1}{3}", "\u2154": "\\frac{2}{3}", "\u00bc": "\\frac{1}{4}",
    "\u00be": "\\frac{3}{4}", "\u215b": "\\frac{1}{8}", "\u200b": "", "\u00a0": " ",
}
_UNICODE_TABLE = str.maketrans(_UNICODE_MATH)
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\{(.*)\}$", re.DOTALL)


def _matching_brace(s: str, open_pos: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_pos`` (``\\{``/``\\}`` skipped), or None."""
    depth = 0
    i = open_pos
    n = len(s)
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


def _last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``)."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    for start in reversed(starts[-_MAX_BOXED_CANDIDATES:]):
        j = start
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            end = _matching_brace(text, j)
            if end is not None:
                return text[j + 1 : end]
        elif j > start:  # "\boxed 5": one token
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                return tok.group(0)
    return None


def _phrase_answer(text: str) -> str | None:
    """What follows the last "the answer is" / "final answer:" phrase, up to the sentence end."""
    last = None
    for m in _PHRASE_RE.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end() :].lstrip()
    if rest.startswith("$"):  # $...$ or $$...$$: take the math
        m = re.match(r"\$\$(.+?)\$\$|\$(.+?)\$", rest, re.DOTALL)
        if m:
            return m.group(1) or m.group(2)
    if rest.startswith("\\boxed") or rest.startswith("\\fbox"):
        return _last_boxed(rest[: rest.find("\n") if "\n" in rest else len(rest)]) or None
    line = rest.split("\n", 1)[0]
    # Sentence end: a period followed by a space or the end (not a decimal point).
    m = re.search(r"\.(?:\s|$)", line)
    span = line[: m.start()] if m else line
    return span.strip() or None


def extract_answer_span(completion: str) -> str | None:
    """The raw final-answer text by the priority in the module docstring (string ops only)."""
    start = completion.rfind("<answer>")
    if start != -1:
        end = completion.find("</answer>", start)
        block = completion[start + len("<answer>") : end if end != -1 else len(completion)]
        span = _last_boxed(block) or _phrase_answer(block) or block
    else:
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
    s = s.rstrip(" .;")
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


def _parse_span(span: str) -> list:
    """math-verify parse of an already extracted answer; [] when nothing parses."""
    # Boxing the span makes math-verify take exactly this text as the answer (its own search
    # would otherwise look for other candidates inside it).
    parsed = parse("\\boxed{" + span + "}", extraction_config=_EXTRACTION, parsing_timeout=None)
    if not parsed or not isinstance(parsed[0], (sympy.Basic, sympy.MatrixBase)):
        plain = parse(span, extraction_config=_EXTRACTION, parsing_timeout=None)
        if plain and isinstance(plain[0], (sympy.Basic, sympy.MatrixBase)):
            return plain
    return parsed


@lru_cache(maxsize=4096)
def _parse_gold(answer: str) -> tuple:
    # Cached: a GRPO group grades G completions against the same reference.
    return tuple(_parse_span(normalize_span(answer)))


def _equivalent(gold: str, pred: str) -> bool:
    """math-verify equivalence of two answer strings (both already extracted)."""
    if _too_big(pred):
        return False
    g = list(_parse_gold(gold))
    p = _parse_span(normalize_span(pred))
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


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
    raise ValueError(f'example["choices"]: expected a list of option texts or a {{letter: text}} dict, got {type(choices).__name__}')


def _multiple_choice(pred: str, gold: str, choices: Any) -> bool:
    options = _choice_list(choices)
    gold_letter = _letter(gold)
    if gold_letter is None or gold_letter not in options:
        # The reference is the option text: find its letter.
        matches = [k for k, v in options.items() if v.strip() == gold.strip()]
        if not matches:
            raise ValueError(f'example["answer"]={gold!r} is neither a letter of example["choices"] nor one of its texts')
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
    if isinstance(expr, sympy.Mul) and len(expr.args) == 2 and expr.args[1] == sympy.UnevaluatedExpr(sympy.Rational(1, 100)):
        expr = expr.args[0]  # percent: vote on the number before the % sign (policy above)
    if isinstance(expr, sympy.Basic) and not isinstance(expr, L2SFiniteSet) and expr.is_number:
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
    and \\frac{1}{2} all give '1/2'); other expressions give sympy's printed form, and text that
    does not parse gives the normalised answer text.
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
    parsed = _parse_span(s)
    if parsed and isinstance(parsed[0], (sympy.Basic, sympy.MatrixBase)):
        return _canonical(parsed[0])
    return s
