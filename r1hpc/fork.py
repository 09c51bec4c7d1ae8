"""`r1hpc fork RUN --from STAGE key=value ...`: a new run that starts from a run's outputs before
STAGE, to try other settings for STAGE and the stages after it without redoing the ones before.

    r1hpc fork runs/tiny --from rl_all name=tiny-rm1 rl_all.reward_model_weight=1.0
    r1hpc run runs/tiny-rm1/config.yaml        # submits rl_all, its eval and the report only
    r1hpc fork runs/tiny --from r1_zero,distill_rl name=tiny-lr r1_zero.lr=2e-4   # both spend r1_zero.*

The fork holds the outputs of every stage that does not depend on STAGE (the recipe table's
`after` and `init_from`, followed transitively), taken from the source run: published models and
rollout shards hard-linked (never written into once published; a job replaces a file, it does not
modify it), the rest copied; their evals too, unless an eval.* setting changes. Left out: STAGE and
the stages depending on it with their data files (the table's `data_files`), and the source's job
records, leases, logs, report and trainer checkpoints (the stages kept are complete). The fork
records where it came from in forked_from.json.

Refused, naming the cause: a source whose kept stages are not complete, a setting of a kept stage
(its outputs were made with the source's value: fork from that stage instead), model.*, seed,
data.* and prompt.* (every stage depends on them), and a destination that exists. The fork is built in a
temporary directory beside the destination and renamed into place: it is there whole or not at all.
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from r1hpc import recipe
from r1hpc.completion import stage_complete
from r1hpc.config import Config, ConfigError, load_config, write_resolved
from r1hpc.fsio import atomic_write_json, remove_tree, temp_name
from r1hpc.stages.eval import eval_stage_name, general_stage_name, summary_path
from r1hpc.store import RunDir

__all__ = ["ForkPlan", "dropped_stages", "plan_fork", "fork_run"]

# Eval and the report have no outputs of their own to keep: each model's eval goes with its model.
_NOT_STAGES = recipe.of_kind("eval", "report")

# Config sections every stage's outputs depend on: a fork cannot change them (`prompt`: a stage
# it runs would train on another template than the model it starts from was trained on).
_SHARED_SECTIONS = ("model", "seed", "data", "prompt")


def dropped_stages(from_stages: str) -> tuple[str, ...]:
    """The stages of `from_stages` (comma-separated) and every stage that starts from or waits on
    one of them, directly or not, in table order (eval and the report are not stages of their own
    here: each model's eval goes with it)."""
    dropped: list[str] = []
    for name in from_stages.split(","):
        entry = recipe.stage(name.strip())
        if entry.kind == "data" or entry in _NOT_STAGES:
            raise ConfigError(
                f"--from {entry.name}: fork from stages after data ({', '.join(_forkable())}); "
                f"a fork from {entry.name} is a new run"
            )
        dropped.append(entry.name)
    for s in recipe.STAGES:
        if s in _NOT_STAGES or s.name in dropped:
            continue
        if {*s.after, s.init_from} & set(dropped):
            dropped.append(s.name)
    return tuple(dropped)


def _forkable() -> list[str]:
    return [s.name for s in recipe.STAGES if s.kind != "data" and s not in _NOT_STAGES]


def _sections(entry: recipe.Stage) -> tuple[str, ...]:
    return tuple(x for x in (entry.section, *entry.more_sections) if x)


@dataclass(frozen=True)
class ForkPlan:
    source: Path
    cfg: Config  # the fork's config: the source's with the overrides
    from_stage: str  # as given: one stage or several, comma-separated
    kept: tuple[str, ...]  # stages whose outputs the fork takes over
    dropped: tuple[str, ...]
    keep_evals: bool  # False when an eval.* setting changes: every model is evaluated again

    @property
    def keep_general_evals(self) -> bool:
        """The kept models' general-prompt evals were scored by the reward model: kept with it."""
        return self.keep_evals and "reward_model" in self.kept


def plan_fork(source: str | Path, from_stage: str, overrides: list[str]) -> ForkPlan:
    """What `r1hpc fork` would do; ConfigError naming the cause for anything it refuses.
    from_stage: one stage, or several comma-separated."""
    src = Path(source)
    if not (src / "config.yaml").is_file():
        raise ConfigError(f"{src}: not a run directory (no config.yaml); give the directory `r1hpc run` made")
    dropped = dropped_stages(from_stage)
    kept = tuple(s.name for s in recipe.STAGES if s not in _NOT_STAGES and s.name not in dropped)
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    owners: dict[str, list[str]] = {}
    for name in kept:
        for sec in _sections(recipe.stage(name)):
            owners.setdefault(sec, []).append(name)
    for key in keys:
        top = key.split(".", 1)[0]
        if top in _SHARED_SECTIONS:
            raise ConfigError(
                f"{key}: every stage's outputs depend on {top!r}; a fork cannot change it (start a new run)"
            )
        if top in owners:
            stages = owners[top]
            # (distill_rl spends r1_zero's settings: fork from both to change them)
            raise ConfigError(
                f"{key}: {'stage' if len(stages) == 1 else 'stages'} {', '.join(stages)} "
                f"{'is' if len(stages) == 1 else 'are'} kept from {src} with the source's setting; "
                f"fork --from {','.join(dict.fromkeys([*from_stage.split(','), *stages]))} to change it"
            )
    src_cfg = load_config(src / "config.yaml")
    cfg = load_config(src / "config.yaml", overrides)
    if cfg.run_dir.resolve() == src.resolve() or cfg.run_dir.exists():
        raise ConfigError(f"{cfg.run_dir}: the fork's directory exists; give it a new name=... (or runs_dir=...)")
    run = RunDir(src)
    for name in kept:
        if not stage_complete(src_cfg, run, recipe.stage(name)):
            raise ConfigError(f"{src}: stage {name} is not complete there; finish it (r1hpc run) or fork --from {name}")
    return ForkPlan(src, cfg, from_stage, kept, dropped, keep_evals=not any(k.split(".", 1)[0] == "eval" for k in keys))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: copy
        shutil.copy2(src, dst)


def _take(src: Path, dst: Path, link: bool) -> int:
    """Copy (or hard-link) file or tree `src` to `dst` if it exists; the number of files taken."""
    if not src.exists():
        return 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy if link else shutil.copy2)
        return sum(1 for p in dst.rglob("*") if p.is_file())
    (_link_or_copy if link else shutil.copy2)(str(src), str(dst))
    return 1


def fork_run(plan: ForkPlan, argv: list[str] | None = None) -> Path:
    """Build the fork planned by plan_fork; returns its directory."""
    dst = plan.cfg.run_dir
    build = dst.parent / temp_name(dst.name)
    build.mkdir(parents=True)
    try:
        files = 0
        for name in plan.kept:
            entry = recipe.stage(name)
            for part in (("models", name), ("rollouts", name)):
                files += _take(plan.source.joinpath(*part), build.joinpath(*part), link=True)
            for part in (("metrics", f"{name}.jsonl"), ("tensorboard", name), ("done", name)):
                files += _take(plan.source.joinpath(*part), build.joinpath(*part), link=False)
            for data_file in entry.data_files:
                files += _take(plan.source / "data" / data_file, build / "data" / data_file, link=False)
            if entry.evaluated and plan.keep_evals:
                evals = (eval_stage_name(name),) + ((general_stage_name(name),) if plan.keep_general_evals else ())
                for eval_dir in evals:
                    files += _take(plan.source / "rollouts" / eval_dir, build / "rollouts" / eval_dir, link=True)
                if plan.keep_general_evals:  # else the summary's general figures are stale: the eval rewrites it
                    files += _take(summary_path(plan.source, name), summary_path(build, name), link=False)
        write_resolved(plan.cfg, argv, into=build)
        atomic_write_json(
            build / "forked_from.json",
            {
                "source": str(plan.source.resolve()),
                "from_stage": plan.from_stage,
                "kept": list(plan.kept),
                "dropped": list(plan.dropped),
                "evals_kept": plan.keep_evals,
                "files_taken": files,
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
        )
        os.rename(build, dst)  # fails if dst appeared meanwhile: nothing of it is touched
    except BaseException:
        remove_tree(build)
        raise
    return dst
