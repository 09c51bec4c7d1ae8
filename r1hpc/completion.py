"""Which stages of a run are complete on disk, so that `r1hpc run` submits no jobs for them.

Every job is idempotent: run on complete outputs, it finds them and exits. Submitting it anyway
costs a queue wait, a Python start and imports per job, one after another along the afterok chain;
on a busy cluster a rerun after a failure in rl_all would wait in the queue a dozen times before
reaching it. The checks here are the jobs' own skip conditions, read from the run directory.
A stage found complete stays complete (jobs never remove outputs), so checking at submission time
is safe on Slurm too, where everything is submitted before anything runs.
"""

from __future__ import annotations

from r1hpc import recipe
from r1hpc.config import Config
from r1hpc.fsio import StoreError, read_jsonl
from r1hpc.stages.eval import shards_published
from r1hpc.store import RunDir, is_done, version_published

__all__ = ["stage_complete", "eval_complete"]


def _logged_steps(run: RunDir, stage: str) -> set[object]:
    try:
        rows = read_jsonl(run.metrics_path(stage, create=False), missing_ok=True)
    except StoreError:  # unreadable metrics: not complete, the stage's job rewrites what it finds missing
        return set()
    return {row.get("step") for row in rows}


def stage_complete(cfg: Config, run: RunDir, entry: recipe.Stage) -> bool:
    """True when every output of `entry`'s jobs is in the run: its last version published (GRPO:
    v<steps>, with a metrics line for every step, which a train job killed between publishing and
    logging writes on its rerun), and its done marker written. Eval (per model: eval_complete) and
    the report (cheap, and it must see the newest evals) are never complete here."""
    # (kinds are named by recipe.of_kind: several kinds share their name with a stage)
    if entry in recipe.of_kind("eval", "report"):
        return False
    if entry in recipe.of_kind("pretrain", "sft", "reward_model", "grpo"):  # they publish models/<stage>/vNNNN
        last = getattr(cfg, entry.section).steps if entry.kind == "grpo" else 0
        if not version_published(run, entry.name, last):
            return False
        if entry.kind == "grpo" and not set(range(last)) <= _logged_steps(run, entry.name):
            return False
    elif not entry.done_marker:  # a kind that neither publishes nor marks: nothing to tell by
        return False
    return not entry.done_marker or is_done(run, entry.name, entry.done_marker)


def eval_complete(cfg: Config, run: RunDir, model_stage: str) -> bool:
    """True when every shard of `model_stage`'s held-out eval is published, and (eval.general) of
    its general-prompt eval. The latter exists only once the run has a reward model, so a run
    without one always submits eval (whose tasks then find nothing to do)."""
    return shards_published(cfg.eval.shards, run, model_stage, cfg.eval.general)
