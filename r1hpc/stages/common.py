"""What every stage job shares: the prompt template, the run's data files, loading and publishing
policies through the run store, per-stage seeds, and the metrics log.

A stage job receives only `run_dir` (plus its step/shard) and reads everything else from the run
directory: the resolved config, the data the `base` stage generated, the published models.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r1hpc.config import Config, read_run_config
from r1hpc.fsio import append_jsonl, read_jsonl
from r1hpc.model.prompting import PromptFormat
from r1hpc.rollout.base import derive_seed
from r1hpc.rollout.factory import make_generator
from r1hpc.store import ModelVersion, RunDir, latest_model, list_versions, publish_model

__all__ = [
    "StageContext",
    "prompt_format",
    "stage_generator",
    "stage_seed",
    "load_policy",
    "publish_policy",
    "init_stage_from",
    "data_path",
    "read_data",
    "log_metrics",
    "read_metrics",
    "log_metrics_once",
    "reward_example",
    "reward_pool",
]


def prompt_format(cfg: Config, tokenizer: Any) -> PromptFormat:
    """The run's prompt format (config `prompt`) bound to the tokenizer of the model it prompts.
    Every stage renders through it, so rewards and eval compare like with like."""
    p = cfg.prompt
    return PromptFormat(format=p.format, system=p.system, open_think=p.open_think, tokenizer=tokenizer)


def stage_generator(cfg: Config, model_dir: str | Path) -> Any:
    """A rollout backend (grpo.generator) over a policy directory, with the run's pad and eos tokens
    and, for vLLM, the run's engine layout (config `engine`: only what differs from a one-device
    engine). The layout is the policy's (model.*): a model of another shape (a distillation
    student, evaluated on the same resources) gets a one-device engine of engine.dtype."""
    e = cfg.engine
    engine: dict[str, Any] = {} if e.dtype == "auto" else {"dtype": e.dtype}
    layout: dict[str, Any] = {name: size for name, size in (("tp", e.tp), ("pp", e.pp)) if size > 1}
    if e.ep:
        layout["ep"] = True
    hf_config = Path(model_dir) / "config.json"
    if layout and hf_config.exists():
        hf = json.loads(hf_config.read_text())
        if (hf.get("num_hidden_layers"), hf.get("hidden_size")) != (cfg.model.num_layers, cfg.model.hidden_size):
            print(f"r1hpc: {model_dir} is not the shape of model.*: a one-device engine, not {layout}", file=sys.stderr)
            layout = {}
    return make_generator(
        cfg.grpo.generator,
        model_dir,
        seed=cfg.seed,
        engine={**engine, **layout},
        pad_token=cfg.model.pad_token,
        eos_tokens=list(cfg.model.eos_tokens),
    )


# A 31-bit seed for (run seed, stage, step, shard, ...), stable across processes and reruns: the
# rollout layer's derive_seed (one hash for both; the stage name reads better in a stage job).
stage_seed = derive_seed


class StageContext:
    """The run a job works on: its directory, store and resolved config."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run = RunDir(self.run_dir)
        self.cfg: Config = read_run_config(self.run_dir)

    def tmp_dir(self) -> Path:
        """A fresh private directory on the run's filesystem (so publishing can rename/copy locally)."""
        path = self.run_dir / "tmp" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path


def data_path(ctx: StageContext, name: str) -> Path:
    """`data/<name>.jsonl` of the run (problems_train, problems_heldout, general_train, ...)."""
    return ctx.run.data_dir() / f"{name}.jsonl"


def read_data(ctx: StageContext, name: str) -> list[dict[str, Any]]:
    path = data_path(ctx, name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; it is written by an earlier stage (did the base stage run?)")
    return read_jsonl(path)


def load_policy(version: ModelVersion | Path, pad_token: str = "") -> tuple[Any, Any]:
    """(model, tokenizer) from a published version (file sizes checked against its MANIFEST) or
    an HF directory, on CPU, eval mode. pad_token: config model.pad_token (load_tokenizer)."""
    from r1hpc.model.factory import load_model  # torch + transformers: only in jobs that load a model
    from r1hpc.model.tokenizer import load_tokenizer

    path = version.checked().path if isinstance(version, ModelVersion) else Path(version)
    return load_model(path), load_tokenizer(path, pad_token=pad_token)


def publish_policy(
    ctx: StageContext, stage: str, version: int, model: Any, tokenizer: Any, meta: dict[str, Any] | None = None
) -> ModelVersion:
    """save_pretrained model + tokenizer, then publish them as models/<stage>/v<version>."""
    tmp = ctx.tmp_dir()
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        return publish_model(ctx.run, stage, tmp, version=version, meta=meta or {})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def init_stage_from(ctx: StageContext, stage: str, source_stage: str) -> ModelVersion:
    """v0000 of `stage` is the newest verified version of `source_stage` (idempotent)."""
    existing = [v for v in list_versions(ctx.run, stage) if v.version == 0]
    if existing:
        return existing[0]
    source = latest_model(ctx.run, source_stage, verify="sha256")
    return publish_model(ctx.run, stage, source.path, version=0, meta={"init_from": f"{source_stage}/{source.name}"})


def log_metrics(ctx: StageContext, stage: str, record: dict[str, Any]) -> None:
    """One line in metrics/<stage>.jsonl (readers keep the last line per step: a rerun may repeat one),
    and the same scalars as TensorBoard events under tensorboard/<stage>/."""
    from r1hpc.tensorboard_log import log_scalars

    line = {"time": round(time.time(), 3), **record}
    append_jsonl(ctx.run.metrics_path(stage), line)
    if isinstance(record.get("step"), int):
        log_scalars(ctx.run_dir, stage, line)


def log_metrics_once(ctx: StageContext, stage: str, records: Iterable[dict[str, Any]]) -> None:
    """log_metrics of each record whose step metrics/<stage>.jsonl does not have yet: a job killed
    between publishing a version and logging its metrics logs them when its rerun finds the version
    published (the records stored in the versions' meta)."""
    logged = {row.get("step") for row in read_metrics(ctx.run_dir, stage)}
    for record in records:
        if record and record.get("step") not in logged:
            log_metrics(ctx, stage, record)


def reward_example(problem: dict[str, Any], ends_with_think: bool = True, **facts: Any) -> dict[str, Any]:
    """What the reward functions see for one of the run's problems: the reference answer (when the
    problem has one), the prompt, its language (a problem's own "language", else None: the
    language reward then infers it from the prompt), a code problem's tests, its data_source, and
    `facts` about the completion (e.g. completion_tokens for the overlong penalty).
    ends_with_think: the prompt format opens <think> (PromptFormat.ends_with_think), so the format
    reward expects the completion to continue it."""
    example = {
        "prompt": problem["prompt"],
        "language": problem.get("language"),
        "prompt_ends_with_think": ends_with_think,
        **facts,
    }
    for key in ("answer", "tests", "choices", "data_source"):
        if key in problem:
            example[key] = problem[key]
    return example


def reward_pool(cfg: Config) -> Any:
    """A scoring WorkerPool with the run's per-item deadline and address-space limit (rewards.*)."""
    from r1hpc.rewards.isolation import WorkerPool

    return WorkerPool(item_timeout_s=cfg.rewards.timeout_s, memory_limit_bytes=cfg.rewards.memory_mb * 1024**2)


def read_metrics(run_dir: str | Path, stage: str) -> list[dict[str, Any]]:
    """metrics/<stage>.jsonl with repeated steps collapsed to their last line, in step order."""
    rows = read_jsonl(RunDir(run_dir).metrics_path(stage, create=False), missing_ok=True)
    by_step: dict[Any, dict[str, Any]] = {}
    for row in rows:
        by_step[row.get("step")] = row
    return sorted(by_step.values(), key=lambda r: (r.get("step") is None, r.get("step") or 0))
