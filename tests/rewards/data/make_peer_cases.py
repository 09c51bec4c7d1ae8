"""Build peer_cases.jsonl from huggingface/Math-Verify's own labelled tests (not r1hpc's).

    .venv/bin/python tests/rewards/data/make_peer_cases.py /path/to/collected.jsonl

``collected.jsonl`` is one line per parametrized pytest item of Math-Verify's tests/ (commit
5d148cfaaf99214c2e4ffb4bc497ab042c592a7a), dumped at collection time as
{"file", "func", "params"}. Mapping to r1hpc's interface (reference answer + model completion):
- gold: outer $..$ / $$..$$ / \\(..\\) / \\[..\\] stripped; a gold that is a solution text with
  one box (or several equal boxes) becomes that box's content; a gold with several different boxes
  is skipped (the label then tests Math-Verify's multi-box gold extraction).
- prediction: kept as is when it has a \\boxed{} (that is how a model writes it); a prediction that
  is one math block or a bare expression becomes \\boxed{inner}, as Math-Verify's test extracts it
  whole; prose without a box is kept as is (kind "prose": r1hpc deliberately has no
  last-number / last-math fallback, so these measure extraction policy, not equivalence).
- test_boxed has the text on the gold side; gold and prediction are swapped there.
Skipped: configs that cannot be mapped (strict=False, allow_set_relation_comp=True,
float_rounding other than 6 or 5), StringExtractionConfig tests (no gold).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SRC = "huggingface/Math-Verify@5d148cf"
OUT = Path(__file__).with_name("peer_cases.jsonl")

_DELIMS = [(r"$$", r"$$"), (r"\[", r"\]"), (r"\(", r"\)"), ("$", "$")]


def strip_delims(s: str) -> str | None:
    """Inner text if s is a single delimited math block, else None."""
    t = s.strip()
    for a, b in _DELIMS:
        if t.startswith(a) and t.endswith(b) and len(t) >= len(a) + len(b):
            inner = t[len(a) : len(t) - len(b)]
            if a == "$" and "$" in inner.replace("\\$", ""):
                return None
            if a == "$$" and "$$" in inner:
                return None
            return inner.strip()
    return None


def boxes(s: str) -> list[str]:
    out = []
    for m in re.finditer(r"\\boxed\s*\{", s):
        i, depth = m.end(), 1
        while i < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[i], 0)
            i += 1
        out.append(s[m.end() : i - 1 if depth == 0 else i].strip())  # unclosed: to the end
    return out


def map_gold(g: str) -> tuple[str | None, str]:
    if "boxed" in g:
        bs = [b for b in boxes(g)]
        if not bs:
            return None, "gold has a malformed box"
        if len(set(bs)) > 1:
            return None, "gold has several different boxes (tests Math-Verify's gold extraction)"
        return bs[0], ""
    inner = strip_delims(g)
    if inner is not None:
        return inner, ""
    if "$" in g and not g.startswith("$"):
        return None, "gold is prose"
    return g.strip().strip("$").strip() if g.count("$") == 1 else g.strip(), ""


def map_pred(p: str, func: str) -> tuple[str, str]:
    if "boxed" in p:
        return p, "boxed"
    if func == "test_number_extraction" and not re.search(r"[a-zA-Z€²]", p):
        return "\\boxed{" + p.replace("$", "").strip() + "}", "bare"
    inner = strip_delims(p)
    if inner is not None:
        return "\\boxed{" + inner + "}", "math_block"
    if "$" not in p and "\\(" not in p and "\\[" not in p and not re.search(r"[a-zA-Z]{3,}\s", p):
        return "\\boxed{" + p.strip() + "}", "bare"
    return p, "prose"


def main(collected: Path) -> None:
    rows, skipped = [], []
    for line in collected.open():
        r = json.loads(line)
        p, func, f = r["params"], r["func"], r["file"]
        where = f"{SRC}:tests/{f}::{func}"
        if not p:
            continue  # not parametrized: config / timeout / precision unit tests
        if f == "test_string_extraction.py":
            skipped.append((where, "StringExtractionConfig, no gold"))
            continue
        if p.get("strict") is False:
            skipped.append((where, "strict=False"))
            continue
        if p.get("allow_set_relation_comp") is True:
            skipped.append((where, "allow_set_relation_comp=True"))
            continue
        if p.get("precision", 6) not in (5, 6):
            skipped.append((where, f"float_rounding={p['precision']}"))
            continue
        gold, pred = p["gold"], p["pred"]
        expected = p.get("expected", p.get("result"))
        if func == "test_boxed":
            gold, pred = pred, gold
        g, why = map_gold(gold)
        if g is None:
            skipped.append((where, why))
            continue
        completion, kind = map_pred(pred, func)
        rows.append(
            {
                "source": where,
                "gold_original": gold,
                "pred_original": pred,
                "answer": g,
                "completion": completion,
                "pred_kind": kind,
                "label": bool(expected),
            }
        )
    with OUT.open("w") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} cases written to {OUT}; {len(skipped)} skipped")
    for w, why in skipped:
        print("  skipped", w, "-", why)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
