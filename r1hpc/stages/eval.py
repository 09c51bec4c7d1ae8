"""DeepSeek-R1's evaluation of a published model on the held-out problems: pass@1 and cons@k.

    eval_task(run_dir, model_stage, shard)   one array task: k samples per problem of its shard
        (T = eval.temperature, top-p = eval.top_p; R1: 0.6 / 0.95) with the newest verified
        version of models/<model_stage>, graded in the reward worker pool, published as
        rollouts/eval-<model_stage>/step_0000/shard_K.jsonl.
    eval_summary(run_dir, model_stage)   reads every shard, writes eval/<model_stage>.json.

Every record keeps its problem's `data_source` (the benchmark it came from, e.g. "math500",
"aime24"; generated problems, and records written before the field existed, are "generated").
The summary has the overall figures, the same figures per data source (`by_source`) and per
difficulty (`by_difficulty`, left out when every difficulty is 0 = unknown, as for file problems).

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

Both jobs are idempotent: a complete shard is returned as is; the summary is a pure function of
the shards (same shards -> the same file). Model output is parsed only in pool workers.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1hpc.model.prompting import encode_prompts
from r1hpc.stages.common import StageContext, prompt_format, read_data, reward_example, stage_generator, stage_seed
from r1hpc.store import atomic_write_json, latest_model, publish_shard, read_step_shards, shard_is_complete

__all__ = [
    "eval_task",
    "eval_summary",
    "eval_stage_name",
    "summary_path",
    "shard_slice",
    "score_samples",
    "majority_vote",
    "mean_interval",
    "summarize",
    "paired_difference",
    "data_source",
    "EVAL_REWARDS",
    "DEFAULT_SOURCE",
]

EVAL_REWARDS = {"accuracy_math": 1.0, "format": 1.0}  # graded separately; the weights are unused
DEFAULT_SOURCE = "generated"  # the data_source of generated problems and of records without one
Z95 = 1.959963984540054


def eval_stage_name(model_stage: str) -> str:
    """Rollout-store stage under which a model's eval shards live: `eval-<model_stage>`."""
    return f"eval-{model_stage}"


def summary_path(run_dir: str | Path, model_stage: str) -> Path:
    return Path(run_dir) / "eval" / f"{model_stage}.json"


def data_source(item: dict[str, Any]) -> str:
    """The data_source of a problem or eval record; "generated" where it has none."""
    return str(item.get("data_source") or DEFAULT_SOURCE)


def shard_slice(n_problems: int, shards: int, shard: int) -> tuple[int, int]:
    """[start, end) of shard `shard` of n problems split as evenly as possible (contiguous)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range: eval.shards={shards} (expected 0..{shards - 1})")
    return shard * n_problems // shards, (shard + 1) * n_problems // shards


def score_samples(
    texts: Sequence[str],
    problems: Sequence[dict[str, Any]],
    timeout_s: float,
    memory_mb: int,
    ends_with_think: bool = True,
) -> list[dict[str, Any]]:
    """Grade each completion against its problem and extract its canonical answer, all in one
    worker pool (sympy parses model output: never in this process). ends_with_think: the prompt
    format opened <think> (PromptFormat.ends_with_think).

    Returns per text: {"correct": 0/1, "format": 0/1, "answer": str | None, "score_status": ...}.
    A grading that failed (timeout, memory, error) counts as wrong and its status is kept.
    """
    from r1hpc.rewards.isolation import WorkerPool
    from r1hpc.rewards.math_accuracy import extract_answer
    from r1hpc.rewards.scorer import score_batch

    if len(texts) != len(problems):
        raise ValueError(f"score_samples: {len(texts)} texts but {len(problems)} problems")
    with WorkerPool(item_timeout_s=timeout_s, memory_limit_bytes=memory_mb * 1024**2) as pool:
        # a code problem (one with tests) is correct when its program passes them, in the sandbox
        rewards = {**EVAL_REWARDS, "code": 1.0} if any("tests" in p for p in problems) else EVAL_REWARDS
        scores = score_batch(
            list(texts), [reward_example(p, ends_with_think) for p in problems], rewards, pool=pool, progress=False
        )
        answers = pool.run([(extract_answer, (t,)) for t in texts])
    out = []
    for i, outcome in enumerate(answers):
        answer = outcome.value if outcome.ok and isinstance(outcome.value, str) else None
        graded_by = "code" if "tests" in problems[i] else "accuracy_math"
        out.append(
            {
                "correct": float(scores.values[graded_by][i] or 0.0),
                "format": float(scores.values["format"][i] or 0.0),
                "answer": answer,
                "score_status": {
                    "accuracy_math": scores.statuses["accuracy_math"][i],
                    "format": scores.statuses["format"][i],
                    "extract": outcome.status,
                },
            }
        )
    return out


def eval_task(run_dir: str, model_stage: str, shard: int) -> dict[str, Any]:
    """Sample, grade and publish one shard of the held-out evaluation of `model_stage`."""
    from r1hpc.model.tokenizer import load_tokenizer

    ctx = StageContext(run_dir)
    e = ctx.cfg.eval
    stage = eval_stage_name(model_stage)
    if shard_is_complete(ctx.run, stage, 0, shard):
        return {"stage": stage, "shard": shard, "skipped": "already complete"}
    problems = read_data(ctx, "problems_heldout")
    lo, hi = shard_slice(e.problems or len(problems), e.shards, shard)  # eval.problems 0: all of them
    if len(problems) < e.problems:
        raise ValueError(
            f"{ctx.run_dir}/data/problems_heldout.jsonl: {len(problems)} problems, "
            f"but eval.problems={e.problems} asks for the first {e.problems}"
        )
    mine = problems[lo:hi]
    version = latest_model(ctx.run, model_stage, verify="sha256")
    samples: list[list[Any]] = []
    fmt = prompt_format(ctx.cfg, load_tokenizer(version.path, pad_token=ctx.cfg.model.pad_token))
    if mine:
        generator = stage_generator(ctx.cfg, version.path)
        try:
            samples = generator.generate(
                encode_prompts(fmt.tokenizer, [fmt.render(p) for p in mine]),
                n=e.k,
                max_new_tokens=e.max_new_tokens,
                temperature=e.temperature,
                top_p=e.top_p,
                stop=list(ctx.cfg.prompt.stop) or None,
                seed=stage_seed(ctx.cfg.seed, "eval", model_stage, shard),
            )
        finally:
            generator.close()
    flat = [(p, j, s) for p, group in zip(mine, samples) for j, s in enumerate(group)]
    graded = (
        score_samples(
            [s.text for _, _, s in flat],
            [p for p, _, _ in flat],
            ctx.cfg.rewards.timeout_s,
            ctx.cfg.rewards.memory_mb,
            fmt.ends_with_think,
        )
        if flat
        else []
    )
    records = [
        {
            "problem_id": p["id"],
            "difficulty": p["difficulty"],
            "kind": p["kind"],
            "reference": p["answer"],
            "data_source": data_source(p),
            "sample": j,
            "text": s.text,
            "finish_reason": s.finish_reason,
            "response_tokens": len(s.token_ids),
            "model_version": version.name,
            **g,
        }
        for (p, j, s), g in zip(flat, graded)
    ]
    publish_shard(ctx.run, stage, 0, shard, records)
    return {
        "stage": stage,
        "shard": shard,
        "problems": len(mine),
        "samples": len(records),
        "model_version": version.name,
    }


# ---------------------------------------------------------------- metrics (pure)


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
    }


def _breakdown(groups: Sequence[list[dict[str, Any]]], key: Any) -> dict[str, dict[str, Any]]:
    """_metrics per value of key(first record of a problem), keys as str in sorted order."""
    parts: dict[Any, list[list[dict[str, Any]]]] = defaultdict(list)
    for g in groups:
        parts[key(g[0])].append(g)
    return {str(v): _metrics(parts[v]) for v in sorted(parts)}


def summarize(records: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """All metrics over the problems of `records` (k per problem), per data source and per
    difficulty (no per-difficulty breakdown when every difficulty is 0, i.e. unknown)."""
    if not records:
        raise ValueError("summarize: no eval records")
    groups = _by_problem(records, k)
    out = {"k": k, **_metrics(list(groups.values()))}
    out["by_source"] = _breakdown(list(groups.values()), data_source)
    if any(int(g[0]["difficulty"]) != 0 for g in groups.values()):
        out["by_difficulty"] = _breakdown(list(groups.values()), lambda r: int(r["difficulty"]))
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


def eval_summary(run_dir: str, model_stage: str) -> dict[str, Any]:
    """Read every shard of the model's eval and write eval/<model_stage>.json atomically."""
    ctx = StageContext(run_dir)
    e = ctx.cfg.eval
    records = read_step_shards(ctx.run, eval_stage_name(model_stage), 0, e.shards)
    summary = {
        "stage": model_stage,
        **summarize(records, e.k),
        "temperature": e.temperature,
        "top_p": e.top_p,
        "max_new_tokens": e.max_new_tokens,
        "interval": "95% normal approximation over problems (mean +- 1.96 sd/sqrt(n)); "
        "Wilson over n problems where every problem scored the same",
        "ties": "cons@k ties score the fraction of tied answers that are correct",
    }
    if len(summary["model_versions"]) > 1:
        # Shards sampled from different versions: the stage was still training when eval ran.
        summary["warning"] = f"shards used different model versions {summary['model_versions']}"
    atomic_write_json(summary_path(run_dir, model_stage), summary)
    return summary
