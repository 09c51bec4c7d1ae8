"""The report's first section, "The R1 story in this run": for each stage of the recipe that ran,
the claim of the DeepSeek-R1 paper it illustrates, the figure that shows it, the paired difference
with its 95% interval against the stage it builds on, and whether this run shows the claim.

Every claim and the stage it is compared with live in one table, STORY, below. The paired
differences are r1hpc.eval_metrics.paired_difference over the held-out problems both stages were
evaluated on: pass@1 from the eval summaries (eval/<stage>.json); format rate, response length and
mixed-language rate (the share of samples whose chain of thought has a word outside the problem's
language, r1hpc.stages.eval) from the per-problem eval records
(rollouts/eval-<stage>/step_0000/shard_*.jsonl), averaged per problem over its k samples the way the
summary averages pass@1, then paired the same way. The learned reward model's score on the general
held-out prompts is paired per prompt, from the summaries' "general" (r1hpc.stages.eval).
A stage whose records or summary lack the figure (evaluated before it was measured, or a run
without a reward model) gives "not measured".

The verdict is read from the interval alone (verdict()): "shown" when it lies entirely on the
claimed side of 0, "not shown (the interval includes 0)" when it straddles 0, "contradicted" when
it lies entirely on the other side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from r1hpc.eval_metrics import paired_difference
from r1hpc.fsio import StoreError
from r1hpc.stages.eval import eval_stage_name
from r1hpc.store import read_shard

__all__ = [
    "Claim",
    "StoryStage",
    "STORY",
    "SHOWN",
    "NOT_SHOWN",
    "CONTRADICTED",
    "NOT_MEASURED",
    "verdict",
    "fmt_paired",
    "story_rows",
    "story_lines",
]

Metric = Literal["pass_at_1", "format_rate", "response_tokens", "mixed_language_rate", "general_rm_score"]

SHOWN = "shown"
NOT_SHOWN = "not shown (the interval includes 0)"
CONTRADICTED = "contradicted"
NOT_MEASURED = "not measured"

# Figures the claims point at (written by build_report / story_lines).
RL_FIG = "[accuracy and length per RL step](plots/rl_stages.png)"
PASS1_FIG = "[pass@1 per stage](plots/heldout_pass1.png)"
PAIRED_FIG = "[paired differences](plots/story_paired.png)"
FORMAT_ROW = "the format-rate column of the [held-out table](#held-out-evaluation)"
STUDENT_ROWS = "the [student table](#distillation-vs-rl-on-the-student)"
MIXED_ROW = "the mixed-language column of the [held-out table](#held-out-evaluation)"
GENERAL_ROWS = "the [general-prompt table](#general-prompts-scored-by-the-reward-model)"

# What a metric is called in a sentence, and how its values print.
_METRIC_NAMES: dict[str, str] = {
    "pass_at_1": "held-out pass@1",
    "format_rate": "held-out format rate",
    "response_tokens": "held-out response length (tokens)",
    "mixed_language_rate": "held-out mixed-language rate",
    "general_rm_score": "reward-model score on held-out general prompts",
}
_RECORD_KEYS: dict[str, str] = {
    "format_rate": "format",
    "response_tokens": "response_tokens",
    "mixed_language_rate": "mixed_language",
}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: `stage`'s model differs from `baseline`'s in `metric`, on the side
    `sign` of 0 (after - baseline > 0 for +1)."""

    stage: str  # the evaluated model the claim is about
    baseline: str  # the model it is compared with, over the same held-out problems
    metric: Metric
    text: str  # the paper's claim, one sentence, with the paper's own figures
    figures: tuple[str, ...]  # markdown links to the plots or tables that show it
    sign: int = 1


@dataclass(frozen=True)
class StoryStage:
    """One entry of the story: a step of the recipe and its claims; it ran when the stage of one of
    its claims left metrics, an eval summary or a job (no list of stage names of its own: the
    recipe's table is the one, tests/test_recipe.py)."""

    title: str
    claims: tuple[Claim, ...]


STORY: tuple[StoryStage, ...] = (
    StoryStage(
        "r1_zero: pure RL from the base",
        (
            Claim(
                "r1_zero",
                "base",
                "pass_at_1",
                "GRPO from the base model with rule rewards only raises reasoning accuracy "
                "(R1-Zero: AIME pass@1 15.6 -> 71.0 during RL).",
                (RL_FIG, PASS1_FIG),
            ),
            Claim(
                "r1_zero",
                "base",
                "response_tokens",
                "Without being told to, the model learns to think longer: its responses grow during RL.",
                (RL_FIG,),
            ),
        ),
    ),
    StoryStage(
        "cold_start: readable long-CoT SFT",
        (
            Claim(
                "cold_start",
                "base",
                "format_rate",
                "A few thousand readable long-CoT examples (reasoning in <think>, answer in <answer>) "
                "fix R1-Zero's poor readability: the cold-start model keeps the output format.",
                (FORMAT_ROW,),
            ),
        ),
    ),
    StoryStage(
        "reasoning_rl: RL after the cold start",
        (
            Claim(
                "reasoning_rl",
                "cold_start",
                "pass_at_1",
                "Reasoning-oriented RL (accuracy, format and language rewards) raises the cold-start "
                "model's reasoning accuracy.",
                (RL_FIG, PASS1_FIG),
            ),
            Claim(
                "reasoning_rl",
                "r1_zero",
                "pass_at_1",
                "Starting RL from a cold start reaches higher accuracy than pure RL from the base (R1-Zero).",
                (PASS1_FIG,),
            ),
            Claim(
                "reasoning_rl",
                "r1_zero",
                "mixed_language_rate",
                "R1-Zero's chains of thought mix languages; the cold start and the language-consistency "
                "reward (reasoning RL) fix it.",
                (MIXED_ROW,),
                sign=-1,
            ),
            Claim(
                "reasoning_rl",
                "cold_start",
                "mixed_language_rate",
                "The language-consistency reward lowers mixing further (R1's ablation: at a slight accuracy cost).",
                (MIXED_ROW,),
                sign=-1,
            ),
        ),
    ),
    StoryStage(
        "rejection + sft: SFT of the base on the RL model's best samples",
        (
            Claim(
                "sft",
                "reasoning_rl",
                "pass_at_1",
                "Rejection sampling keeps only the RL model's correct reasoning samples (about 600k, "
                "with 200k non-reasoning ones); SFT of the base on them carries that reasoning over "
                "while widening it to general tasks (the verdict asks whether it goes beyond the RL model).",
                (PASS1_FIG,),
            ),
        ),
    ),
    StoryStage(
        "rl_all: RL for all scenarios (DeepSeek-R1)",
        (
            Claim(
                "rl_all",
                "sft",
                "pass_at_1",
                "A last RL stage over all scenarios (rule rewards for reasoning, reward models for "
                "helpfulness and harmlessness) improves on the SFT model.",
                (RL_FIG, PASS1_FIG),
            ),
            Claim(
                "rl_all",
                "r1_zero",
                "pass_at_1",
                "The full pipeline beats pure RL: DeepSeek-R1 reaches AIME pass@1 79.8 against R1-Zero's 71.0.",
                (PASS1_FIG,),
            ),
            Claim(
                "rl_all",
                "base",
                "pass_at_1",
                "The final model is a far stronger reasoner than the base it started from (AIME pass@1 "
                "79.8, from the base's 15.6 at R1-Zero's first step).",
                (PASS1_FIG,),
            ),
            Claim(
                "rl_all",
                "sft",
                "general_rm_score",
                "RL for all scenarios raises the reward model's held-out score on general prompts "
                "(helpfulness of the answer, harmlessness of the whole response).",
                (GENERAL_ROWS,),
            ),
        ),
    ),
    StoryStage(
        "distill: SFT of a small student on the teacher's samples",
        (
            Claim(
                "distill",
                "student_base",
                "pass_at_1",
                "SFT on the teacher's 800k samples gives a small dense student strong reasoning "
                "(Qwen-1.5B: AIME 28.9, MATH-500 83.9).",
                (STUDENT_ROWS, PASS1_FIG),
            ),
            Claim(
                "distill",
                "distill_rl",
                "pass_at_1",
                "Distilling a stronger model beats large-scale RL on the small model itself.",
                (STUDENT_ROWS, PASS1_FIG),
            ),
        ),
    ),
    StoryStage(
        "distill_rl: RL directly on the student",
        (
            Claim(
                "distill_rl",
                "student_base",
                "pass_at_1",
                "RL from the small student's base with R1-Zero's recipe raises its accuracy too "
                "(but less than distillation: see distill).",
                (RL_FIG, STUDENT_ROWS),
            ),
        ),
    ),
)


# ---------------------------------------------------------------- the verdict


def verdict(ci: Sequence[float], sign: int = 1) -> str:
    """SHOWN when the interval [lo, hi] of (after - baseline) lies entirely on the claimed side of 0
    (above for sign +1, below for -1), CONTRADICTED when entirely on the other side, else NOT_SHOWN.
    An end exactly at 0 is not "entirely on a side": the claim is not shown."""
    if sign not in (1, -1):
        raise ValueError(f"verdict: sign must be +1 or -1, got {sign}")
    lo, hi = (ci[0], ci[1]) if sign == 1 else (-ci[1], -ci[0])
    if lo > 0:
        return SHOWN
    if hi < 0:
        return CONTRADICTED
    return NOT_SHOWN


def fmt_paired(d: Mapping[str, Any] | None, digits: int = 3) -> str:
    """A paired difference as `+0.600 [+0.233, +0.967] (5)`: mean [95% interval] (problems); "-" for None."""
    if d is None:
        return "-"
    lo, hi = d["ci"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] ({d['problems']})"


# ---------------------------------------------------------------- per-problem figures


def _per_problem(run_dir: Path, stage: str, metric: Metric, summary: Mapping[str, Any]) -> dict[str, Any] | str:
    """A summary-shaped {"per_problem_pass": {problem: mean of the record key}} from the stage's eval
    records, so paired_difference pairs it as it pairs pass@1; or why it cannot be built."""
    step_dir = run_dir / "rollouts" / eval_stage_name(stage) / "step_0000"
    paths = sorted(step_dir.glob("shard_*.jsonl"))
    if not paths:
        return f"no per-problem eval records of {stage} ({step_dir.relative_to(run_dir)}/)"
    values: dict[str, list[float]] = defaultdict(list)
    key = _RECORD_KEYS[metric]
    try:
        for path in paths:
            for r in read_shard(path):
                if key not in r:
                    return f"eval records of {stage} have no {key!r} (evaluated before it was measured)"
                values[str(r["problem_id"])].append(float(r[key]))
    except (StoreError, KeyError, TypeError, ValueError) as e:
        return f"eval records of {stage} unreadable ({e})"
    if sum(len(v) for v in values.values()) != summary.get("samples"):
        # records and summary disagree (a shard added or lost since): they are not one evaluation
        return f"eval records of {stage} do not match eval/{stage}.json's {summary.get('samples')} samples"
    return {"per_problem_pass": {p: sum(v) / len(v) for p, v in sorted(values.items())}}


def _per_prompt(stage: str, summary: Mapping[str, Any]) -> dict[str, Any] | str:
    """A summary-shaped {"per_problem_pass": {prompt: reward-model score}} of the general prompts
    (eval/<stage>.json's "general"), or why there is none."""
    general = summary.get("general")
    if not isinstance(general, Mapping) or not general.get("per_prompt_rm_score"):
        why = summary.get("general_not_measured") or "the run has no reward model, or eval.general is off"
        return f"{stage} has no reward-model score on general prompts ({why})"
    return {"per_problem_pass": dict(general["per_prompt_rm_score"])}


def _paired(
    run_dir: Path, claim: Claim, summaries: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any] | None, str]:
    """(paired difference, "") or (None, why it is not measured)."""
    for name in (claim.stage, claim.baseline):
        if name not in summaries:
            return None, f"{name} was not evaluated (no eval/{name}.json)"
    after, before = summaries[claim.stage], summaries[claim.baseline]
    if claim.metric != "pass_at_1":
        if claim.metric == "general_rm_score":
            a, b = _per_prompt(claim.stage, after), _per_prompt(claim.baseline, before)
        else:
            a = _per_problem(run_dir, claim.stage, claim.metric, after)
            b = _per_problem(run_dir, claim.baseline, claim.metric, before)
        for side in (a, b):
            if isinstance(side, str):
                return None, side
        after, before = a, b
    d = paired_difference(dict(after), dict(before))
    if d is None:
        return None, f"{claim.stage} and {claim.baseline} share no evaluated {_unit(claim.metric)}"
    return d, ""


# ---------------------------------------------------------------- rows and markdown


def _ran(run_dir: Path, stage: str, summaries: Mapping[str, Any], job_stages: set[str]) -> bool:
    metrics = run_dir / "metrics" / f"{stage}.jsonl"
    return stage in summaries or stage in job_stages or (metrics.is_file() and metrics.stat().st_size > 0)


def story_rows(
    run_dir: str | Path, summaries: Mapping[str, Mapping[str, Any]], job_stages: set[str] | None = None
) -> list[tuple[StoryStage, list[dict[str, Any]]]]:
    """The entries of STORY whose stages ran, each with one row per claim:
    {"claim", "paired" (or None), "verdict", "why" (when not measured)}."""
    run_dir = Path(run_dir)
    out = []
    for entry in STORY:
        if not any(_ran(run_dir, c.stage, summaries, job_stages or set()) for c in entry.claims):
            continue  # not run: no entry (a stage that did not run has not failed a claim)
        rows = []
        for claim in entry.claims:
            d, why = _paired(run_dir, claim, summaries)
            rows.append(
                {
                    "claim": claim,
                    "paired": d,
                    "verdict": verdict(d["ci"], claim.sign) if d else NOT_MEASURED,
                    "why": why,
                }
            )
        out.append((entry, rows))
    return out


def _digits(metric: str) -> int:
    return 1 if metric == "response_tokens" else 3


def _unit(metric: str) -> str:
    """What a claim's paired difference is over: general prompts or held-out problems."""
    return "prompts" if metric == "general_rm_score" else "problems"


def _verdict_sentence(row: dict[str, Any]) -> str:
    c: Claim = row["claim"]
    if row["paired"] is None:
        return f"**{NOT_MEASURED}**: {row['why']}."
    d, what = row["paired"], _METRIC_NAMES[c.metric]
    claimed = "higher" if c.sign == 1 else "lower"
    other = "lower" if c.sign == 1 else "higher"
    n = f"{d['problems']} shared {_unit(c.metric)}"
    if row["verdict"] == SHOWN:
        return f"**{SHOWN}**: {c.stage}'s {what} is {claimed} than {c.baseline}'s, beyond the noise of {n}."
    if row["verdict"] == CONTRADICTED:
        return f"**{CONTRADICTED}**: {c.stage}'s {what} is {other} than {c.baseline}'s, beyond the noise of {n}."
    return f"**{NOT_SHOWN}**: over {n} this run cannot tell {c.stage} from {c.baseline}."


def story_lines(
    run_dir: str | Path, summaries: Mapping[str, Mapping[str, Any]], job_stages: set[str] | None = None
) -> list[str]:
    """The markdown of "The R1 story in this run" and its figure plots/story_paired.png."""
    from r1hpc import plots

    run_dir = Path(run_dir)
    entries = story_rows(run_dir, summaries, job_stages)
    measured = [
        (f"{r['claim'].stage} - {r['claim'].baseline}: {_METRIC_NAMES[r['claim'].metric]}", r)
        for _, rows in entries
        for r in rows
        if r["paired"] is not None
    ]
    plots.plot_paired_intervals(
        [(label, r["paired"]["mean"], *r["paired"]["ci"], r["verdict"]) for label, r in measured],
        run_dir / "plots" / "story_paired.png",
    )
    lines = [
        "## The R1 story in this run",
        "",
        "For each stage of the recipe that ran: the claim of the DeepSeek-R1 paper it illustrates, "
        "where to see it, and the paired difference with the stage it builds on over the held-out "
        "problems (for the reward model's score: the general prompts) both were evaluated on: "
        "mean [95% interval] (problems). The verdict is read from "
        "the interval: shown when it lies entirely on the claimed side of 0, not shown when it "
        "includes 0, contradicted when it lies entirely on the other side. Stages that did not run "
        "are left out. " + f"All intervals: {PAIRED_FIG}.",
        "",
    ]
    if not entries:
        return lines + ["No stage of the recipe has run yet.", ""]
    counts: dict[str, int] = defaultdict(int)
    for _, rows in entries:
        for r in rows:
            counts[r["verdict"]] += 1
    lines += [
        "Claims: " + ", ".join(f"{counts[v]} {v}" for v in (SHOWN, NOT_SHOWN, CONTRADICTED, NOT_MEASURED) if counts[v]),
        "",
    ]
    for entry, rows in entries:
        lines += [f"### {entry.title}", ""]
        for r in rows:
            c: Claim = r["claim"]
            lines += [
                f"- **Paper:** {c.text}",
                f"  - See: {', '.join(c.figures)}.",
                f"  - {c.stage} - {c.baseline}, {_METRIC_NAMES[c.metric]}: "
                f"{fmt_paired(r['paired'], _digits(c.metric))}. {_verdict_sentence(r)}",
            ]
        lines.append("")
    return lines
