"""The held-out evaluation tables of the run report (r1hpc.report): per stage pass@1 with its
interval, cons@k, format, mixed-language rate and length; the same per difficulty, problem kind,
data source and prompt language; the reward model's score on the general prompts; the student table.
Each reads the eval summaries (eval/<stage>.json, r1hpc.eval_metrics.summarize) and returns markdown
lines; a summary written before a figure existed shows "-" for it."""

from __future__ import annotations

from typing import Any, Literal

from r1hpc import recipe
from r1hpc.eval_metrics import DEFAULT_SOURCE, paired_difference
from r1hpc.report_story import fmt_paired

__all__ = ["eval_tables", "fmt_ci", "general_table", "student_table"]

# How the student table names a student stage, by the kind of training it had.
_STUDENT_LABELS = {
    "pretrain": "student base (no training)",
    "sft": "distilled from the teacher (SFT)",
    "grpo": "trained directly with RL",
}


def fmt_ci(s: dict[str, Any], key: str = "pass_at_1") -> str:
    """'0.344 [0.307, 0.380]': a summary's figure `key` with its 95% interval (`key`_ci)."""
    lo, hi = s[f"{key}_ci"]
    return f"{s[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def eval_tables(summaries: dict[str, dict[str, Any]], bad: dict[str, str]) -> list[str]:
    """The stage table (recipe order, "not run" / "unreadable" rows for the rest), then the per
    difficulty, kind, data source and language tables that have columns."""
    k = next((s["k"] for s in summaries.values()), None)
    lines = [
        "| stage | pass@1 [95% interval] | cons@" + (str(k) if k else "k") + " | format rate | "
        "mixed-language rate | mean response tokens | problems x k | model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    stages = list(recipe.evaluated()) + [s for s in list(summaries) + list(bad) if s not in recipe.evaluated()]
    for stage in stages:
        if stage in summaries:
            s = summaries[stage]
            warn = " (!)" if s.get("warning") else ""
            lines.append(
                f"| {stage} | {fmt_ci(s)} | {s['cons_at_k']:.3f} | {s['format_rate']:.3f} | {_mixed(s)} | "
                f"{s.get('mean_response_tokens', float('nan')):.1f} | {s.get('problems', '?')} x {s['k']} | "
                f"{', '.join(s.get('model_versions', []))}{warn} |"
            )
        elif stage in bad:
            lines.append(f"| {stage} | unreadable: {bad[stage]} | | | | | | |")
        else:
            lines.append(f"| {stage} | not run | | | | | | |")
    return (
        lines
        + _breakdown_table(summaries, stages, by="difficulty")
        + _breakdown_table(summaries, stages, by="kind")
        + _source_tables(summaries, stages)
        + _language_table(summaries, stages)
    )


def _mixed(m: dict[str, Any]) -> str:
    """The mixed-language rate of a summary (or breakdown); "-" for one written before it existed."""
    rate = m.get("mixed_language_rate")
    return "-" if rate is None else f"{rate:.3f}"


def _cell(m: dict[str, Any]) -> str:
    return f"{fmt_ci(m)} / {m['cons_at_k']:.3f}"


def _language_table(summaries: dict[str, dict[str, Any]], stages: list[str]) -> list[str]:
    """Stage x target-language table of pass@1 [interval] / mixed-language rate, when the summaries
    have more than one language (summaries written before by_language have none)."""
    langs = sorted({lang for s in summaries.values() for lang in s.get("by_language", {})})
    if len(langs) <= 1:
        return []
    lines = [
        "",
        "Per prompt language: pass@1 [95% interval] / mixed-language rate (share of samples whose "
        "chain of thought has a word outside the prompt's language).",
        "",
        "| stage | " + " | ".join(langs) + " |",
        "|---|" + "---|" * len(langs),
    ]
    for stage in stages:
        by = summaries.get(stage, {}).get("by_language")
        if stage not in summaries or not by:
            cell = "not run" if stage not in summaries else "-"
            lines.append(f"| {stage} | " + " | ".join(cell for _ in langs) + " |")
            continue
        cells = [f"{fmt_ci(by[c])} / {_mixed(by[c])}" if c in by else "-" for c in langs]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return lines


def general_table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Per evaluated model, the reward model's score on the general held-out prompts (r1hpc.stages.eval)."""
    measured = {st: s["general"] for st, s in summaries.items() if isinstance(s.get("general"), dict)}
    why = {st: s["general_not_measured"] for st, s in summaries.items() if s.get("general_not_measured")}
    if not measured and not why:
        return ["Not measured: the run has no reward model (or eval.general is off)."]
    lines = [
        "k samples per general held-out prompt at the eval settings, each scored by the run's reward "
        "model as rl_all scores a sample: 0.5 * (sigmoid(helpfulness of the answer) + sigmoid(harmlessness "
        "of the whole output)), in [0, 1]. The interval is over prompts, as pass@1's is over problems.",
        "",
        "| stage | reward-model score [95% interval] | helpfulness | harmlessness | mean response tokens | "
        "prompts x k | reward model |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in [s for s in recipe.evaluated() if s in summaries] + [
        s for s in summaries if s not in recipe.evaluated()
    ]:
        g = measured.get(stage)
        if g is None:
            lines.append(f"| {stage} | not measured{': ' + why[stage] if stage in why else ''} | | | | | |")
            continue
        lines.append(
            f"| {stage} | {fmt_ci(g, 'rm_score')} | {g['helpfulness']:.3f} | {g['harmlessness']:.3f} | "
            f"{g['mean_response_tokens']:.1f} | {g['prompts']} x {g['k']} | {', '.join(g['reward_model_versions'])} |"
        )
    return lines


def _by_difficulty(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return s.get("by_difficulty", {})


def _by_kind(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return s.get("by_kind", {})


def _by_source(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per data source figures; a summary without by_source predates it: all its problems are "generated"."""
    return s.get("by_source") or {DEFAULT_SOURCE: s}


_BREAKDOWNS = {"source": _by_source, "difficulty": _by_difficulty, "kind": _by_kind}


def _breakdown_table(
    summaries: dict[str, dict[str, Any]], stages: list[str], by: Literal["source", "difficulty", "kind"]
) -> list[str]:
    """Stage x (data source | difficulty | problem kind) table of pass@1 [interval] / cons@k; [] without
    columns, and for kinds unless there are several (one kind is the overall table again)."""
    parts = _BREAKDOWNS[by]
    cols = sorted({c for s in summaries.values() for c in parts(s)}, key=int if by == "difficulty" else str)
    if not cols or (by == "kind" and len(cols) == 1):
        return []
    if by == "difficulty":
        what, heads = "difficulty", [f"difficulty {'unknown' if c == '0' else c}" for c in cols]
    else:
        what = "data source (problems)" if by == "source" else "problem kind (problems)"
        heads = [f"{c} ({max(parts(s)[c]['problems'] for s in summaries.values() if c in parts(s))})" for c in cols]
    lines = [
        "",
        f"Per {what}: pass@1 [95% interval] / cons@k.",
        "",
        "| stage | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for stage in stages:
        if stage not in summaries:
            lines.append(f"| {stage} | " + " | ".join("not run" for _ in cols) + " |")
            continue
        by_col = parts(summaries[stage])
        lines.append(f"| {stage} | " + " | ".join(_cell(by_col[c]) if c in by_col else "-" for c in cols) + " |")
    return lines


def _sources(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Every data source evaluated."""
    return sorted({src for s in summaries.values() for src in _by_source(s)})


def _source_tables(summaries: dict[str, dict[str, Any]], stages: list[str]) -> list[str]:
    """Per data source results and paired changes along the recipe, when there is more than one source."""
    sources = _sources(summaries)
    if len(sources) <= 1:
        return []
    lines = _breakdown_table(summaries, stages, by="source")
    pairs = [(a, b) for a, b in recipe.comparisons() if a in summaries and b in summaries]
    if not pairs:
        return lines
    lines += [
        "",
        "Paired pass@1 change per data source over the problems both stages were evaluated on: "
        "mean [95% interval] (problems).",
        "",
        "| change | " + " | ".join(sources) + " | all sources |",
        "|---|" + "---|" * (len(sources) + 1),
    ]
    for after, before in pairs:
        a, b = summaries[after], summaries[before]
        cells = [fmt_paired(paired_difference(a, b, src)) for src in sources]
        cells.append(fmt_paired(paired_difference(a, b)))
        lines.append(f"| {after} vs {before} | " + " | ".join(cells) + " |")
    return lines


def student_table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """One row per student stage of the recipe, named by how it was trained."""
    lines = ["| student | pass@1 [95% interval] | cons@k | format rate |", "|---|---|---|---|"]
    for stage in (name for name in recipe.evaluated() if recipe.stage(name).student):
        label = _STUDENT_LABELS[recipe.stage(stage).kind]
        s = summaries.get(stage)
        lines.append(
            f"| {label} ({stage}) | "
            + (f"{fmt_ci(s)} | {s['cons_at_k']:.3f} | {s['format_rate']:.3f} |" if s else "not run | | |")
        )
    return lines
