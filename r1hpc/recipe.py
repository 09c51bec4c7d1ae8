"""The R1 recipe's stages in one table: what each stage is, what runs it, what it starts from and
waits on, where its settings live, and whether eval measures the model it publishes.

Everything that needs to know the stages reads this table: the pipeline's DAG (r1hpc.pipeline),
the report, `r1hpc status`, the config checks, the planner, the GRPO jobs and `r1hpc fork` (which
stage's outputs and data files go with which). Adding a stage is one entry here plus its job
function. The table is plain data at the bottom of the package (it imports
nothing of r1hpc), so every layer may read it.

Kinds and the jobs a kind submits (r1hpc.pipeline):
    data, pretrain, sft, reward_model   one job running `target`
    grpo          one rollout array (rollout_loop) and one train job (train_loop) for the whole
                  stage, or with grpo.jobs=step `target` (prepare_stage), then per step a rollout
                  array (rollout_task) and a train job (train_task), all in the target's module
    rejection     a generation array (`target`) and its merge job (rejection_merge, same module)
    eval          an array per evaluated stage (`target`), after that stage and eval's `after`
    report        one job after everything else
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Stage", "STAGES", "stage", "names", "evaluated", "of_kind", "comparisons", "grpo_sections", "sibling"]

Kind = Literal["data", "pretrain", "sft", "grpo", "rejection", "reward_model", "eval", "report"]


@dataclass(frozen=True)
class Stage:
    name: str
    kind: Kind
    target: str  # "module:function" of the stage's (first) job
    after: tuple[str, ...] = ()  # stages whose outputs it waits on
    init_from: str = ""  # the published model it starts from (GRPO, SFT) or samples from (rejection)
    section: str = ""  # the config section of its settings ("" = none of its own)
    more_sections: tuple[str, ...] = ()  # other sections of settings its outputs depend on
    evaluated: bool = False  # publishes a policy that eval measures
    student: bool = False  # on the student branch (the report groups those rows)
    compare_with: tuple[str, ...] = ()  # report comparisons besides the one with init_from
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra job arguments besides run_dir
    # The done/<stage>/<key>.json its jobs write last ("" = none): with its published model (when
    # it publishes one), what makes the stage complete (r1hpc.completion).
    done_marker: str = ""
    # The files under data/ its jobs write (a fork of the run leaves them out with the stage).
    data_files: tuple[str, ...] = ()
    # Planner: mean output (grpo, rejection, eval) or example (sft) length as a fraction of the
    # stage's configured maximum (assumed; R1 does not report means). None = not planned.
    plan_length: float | None = None
    plan_note: str = ""


STAGES: tuple[Stage, ...] = (
    Stage(
        "data",
        "data",
        "r1hpc.stages.base:prepare_data",
        section="data",
        done_marker="data",
        data_files=(
            "problems_train.jsonl",
            "problems_heldout.jsonl",
            "general_train.jsonl",
            "general_heldout.jsonl",
            "tokenizer",
            "sources_report.json",  # with the user's dataset files (data.train)
        ),
    ),
    Stage(
        "base",
        "pretrain",
        "r1hpc.stages.base:pretrain_base",
        after=("data",),
        section="base",
        evaluated=True,
        kwargs={"which": "teacher"},
        data_files=("base_summary.json",),
    ),
    Stage(
        "student_base",
        "pretrain",
        "r1hpc.stages.base:pretrain_base",
        after=("data",),
        section="base",
        more_sections=("student",),
        evaluated=True,
        student=True,
        kwargs={"which": "student"},
        data_files=("student_base_summary.json",),
    ),
    Stage(
        "reward_model",
        "reward_model",
        "r1hpc.stages.reward_model:train_reward_model",
        after=("base",),
        init_from="base",
        section="reward_model",
    ),
    Stage(
        "r1_zero",
        "grpo",
        "r1hpc.stages.grpo:prepare_stage",
        after=("base",),
        init_from="base",
        section="r1_zero",
        evaluated=True,
        plan_length=0.25,
        plan_note="R1-Zero's responses grow from ~1k to >10k tokens",
    ),
    Stage(
        "cold_start",
        "sft",
        "r1hpc.stages.cold_start:run_cold_start",
        after=("r1_zero",),
        init_from="base",
        section="cold_start",
        evaluated=True,
        done_marker="probe",
        data_files=("cold_start.jsonl", "cold_start_probe.json"),
        plan_length=0.5,
        plan_note="long-CoT examples",
    ),
    Stage(
        "reasoning_rl",
        "grpo",
        "r1hpc.stages.grpo:prepare_stage",
        after=("cold_start",),
        init_from="cold_start",
        section="reasoning_rl",
        evaluated=True,
        plan_length=0.25,
        plan_note="as r1_zero",
    ),
    Stage(
        "rejection",
        "rejection",
        "r1hpc.stages.rejection:rejection_task",
        after=("reasoning_rl", "reward_model"),
        init_from="reasoning_rl",
        section="rejection",
        done_marker="merge",
        data_files=("sft_reasoning.jsonl", "sft_general.jsonl", "rejection_stats.json"),
        plan_length=0.25,
        plan_note="reasoning samples as in RL",
    ),
    Stage(
        "sft",
        "sft",
        "r1hpc.stages.sft_stage:run_sft",
        after=("rejection",),
        init_from="base",
        section="sft",
        evaluated=True,
        plan_length=0.5,
        plan_note="mix of long reasoning and short general examples",
    ),
    Stage(
        "rl_all",
        "grpo",
        "r1hpc.stages.grpo:prepare_stage",
        after=("sft", "reward_model"),
        init_from="sft",
        section="rl_all",
        evaluated=True,
        compare_with=("base",),
        plan_length=0.15,
        plan_note="general prompts answer shorter",
    ),
    Stage(
        "distill",
        "sft",
        "r1hpc.stages.sft_stage:run_distill",
        after=("rejection", "student_base"),
        init_from="student_base",
        section="distill",
        evaluated=True,
        student=True,
        compare_with=("distill_rl",),
        plan_length=0.5,
        plan_note="the sft set, on the student(s)",
    ),
    # The student trained by RL directly with R1-Zero's budget: the peer of distillation.
    Stage(
        "distill_rl",
        "grpo",
        "r1hpc.stages.grpo:prepare_stage",
        after=("student_base",),
        init_from="student_base",
        section="r1_zero",
        evaluated=True,
        student=True,
    ),
    # Each model's eval waits on its model and on the reward model (when both are submitted), which
    # scores the general held-out prompts (r1hpc.stages.eval).
    Stage(
        "eval",
        "eval",
        "r1hpc.stages.eval:eval_task",
        after=("reward_model",),
        section="eval",
        plan_length=0.5,
        plan_note="benchmarks at T=0.6",
    ),
    Stage("report", "report", "r1hpc.pipeline:finish_run"),
)


def names() -> tuple[str, ...]:
    """Every stage name, in the order the pipeline submits them."""
    return tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    """The table's entry for `name`; KeyError naming the known stages."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages are {', '.join(names())}")


def of_kind(*kinds: str) -> tuple[Stage, ...]:
    return tuple(s for s in STAGES if s.kind in kinds)


def evaluated() -> tuple[str, ...]:
    """Stages whose published models eval measures: the teacher's chain, then the student's."""
    own = [s for s in STAGES if s.evaluated]
    return tuple(s.name for s in own if not s.student) + tuple(s.name for s in own if s.student)


def comparisons() -> tuple[tuple[str, str], ...]:
    """(after, before) pairs the report compares: each evaluated stage with the model it starts
    from, then with its extra peers."""
    out = []
    for name in evaluated():
        s = stage(name)
        out += [(name, before) for before in ((s.init_from,) if s.init_from else ()) + s.compare_with]
    return tuple(out)


def grpo_sections() -> tuple[str, ...]:
    """Config sections holding GRPO stage settings (RLStageConfig), each once."""
    return tuple(dict.fromkeys(s.section for s in of_kind("grpo")))


def sibling(target: str, function: str) -> str:
    """Another job function of the module of `target` ("pkg.mod:f" -> "pkg.mod:function")."""
    return f"{target.partition(':')[0]}:{function}"
