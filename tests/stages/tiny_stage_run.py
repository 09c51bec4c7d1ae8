"""A tiny run directory for stage tests: resolved config, generated data, tokenizer, and
pretrained models/base + models/student_base (a few seconds of CPU).

The run is built once per test process and copied into each test's tmp_path (`clone_run`), so
every test starts from the same published base without paying for pretraining again.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from r1hpc.config import load_config, write_resolved

ROOT = Path(__file__).resolve().parents[2]

# Small enough for seconds per stage on 2 loaded cores, big enough that SFT can teach the format.
TINY_OVERRIDES = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.intermediate_size=128",
    "model.max_seq_len=192",
    "student.num_layers=1",
    "student.hidden_size=32",
    "student.num_heads=2",
    "student.num_kv_heads=1",
    "student.intermediate_size=64",
    "data.train_problems=60",
    "data.heldout_problems=20",
    "data.general_train=40",
    "data.general_heldout=20",
    "data.difficulties=[1]",
    "base.tokenizer_vocab=400",
    "base.corpus_docs=1500",
    "base.train.epochs=1",
    "base.train.batch_size=16",
    "base.train.micro_batch_size=16",
    "base.train.lr=3e-3",
    "base.train.warmup_steps=2",
    "grpo.max_new_tokens=64",
    "grpo.rollout_shards=2",
    "grpo.prompts_per_step=4",
    "grpo.group_size=2",
    "eval.max_new_tokens=64",
    "eval.problems=10",
    "cold_start.examples=24",
    "cold_start.sft.epochs=6",
    "cold_start.sft.batch_size=8",
    "cold_start.sft.micro_batch_size=8",
    "cold_start.sft.lr=3e-3",
    "cold_start.sft.warmup_steps=2",
    "cold_start.sft.save_every=5",
    "rejection.prompts=6",
    "rejection.general_prompts=4",
    "rejection.samples_per_prompt=2",
    "rejection.shards=2",
    "rejection.keep_per_prompt=1",
    "reward_model.pairs=96",
    "reward_model.train.epochs=3",
    "reward_model.train.batch_size=16",
    "reward_model.train.micro_batch_size=16",
    "reward_model.train.lr=2e-3",
    "reward_model.train.warmup_steps=2",
    "reward_model.train.max_len=96",
    "reward_model.train.save_every=5",
    "sft.epochs=1",
    "sft.batch_size=8",
    "sft.micro_batch_size=8",
    "sft.warmup_steps=1",
    "distill.epochs=1",
    "distill.batch_size=8",
    "distill.micro_batch_size=8",
    "distill.warmup_steps=1",
]


def write_run(runs_dir: Path, name: str, extra: list[str] = ()) -> Path:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"runs_dir={runs_dir}", f"name={name}", *TINY_OVERRIDES, *extra])
    return write_resolved(cfg, argv=["test"]).parent


@cache
def _template() -> Path:
    from r1hpc.stages.base import prepare_data, pretrain_base

    runs = Path(tempfile.mkdtemp(prefix="r1hpc-stage-template-"))
    atexit.register(shutil.rmtree, runs, True)  # built once per test process, removed at its exit
    run_dir = write_run(runs, "t")
    prepare_data(str(run_dir))
    pretrain_base(str(run_dir), "teacher")
    pretrain_base(str(run_dir), "student")
    return run_dir


def clone_run(tmp_path: Path, extra: list[str] = ()) -> Path:
    """A private copy of the template run: its data, tokenizer and base models, under a config
    with the `extra` overrides (which must not change data or model sizes)."""
    template = _template()
    if not extra:
        dst = tmp_path / "runs" / "t"
        shutil.copytree(template, dst)
        return dst
    dst = write_run(tmp_path / "runs", "t", list(extra))
    for part in ("data", "models", "done"):
        shutil.copytree(template / part, dst / part)
    return dst
