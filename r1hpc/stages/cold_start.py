"""The cold start of DeepSeek-R1: a few thousand readable long-CoT examples, then SFT of the base.

R1 collected its cold-start data partly from R1-Zero's outputs, rewritten into a readable form
with a summary (`|special_token|<reasoning_process>|special_token|<summary>`), and partly from
human annotators. Here:

    build_cold_start(run_dir)   correct R1-Zero samples (rollouts/r1_zero/, newest step first, one
        per problem) whose reasoning is readable (not repetitive, one language, no code block)
        are rewritten as
            <think> Step 1: ...\\nStep 2: ... </think> <answer> {last step}. The answer is {answer}. </answer>
        in the prompt's language (r1hpc.tasks.phrasing: "Шаг 1: ...", "Ответ: ..." for Russian)
        and, when R1-Zero gave fewer than cold_start.examples, the rest are written the same way
        from the problems' correct `solution_steps` (the "human-written" share).
        -> data/cold_start.jsonl (atomic), counts per source in the completion marker.
    run_cold_start(run_dir)     SFT of models/base on it (cold_start.sft) -> models/cold_start/v0000,
        then a probe: one sample per held-out problem, format and accuracy rewards scored in
        the worker pool (logged to metrics/cold_start.jsonl and data/cold_start_probe.json).
"""

from __future__ import annotations

import random
import re
from typing import Any

from r1hpc import recipe
from r1hpc.fsio import atomic_write_json, read_json
from r1hpc.model.prompting import THINK_OPEN, encode_prompts
from r1hpc.rewards.language import target_language
from r1hpc.stages.common import (
    StageContext,
    data_path,
    log_metrics,
    prompt_format,
    read_data,
    read_metrics,
    reward_example,
    reward_pool,
    stage_generator,
    stage_seed,
)
from r1hpc.stages.filters import has_code_block, is_mixed_language, is_repetitive
from r1hpc.stages.sft_inputs import read_sft_records, write_sft_records
from r1hpc.stages.sft_stage import sft_and_publish
from r1hpc.store import StoreError, done_info, latest_model, list_versions, mark_done, read_step_shards
from r1hpc.tasks.phrasing import step_label, summary_answer

__all__ = ["readable_steps", "readable_completion", "build_cold_start", "run_cold_start", "probe_samples"]

STAGE = "cold_start"
SOURCE_STAGE = recipe.stage(STAGE).after[0]  # whose correct samples are rewritten (r1_zero)
PROBE_PROBLEMS = 16
_TAG = re.compile(r"</?(?:think|answer)>")
_STEP_PREFIX = re.compile(r"^(?:(?:step|шаг)\s*\d+\s*[:.)]\s*|\d+[.)]\s+)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")  # a period followed by space: not a decimal point
_ANSWER_LINE = re.compile(
    r"^(?:so\s+)?(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)|^####|^(?:итак,?\s+)?ответ\s*:", re.IGNORECASE
)


def readable_steps(reasoning: str) -> list[str]:
    """The reasoning cut into steps: lines, then sentences; old numbering, tags and lines that
    only state the final answer removed (the summary says it); repeated steps dropped."""
    steps: list[str] = []
    for line in _TAG.sub("\n", reasoning).splitlines():
        for sentence in _SENTENCE_END.split(line.strip()):
            s = _STEP_PREFIX.sub("", sentence.strip()).strip().rstrip(".").strip()
            if s and not _ANSWER_LINE.match(s) and s not in steps:
                steps.append(s)
    return steps


def readable_completion(steps: list[str], answer: str, language: str = "en") -> str:
    """R1's readable format: numbered reasoning in <think>, a summary and the answer after it
    (the completion continues the template's opening <think>), in the prompt's language."""
    if not steps:
        raise ValueError("readable_completion: no reasoning steps")
    label = step_label(language)
    body = "\n".join(f"{label} {i}: {s}." for i, s in enumerate(steps, 1))
    return f" {body} </think> <answer> {steps[-1]}. {summary_answer(language, answer)} </answer>"


def _reasoning_of(text: str) -> str:
    """The chain of thought of an R1-Zero sample: the <think> block, or (malformed samples) the
    text before the first <answer> tag."""
    end = text.find("</think>")
    if end >= 0:
        return text[:end]
    start = text.find("<answer>")
    return text if start < 0 else text[:start]


def _completed_steps(ctx: StageContext) -> list[int]:
    """Step numbers with a rollouts/r1_zero/step_N directory, newest first."""
    root = ctx.run.rollouts_dir(SOURCE_STAGE, create=False)
    if not root.is_dir():
        return []
    steps = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^step_(\d+)$", p.name))]
    return sorted(steps, reverse=True)


def _from_r1_zero(
    ctx: StageContext, problems: dict[str, dict[str, Any]], want: int, counts: dict[str, Any]
) -> list[dict[str, Any]]:
    """Up to `want` readable examples from correct R1-Zero samples, newest step first, one per problem."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    opened = _think_opening(ctx)
    for step in _completed_steps(ctx):
        if len(out) >= want:
            break
        try:
            records = read_step_shards(ctx.run, SOURCE_STAGE, step, ctx.cfg.grpo.rollout_shards)
        except StoreError as e:  # an unfinished step (the stage was stopped mid-way): skip it
            counts.setdefault("r1_zero_steps_incomplete", []).append(step)
            print(f"cold_start: skipping {e}")
            continue
        counts["r1_zero_steps_read"].append(step)
        for r in records:
            counts["r1_zero_samples"] += 1
            if r.get("rewards", {}).get("accuracy_math") != 1.0:
                continue
            counts["r1_zero_correct"] += 1
            pid = r.get("problem_id")
            if pid not in problems:
                raise ValueError(
                    f"{ctx.run.shard_path(SOURCE_STAGE, step, 0, create=False).parent}: record with "
                    f"problem_id {pid!r}, which is not in data/problems_train.jsonl"
                )
            if pid in seen or len(out) >= want:
                continue
            p = problems[pid]
            language = target_language(p)
            reasoning = _reasoning_of(r["text"])
            steps = readable_steps(reasoning)
            if (
                not steps
                or is_repetitive(reasoning)
                or is_mixed_language(reasoning, language)
                or has_code_block(r["text"])
            ):
                counts["r1_zero_unreadable"] += 1
                continue
            seen.add(pid)
            out.append(
                {
                    **_prompt_of(p),
                    "completion": opened + readable_completion(steps, p["answer"], language),
                    "source": "r1_zero",
                    "problem_id": pid,
                    "answer": p["answer"],
                    "r1_zero_step": step,
                }
            )
    return out


def _think_opening(ctx: StageContext) -> str:
    """What a written completion starts with: nothing when the prompt format opens <think> (R1's
    template does), else <think> itself."""
    p = ctx.cfg.prompt
    return "" if p.format == "r1" or p.open_think else THINK_OPEN


def _prompt_of(problem: dict[str, Any]) -> dict[str, Any]:
    """The prompt fields of an SFT record: the question, and a chat dataset's messages."""
    return {"prompt": problem["prompt"], **({"messages": problem["messages"]} if problem.get("messages") else {})}


def build_cold_start(run_dir: str) -> dict[str, Any]:
    """Write data/cold_start.jsonl (idempotent, deterministic); returns the counts per source."""
    ctx = StageContext(run_dir)
    done = done_info(ctx.run, STAGE, "data")
    if done is not None:
        return done
    want = ctx.cfg.cold_start.examples
    problems = read_data(ctx, "problems_train")
    by_id = {p["id"]: p for p in problems}
    counts: dict[str, Any] = {
        "r1_zero_steps_read": [],
        "r1_zero_samples": 0,
        "r1_zero_correct": 0,
        "r1_zero_unreadable": 0,
    }
    examples = _from_r1_zero(ctx, by_id, want, counts)
    used = {e["problem_id"] for e in examples}
    rest = [p for p in problems if p["id"] not in used and p.get("solution_steps")]
    random.Random(stage_seed(ctx.cfg.seed, STAGE, "human")).shuffle(rest)
    opened = _think_opening(ctx)
    for p in rest[: want - len(examples)]:
        examples.append(
            {
                **_prompt_of(p),
                "completion": opened + readable_completion(list(p["solution_steps"]), p["answer"], target_language(p)),
                "source": "human",
                "problem_id": p["id"],
                "answer": p["answer"],
                "r1_zero_step": None,
            }
        )
    if not examples:
        raise ValueError(
            f"{ctx.run_dir}: no cold-start examples (no correct R1-Zero samples and no problems with solution_steps)"
        )
    write_sft_records(data_path(ctx, STAGE), examples)
    info = {
        "examples": len(examples),
        "requested": want,
        "from_r1_zero": sum(e["source"] == "r1_zero" for e in examples),
        "from_human": sum(e["source"] == "human" for e in examples),
        **counts,
    }
    mark_done(ctx.run, STAGE, "data", info)
    return info


def probe_samples(ctx: StageContext, model_dir: Any, problems: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """One sample per problem from model_dir (eval temperature/top-p); the share with the strict
    R1 format and with the right answer, scored in the reward worker pool."""
    from r1hpc.model.tokenizer import load_tokenizer
    from r1hpc.rewards.scorer import score_batch

    cfg = ctx.cfg
    fmt = prompt_format(cfg, load_tokenizer(model_dir, pad_token=cfg.model.pad_token))
    generator = stage_generator(cfg, model_dir)
    try:
        samples = generator.generate(
            encode_prompts(fmt.tokenizer, [fmt.render(p) for p in problems]),
            n=1,
            max_new_tokens=cfg.grpo.max_new_tokens,
            temperature=cfg.eval.temperature,
            top_p=cfg.eval.top_p,
            stop=list(cfg.prompt.stop) or None,
            seed=seed,
        )
    finally:
        generator.close()
    texts = [group[0].text for group in samples]
    examples = [reward_example(p, fmt.ends_with_think) for p in problems]
    with reward_pool(cfg) as pool:
        scores = score_batch(texts, examples, {"format": 1.0, "accuracy_math": 1.0}, pool=pool, progress=False)
    n = len(problems)
    return {
        "probe_samples": n,
        "probe_format": sum(v or 0.0 for v in scores.values["format"]) / n,
        "probe_accuracy": sum(v or 0.0 for v in scores.values["accuracy_math"]) / n,
        "probe_truncated": sum(group[0].finish_reason == "length" for group in samples) / n,
        "probe_example": texts[0],
    }


def run_cold_start(run_dir: str) -> dict[str, Any]:
    """Build the cold-start set, SFT models/base on it, publish models/cold_start/v0000, probe it."""
    ctx = StageContext(run_dir)
    probe_path = ctx.run.data_dir() / "cold_start_probe.json"
    if [v for v in list_versions(ctx.run, STAGE) if v.version == 0]:
        result = sft_and_publish(ctx, STAGE, [], ctx.cfg.cold_start.sft)
        if probe_path.exists():
            result.update(read_json(probe_path))
            mark_done(ctx.run, STAGE, recipe.stage(STAGE).done_marker)  # a run from before the marker
            return result
    else:
        info = build_cold_start(run_dir)
        records = read_sft_records(data_path(ctx, STAGE))
        meta = {k: info[k] for k in ("from_r1_zero", "from_human", "r1_zero_correct")}
        result = sft_and_publish(ctx, STAGE, records, ctx.cfg.cold_start.sft, meta=meta)
    # A probe after the SFT: R1's cold start exists to make the outputs readable, so the share
    # of samples in the exact format is the figure to watch (a killed probe simply reruns).
    heldout = read_data(ctx, "problems_heldout")[:PROBE_PROBLEMS]
    probe = probe_samples(ctx, latest_model(ctx.run, STAGE).path, heldout, stage_seed(ctx.cfg.seed, STAGE, "probe"))
    atomic_write_json(probe_path, probe)
    # On the last step's line (metrics readers keep the last line per step), with its loss.
    last = [r for r in read_metrics(ctx.run_dir, STAGE) if r.get("step") == result.get("steps")]
    base = {k: v for k, v in last[-1].items() if k != "time"} if last else {"stage": STAGE, "step": result.get("steps")}
    log_metrics(ctx, STAGE, {**base, **{k: v for k, v in probe.items() if k != "probe_example"}})
    mark_done(ctx.run, STAGE, recipe.stage(STAGE).done_marker)  # last: the stage is complete
    return {**result, **probe}
