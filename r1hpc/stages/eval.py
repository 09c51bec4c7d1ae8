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

The metrics (pass@1, cons@k, their intervals, the paired differences) are pure functions in
r1hpc.eval_metrics.

Language mixing (R1: R1-Zero's chains of thought mix languages; the language-consistency reward
of reasoning RL fixes it). Every record keeps its problem's target `language` (the problem's
"language", else r1hpc.rewards.language.infer_language of its prompt) and, graded in the pool:
- language_consistency: the reward reasoning RL optimizes (language_consistency_reward): the share
  of the chain of thought's counted words in the target language's scripts (0.0 without a closed
  <think> block, 1.0 for one without countable words);
- mixed_language: 1.0 when the sample has a closed <think> chain of thought with at least one
  counted word outside the target language's scripts (0 < words and share < 1), else 0.0. Not
  mixed: no <think> block (or an unclosed, truncated one), a blank one, one with no countable
  word (pure math); the same word rules as the reward (math spans, LaTeX commands, one-letter
  variables and bare math names such as "sin" are no words), so it is the indicator
  "language_consistency < 1" restricted to samples that have words to judge.
The summary has language_consistency (mean over samples) and mixed_language_rate (mean of
mixed_language over samples), overall and per breakdown, and `by_language` (per target
language), each only when every record has the key (shards written before these existed
summarize without them).

General prompts scored by the learned reward model (R1: the last RL stage, rl_all, adds a learned
reward for helpfulness and harmlessness). Measured on prompts no stage trained on,
data/general_heldout.jsonl: k samples per prompt at eval's settings, each scored by the run's
reward model exactly as rl_all's rollout tasks score a sample
(r1hpc.stages.reward_model.reward_model_components): rm_score = 0.5 * (sigmoid(helpfulness of the
final answer) + sigmoid(harmlessness of the whole output)) in [0, 1]; a sample without an
<answer> block gets helpfulness 0.
- Where: in the same array task. One engine samples the task's slice of the held-out problems and
  of the general prompts (shard_slice of each over eval.shards, each part with its own seed); the
  engine is closed, then the reward model scores the general samples in the task's process, on
  CPU, as in rl_all's rollout tasks and the rejection judge. The records are published apart,
  rollouts/eval_general-<model>/step_0000/shard_K.jsonl, so a task whose problem shard is
  complete still fills a missing general shard, and a complete one is never sampled again.
- When: only when the run has a published reward model (models/reward_model) and eval.general is
  on; the eval stage waits on the reward_model stage when both are submitted (r1hpc.recipe:
  eval's `after`). Without one nothing is written and the summary has no "general".
- Summary, key "general": rm_score = mean over prompts of the mean score of its k samples, with
  the 95% interval of mean_interval over prompts; helpfulness and harmlessness averaged the same
  way; per_prompt_rm_score, to pair two models prompt by prompt (r1hpc.report_story). Shards that
  exist but are incomplete give "general_not_measured" (the reason) instead.

Both jobs are idempotent: a complete shard is returned as is; the summary is a pure function of
the shards (same shards -> the same file). Model output is parsed only in pool workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1hpc.eval_metrics import data_source, summarize, summarize_general
from r1hpc.fsio import StoreError
from r1hpc.model.prompting import encode_prompts
from r1hpc.stages.common import StageContext, prompt_format, read_data, reward_example, stage_generator, stage_seed
from r1hpc.store import (
    RunDir,
    atomic_write_json,
    latest_model,
    list_versions,
    publish_shard,
    read_step_shards,
    shard_is_complete,
)

__all__ = [
    "eval_task",
    "eval_summary",
    "eval_stage_name",
    "summary_path",
    "summarize_if_complete",
    "shards_published",
    "shard_slice",
    "score_samples",
    "problem_language",
    "general_stage_name",
    "EVAL_REWARDS",
]

# Graded separately (the weights are unused); mixed_language is an eval measure, not a reward.
EVAL_REWARDS = {"accuracy_math": 1.0, "format": 1.0, "language_consistency": 1.0, "mixed_language": 1.0}


def eval_stage_name(model_stage: str) -> str:
    """Rollout-store stage under which a model's eval shards live: `eval-<model_stage>`."""
    return f"eval-{model_stage}"


def summary_path(run_dir: str | Path, model_stage: str) -> Path:
    return Path(run_dir) / "eval" / f"{model_stage}.json"


def problem_language(problem: dict[str, Any]) -> str:
    """The target language of a problem: its own "language", else the one its prompt is written in."""
    from r1hpc.rewards.language import target_language

    return target_language(problem)


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

    Returns per text: {"correct": 0/1, "format": 0/1, "language_consistency": [0, 1],
    "mixed_language": 0/1 (module doc), "answer": str | None, "score_status": ...}. A grading that
    failed (timeout, memory, error) scores 0 (wrong, not mixed) and its status is kept.
    """
    from r1hpc.rewards import REWARD_FUNCS
    from r1hpc.rewards.isolation import WorkerPool
    from r1hpc.rewards.language import mixed_language
    from r1hpc.rewards.math_accuracy import extract_answer
    from r1hpc.rewards.scorer import score_batch

    if len(texts) != len(problems):
        raise ValueError(f"score_samples: {len(texts)} texts but {len(problems)} problems")
    with WorkerPool(item_timeout_s=timeout_s, memory_limit_bytes=memory_mb * 1024**2) as pool:
        # a code problem (one with tests) is correct when its program passes them, in the sandbox
        rewards = {**EVAL_REWARDS, "code": 1.0} if any("tests" in p for p in problems) else EVAL_REWARDS
        scores = score_batch(
            list(texts),
            [reward_example(p, ends_with_think) for p in problems],
            rewards,
            pool=pool,
            progress=False,
            reward_funcs={**REWARD_FUNCS, "mixed_language": mixed_language},
        )
        answers = pool.run([(extract_answer, (t,)) for t in texts])
    graded = ("format", "language_consistency", "mixed_language")
    out = []
    for i, outcome in enumerate(answers):
        answer = outcome.value if outcome.ok and isinstance(outcome.value, str) else None
        graded_by = "code" if "tests" in problems[i] else "accuracy_math"
        out.append(
            {
                "correct": float(scores.values[graded_by][i] or 0.0),
                **{name: float(scores.values[name][i] or 0.0) for name in graded},
                "answer": answer,
                "score_status": {
                    **{name: scores.statuses[name][i] for name in ("accuracy_math", *graded)},
                    "extract": outcome.status,
                },
            }
        )
    return out


def _heldout_slice(ctx: StageContext, shard: int) -> list[dict[str, Any]]:
    """This shard's held-out problems (the first eval.problems, 0: all of them, split over eval.shards)."""
    e = ctx.cfg.eval
    problems = read_data(ctx, "problems_heldout")
    lo, hi = shard_slice(e.problems or len(problems), e.shards, shard)
    if len(problems) < e.problems:
        raise ValueError(
            f"{ctx.run_dir}/data/problems_heldout.jsonl: {len(problems)} problems, "
            f"but eval.problems={e.problems} asks for the first {e.problems}"
        )
    return problems[lo:hi]


def _sample(
    ctx: StageContext, model_dir: Path, fmt: Any, model_stage: str, shard: int, parts: Sequence[tuple[str, list]]
) -> list[list[list[Any]]]:
    """k samples per item of each (seed tag, items) part, all from one engine (closed on return);
    each part has its own seed, so one part's samples do not depend on whether another ran."""
    if not any(items for _, items in parts):
        return [[] for _ in parts]
    e = ctx.cfg.eval
    generator = stage_generator(ctx.cfg, model_dir)
    try:
        return [
            generator.generate(
                encode_prompts(fmt.tokenizer, [fmt.render(p) for p in items]),
                n=e.k,
                max_new_tokens=e.max_new_tokens,
                temperature=e.temperature,
                top_p=e.top_p,
                stop=list(ctx.cfg.prompt.stop) or None,
                seed=stage_seed(ctx.cfg.seed, tag, model_stage, shard),
            )
            if items
            else []
            for tag, items in parts
        ]
    finally:
        generator.close()


def _problem_records(
    ctx: StageContext, problems: list[dict[str, Any]], samples: list[list[Any]], version: str, ends_with_think: bool
) -> list[dict[str, Any]]:
    """The eval records of sampled problems, graded in the reward worker pool."""
    flat = [(p, j, s) for p, group in zip(problems, samples) for j, s in enumerate(group)]
    graded = (
        score_samples(
            [s.text for _, _, s in flat],
            [p for p, _, _ in flat],
            ctx.cfg.rewards.timeout_s,
            ctx.cfg.rewards.memory_mb,
            ends_with_think,
        )
        if flat
        else []
    )
    return [
        {
            "problem_id": p["id"],
            "difficulty": p["difficulty"],
            "kind": p["kind"],
            "reference": p["answer"],
            "data_source": data_source(p),
            "language": problem_language(p),
            "sample": j,
            "text": s.text,
            "finish_reason": s.finish_reason,
            "response_tokens": len(s.token_ids),
            "model_version": version,
            **g,
        }
        for (p, j, s), g in zip(flat, graded)
    ]


def eval_task(run_dir: str, model_stage: str, shard: int) -> dict[str, Any]:
    """Sample, grade and publish one shard of the held-out evaluation of `model_stage`: its
    problems, and its general prompts scored by the reward model when the run has one
    (general_todo); each output is skipped when already published. The task that finds every
    shard published writes the model's summary, eval/<model_stage>.json (summarize_if_complete)."""
    out = _eval_shard(run_dir, model_stage, shard)
    summary = summarize_if_complete(run_dir, model_stage)
    return {**out, "summary": None if summary is None else str(summary_path(run_dir, model_stage))}


def summarize_if_complete(run_dir: str, model_stage: str) -> dict[str, Any] | None:
    """eval_summary once every shard of the model's eval is published (with the general prompts'
    when they are measured: eval.general on and a reward model published), else None. Called by
    each eval task after its own shard: the last one to publish sees them all, so the summary is
    there as soon as the model is evaluated, also for `r1hpc run --stages X,eval` without the
    report (which rewrites it). Concurrent writers write the same content, atomically."""
    ctx = StageContext(run_dir)
    general = ctx.cfg.eval.general and bool(list_versions(ctx.run, _reward_model_stage()))
    if not shards_published(ctx.cfg.eval.shards, ctx.run, model_stage, general):
        return None
    return eval_summary(run_dir, model_stage)


def shards_published(shards: int, run: RunDir, model_stage: str, general: bool) -> bool:
    """Every one of the `shards` shards of the model's held-out eval is published, and with
    `general` every shard of its general-prompt eval."""
    names = [eval_stage_name(model_stage)] + ([general_stage_name(model_stage)] if general else [])
    return all(shard_is_complete(run, name, 0, k) for name in names for k in range(shards))


def _eval_shard(run_dir: str, model_stage: str, shard: int) -> dict[str, Any]:
    from r1hpc.model.tokenizer import load_tokenizer

    ctx = StageContext(run_dir)
    stage = eval_stage_name(model_stage)
    shard_slice(0, ctx.cfg.eval.shards, shard)  # an out-of-range shard is an error even when nothing is left to do
    problems = None if shard_is_complete(ctx.run, stage, 0, shard) else _heldout_slice(ctx, shard)
    general = general_todo(ctx, model_stage, shard)
    if problems is None and general is None:
        return {"stage": stage, "shard": shard, "skipped": "already complete"}
    version = latest_model(ctx.run, model_stage, verify="sha256")
    fmt = prompt_format(ctx.cfg, load_tokenizer(version.path, pad_token=ctx.cfg.model.pad_token))
    samples, general_samples = _sample(
        ctx, version.path, fmt, model_stage, shard, (("eval", problems or []), ("eval_general", general or []))
    )
    out: dict[str, Any] = {"stage": stage, "shard": shard, "model_version": version.name}
    if problems is None:
        out["problems_skipped"] = "already complete"
    else:
        records = _problem_records(ctx, problems, samples, version.name, fmt.ends_with_think)
        publish_shard(ctx.run, stage, 0, shard, records)
        out.update(problems=len(problems), samples=len(records))
    if general is not None:  # after the engine is closed: the reward model runs in this process
        out.update(publish_general(ctx, model_stage, shard, fmt, general, general_samples, version.name))
    return out


# ---------------------------------------------------------------- general prompts (reward model)


def general_stage_name(model_stage: str) -> str:
    """Rollout-store stage under which a model's general-prompt eval shards live."""
    return f"eval_general-{model_stage}"


def _reward_model_stage() -> str:
    from r1hpc.stages.reward_model import STAGE

    return STAGE


def general_todo(ctx: StageContext, model_stage: str, shard: int) -> list[dict[str, Any]] | None:
    """This shard's general held-out prompts to sample and score, or None when there is nothing
    to do: eval.general is off, the run has no published reward model, or the shard is published."""
    if not ctx.cfg.eval.general or not list_versions(ctx.run, _reward_model_stage()):
        return None
    if shard_is_complete(ctx.run, general_stage_name(model_stage), 0, shard):
        return None
    general = read_data(ctx, "general_heldout")
    lo, hi = shard_slice(len(general), ctx.cfg.eval.shards, shard)
    return general[lo:hi]


def publish_general(
    ctx: StageContext,
    model_stage: str,
    shard: int,
    fmt: Any,
    items: list[dict[str, Any]],
    samples: list[list[Any]],
    version: str,
) -> dict[str, Any]:
    """Score the samples of `items` with the reward model (in this process) and publish the shard;
    returns its counts for the task's result."""
    from r1hpc.stages.reward_model import reward_model_components

    rm_version = latest_model(ctx.run, _reward_model_stage()).name
    flat = [(ex, j, s) for ex, group in zip(items, samples) for j, s in enumerate(group)]
    scores = reward_model_components(ctx, [fmt.render(ex) for ex, _, _ in flat], [s.text for _, _, s in flat])
    records = [
        {
            "prompt_id": ex["id"],
            "kind": ex.get("kind"),
            "sample": j,
            "text": s.text,
            "finish_reason": s.finish_reason,
            "response_tokens": len(s.token_ids),
            "model_version": version,
            "reward_model_version": rm_version,
            "rm_score": c["score"],
            "helpfulness": c["helpfulness"],
            "harmlessness": c["harmlessness"],
        }
        for (ex, j, s), c in zip(flat, scores)
    ]
    publish_shard(ctx.run, general_stage_name(model_stage), 0, shard, records)
    return {"general_prompts": len(items), "general_samples": len(records), "reward_model_version": rm_version}


# ---------------------------------------------------------------- the summary job


def general_summary(ctx: StageContext, model_stage: str) -> dict[str, Any]:
    """{"general": figures} when every shard of the model's general eval is published, {} when
    none was written (no reward model, or eval.general off), else {"general_not_measured": why}."""
    stage = general_stage_name(model_stage)
    if not ctx.run.step_dir(stage, 0, create=False).is_dir():
        return {}
    try:
        records = read_step_shards(ctx.run, stage, 0, ctx.cfg.eval.shards)
    except StoreError as e:
        return {"general_not_measured": f"general-prompt shards incomplete: {e}"}
    if not records:
        return {"general_not_measured": "data/general_heldout.jsonl has no prompts"}
    return {"general": summarize_general(records, ctx.cfg.eval.k)}


def eval_summary(run_dir: str, model_stage: str) -> dict[str, Any]:
    """Read every shard of the model's eval and write eval/<model_stage>.json atomically (with the
    general prompts' reward-model figures under "general" when they were measured)."""
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
    summary.update(general_summary(ctx, model_stage))
    if len(summary["model_versions"]) > 1:
        # Shards sampled from different versions: the stage was still training when eval ran.
        summary["warning"] = f"shards used different model versions {summary['model_versions']}"
    atomic_write_json(summary_path(run_dir, model_stage), summary)
    return summary
