"""The metrics of DeepSeek-R1's evaluation, as pure functions of graded eval records (the records
r1hpc.stages.eval publishes; nothing here reads files or runs model output).

Definitions (R1, section 3 "Evaluation Setup"):
- pass@1 = mean over problems of (correct samples / k).
- cons@k = majority vote over the k extracted, canonical answers (samples without an answer do
  not vote). The voted answer is correct if most of the samples that gave it were graded
  correct. Ties: the problem scores the fraction of tied answers that are correct, i.e. the
  expected score of breaking the tie uniformly at random (deterministic, and no tie rule that
  favours correct answers).
- The 95% interval of pass@1 (and of cons@k) is the normal approximation over problems:
  mean +- 1.96 * sd(per-problem scores) / sqrt(n problems), clipped to [0, 1]. It counts both
  noise sources, the finite problem set and the k samples per problem (the per-problem pass rate
  varies with both). When every problem scores the same (e.g. all wrong) that sd is 0 and the
  normal interval would be a single point; the Wilson score interval for n problems is given
  then (the interval if each problem were one Bernoulli draw: an upper bound on the variance of
  a mean of [0, 1] scores). `interval_method` in the summary says which was used.

General prompts: per prompt the mean reward-model score of its k samples; the model's score is the
mean over prompts with mean_interval's 95% interval (summarize_general).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

__all__ = [
    "Z95",
    "DEFAULT_SOURCE",
    "data_source",
    "majority_vote",
    "mean_interval",
    "summarize",
    "paired_difference",
    "summarize_general",
]

DEFAULT_SOURCE = "generated"  # the data_source of generated problems and of records without one
Z95 = 1.959963984540054


def data_source(item: dict[str, Any]) -> str:
    """The data_source of a problem or eval record; "generated" where it has none."""
    return str(item.get("data_source") or DEFAULT_SOURCE)


def majority_vote(answers: Sequence[str | None], correct: Sequence[float]) -> float:
    """cons@k score of one problem: 1.0 / 0.0, or a fraction when the top answers tie.

    answers[j]: sample j's canonical answer (None = no answer: it does not vote);
    correct[j]: its grade (0/1). A voted answer is correct if most samples giving it were correct.
    """
    if len(answers) != len(correct):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(correct)} grades")
    grades: dict[str, list[float]] = defaultdict(list)
    for a, c in zip(answers, correct):
        if a is not None:
            grades[a].append(c)
    if not grades:
        return 0.0
    top = max(len(g) for g in grades.values())
    tied = [g for g in grades.values() if len(g) == top]
    return sum(1.0 for g in tied if sum(g) / len(g) > 0.5) / len(tied)


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, str]:
    """(lo, hi, method) of a 95% interval for the mean of per-problem scores in [0, 1]:
    the normal approximation, or Wilson over n problems when the scores do not vary (module doc)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval: no values")
    mean = sum(values) / n
    sd = statistics.stdev(values) if n > 1 else 0.0
    if sd > 0:
        half = z * sd / math.sqrt(n)
        return max(0.0, mean - half), min(1.0, mean + half), "normal"
    p = min(1.0, max(0.0, mean))
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half), "wilson"


# Required in every record; "data_source" is optional (older shards lack it: read as DEFAULT_SOURCE).
_RECORD_KEYS = ("problem_id", "difficulty", "correct", "format", "answer", "response_tokens")


def _by_problem(records: Sequence[dict[str, Any]], k: int) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for i, r in enumerate(records):
        missing = [key for key in _RECORD_KEYS if key not in r]
        if missing:
            raise ValueError(f"eval record {i} (problem {r.get('problem_id')!r}) lacks {missing}")
        groups.setdefault(r["problem_id"], []).append(r)
    mixed = [pid for pid, g in groups.items() if len({data_source(r) for r in g}) > 1]
    if mixed:
        raise ValueError(f"eval records: problem ids {mixed[:5]} appear under more than one data_source")
    wrong = {pid: len(g) for pid, g in groups.items() if len(g) != k}
    if wrong:
        shown = ", ".join(f"{pid}: {n}" for pid, n in list(wrong.items())[:5])
        raise ValueError(f"eval records: expected k={k} samples per problem; got {shown}")
    return groups


def _metrics(groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    pass1 = [sum(r["correct"] for r in g) / len(g) for g in groups]
    cons = [majority_vote([r["answer"] for r in g], [r["correct"] for r in g]) for g in groups]
    flat = [r for g in groups for r in g]
    p_lo, p_hi, p_method = mean_interval(pass1)
    c_lo, c_hi, c_method = mean_interval(cons)
    return {
        "problems": len(groups),
        "samples": len(flat),
        "pass_at_1": sum(pass1) / len(pass1),
        "pass_at_1_ci": [p_lo, p_hi],
        "pass_at_1_ci_method": p_method,
        "cons_at_k": sum(cons) / len(cons),
        "cons_at_k_ci": [c_lo, c_hi],
        "cons_at_k_ci_method": c_method,
        "format_rate": sum(r["format"] for r in flat) / len(flat),
        "answered_rate": sum(r["answer"] is not None for r in flat) / len(flat),
        "mean_response_tokens": sum(r["response_tokens"] for r in flat) / len(flat),
        "truncated_rate": sum(r.get("finish_reason") == "length" for r in flat) / len(flat),
        **_optional_means(flat),
    }


# Optional record keys (shards written before they existed lack them) -> their summary mean.
_OPTIONAL_MEANS = {"language_consistency": "language_consistency", "mixed_language": "mixed_language_rate"}


def _optional_means(flat: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean over samples of each optional key that every record has (none for older shards)."""
    return {
        name: sum(float(r[key]) for r in flat) / len(flat)
        for key, name in _OPTIONAL_MEANS.items()
        if all(key in r for r in flat)
    }


def _breakdown(groups: Sequence[list[dict[str, Any]]], key: Any) -> dict[str, dict[str, Any]]:
    """_metrics per value of key(first record of a problem), keys as str in sorted order."""
    parts: dict[Any, list[list[dict[str, Any]]]] = defaultdict(list)
    for g in groups:
        parts[key(g[0])].append(g)
    return {str(v): _metrics(parts[v]) for v in sorted(parts)}


def summarize(records: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """All metrics over the problems of `records` (k per problem), per data source, per
    difficulty (no per-difficulty breakdown when every difficulty is 0, i.e. unknown), per
    target language and per problem kind (each only when every record has one)."""
    if not records:
        raise ValueError("summarize: no eval records")
    groups = _by_problem(records, k)
    out = {"k": k, **_metrics(list(groups.values()))}
    out["by_source"] = _breakdown(list(groups.values()), data_source)
    if any(int(g[0]["difficulty"]) != 0 for g in groups.values()):
        out["by_difficulty"] = _breakdown(list(groups.values()), lambda r: int(r["difficulty"]))
    if all("language" in r for r in records):  # older shards have no language: no breakdown
        out["by_language"] = _breakdown(list(groups.values()), lambda r: str(r["language"]))
    if all(r.get("kind") for r in records):  # the task family (arith, fraction, ...; math / code for files)
        out["by_kind"] = _breakdown(list(groups.values()), lambda r: str(r["kind"]))
    # Per-problem pass rates: two stages evaluated on the same problems can be compared pairwise,
    # which removes the between-problem spread from the interval (paired_difference).
    out["per_problem_pass"] = {pid: sum(r["correct"] for r in g) / len(g) for pid, g in sorted(groups.items())}
    out["problem_source"] = {pid: data_source(g[0]) for pid, g in sorted(groups.items())}
    out["model_versions"] = sorted({r["model_version"] for r in records if "model_version" in r})
    out["score_failures"] = sum(
        1 for r in records for s in r.get("score_status", {}).values() if s in ("timeout", "memory", "error")
    )
    return out


def _source_pass(summary: dict[str, Any], source: str | None) -> dict[str, float]:
    """{problem: pass rate} of a summary, only the problems of `source` unless it is None
    (summaries without problem_source, written before it existed: every problem is "generated")."""
    passes = summary.get("per_problem_pass") or {}
    if source is None:
        return passes
    sources = summary.get("problem_source") or {}
    return {p: v for p, v in passes.items() if sources.get(p, DEFAULT_SOURCE) == source}


def paired_difference(
    after: dict[str, Any], before: dict[str, Any], source: str | None = None
) -> dict[str, Any] | None:
    """pass@1(after) - pass@1(before) over the problems both summaries share (of data_source
    `source` only, if given), with a 95% interval from the per-problem differences (normal
    approximation); None without shared problems."""
    a, b = _source_pass(after, source), _source_pass(before, source)
    shared = sorted(a.keys() & b.keys())
    if not shared:
        return None
    diffs = [a[p] - b[p] for p in shared]
    mean = sum(diffs) / len(diffs)
    sd = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5 if len(diffs) > 1 else 0.0
    half = Z95 * sd / len(diffs) ** 0.5
    return {"mean": mean, "ci": [mean - half, mean + half], "problems": len(shared)}


# ---------------------------------------------------------------- general prompts

_GENERAL_KEYS = ("prompt_id", "rm_score", "helpfulness", "harmlessness", "response_tokens")


def _by_prompt(records: Sequence[dict[str, Any]], k: int) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for i, r in enumerate(records):
        missing = [key for key in _GENERAL_KEYS if key not in r]
        if missing:
            raise ValueError(f"general eval record {i} (prompt {r.get('prompt_id')!r}) lacks {missing}")
        groups.setdefault(str(r["prompt_id"]), []).append(r)
    wrong = {pid: len(g) for pid, g in groups.items() if len(g) != k}
    if wrong:
        shown = ", ".join(f"{pid}: {n}" for pid, n in list(wrong.items())[:5])
        raise ValueError(f"general eval records: expected k={k} samples per prompt; got {shown}")
    return dict(sorted(groups.items()))


def _per_prompt(groups: dict[str, list[dict[str, Any]]], key: str) -> dict[str, float]:
    return {pid: sum(float(r[key]) for r in g) / len(g) for pid, g in groups.items()}


def _mean(per_prompt: dict[str, float]) -> float:
    return sum(per_prompt.values()) / len(per_prompt)


def summarize_general(records: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """The reward model's held-out figures of one model over its general prompts (module doc)."""
    if not records:
        raise ValueError("summarize_general: no general eval records")
    groups = _by_prompt(records, k)
    per_prompt = _per_prompt(groups, "rm_score")
    lo, hi, method = mean_interval(list(per_prompt.values()))
    return {
        "prompts": len(groups),
        "samples": len(records),
        "k": k,
        "rm_score": _mean(per_prompt),
        "rm_score_ci": [lo, hi],
        "rm_score_ci_method": method,
        "helpfulness": _mean(_per_prompt(groups, "helpfulness")),
        "harmlessness": _mean(_per_prompt(groups, "harmlessness")),
        "mean_response_tokens": sum(r["response_tokens"] for r in records) / len(records),
        "per_prompt_rm_score": per_prompt,
        "model_versions": sorted({r["model_version"] for r in records if "model_version" in r}),
        "reward_model_versions": sorted({r["reward_model_version"] for r in records if "reward_model_version" in r}),
    }
