"""What an SFT stage trains, under every backend: the SFT sets on disk (one JSONL record
{"prompt", "completion", ...} per example, written and read here), the records tokenized in the run's
prompt format, the model they start from, and the summary a published SFT version carries.

Shared by the stage jobs (r1hpc.stages.sft_stage, cold_start, rejection) and the ranks of the
DeepSpeed backend (r1hpc.stages.sft_deepspeed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1hpc import recipe
from r1hpc.config import SFTStageConfig
from r1hpc.fsio import atomic_write_text, read_jsonl
from r1hpc.model.prompting import PromptFormat, encode_prompts
from r1hpc.stages.common import StageContext, load_policy, prompt_format
from r1hpc.store import latest_model

__all__ = ["SFTInputs", "read_sft_records", "write_sft_records", "sft_inputs", "sft_summary"]


def write_sft_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write an SFT set atomically (one rename: readers see all of it or nothing)."""
    for i, r in enumerate(records):
        if not isinstance(r.get("prompt"), str) or not isinstance(r.get("completion"), str):
            raise ValueError(f"{path}: record {i} needs str 'prompt' and 'completion', got keys {sorted(r)}")
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_sft_records(path: Path) -> list[dict[str, Any]]:
    """An SFT set's records; ValueError naming file and line for anything but the schema above."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing SFT set (written by cold_start / rejection_merge)")
    out = read_jsonl(path)  # names file and line for a line that is not one JSON object
    for lineno, rec in enumerate(out, 1):
        for key in ("prompt", "completion"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise ValueError(f"{path}:{lineno}: key {key!r} must be a non-empty string, got {rec.get(key)!r}")
    return out


def _tokenize(fmt: PromptFormat, records: list[dict[str, Any]]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, target ids + eos) per record. Tokenized apart, as in generation: the model
    continues exactly the prompt ids a rollout would give it (PromptFormat, encode_prompt)."""
    tokenizer = fmt.tokenizer
    prompts = encode_prompts(tokenizer, [fmt.render(r) for r in records])
    targets = tokenizer([r["completion"] for r in records], add_special_tokens=False)["input_ids"]
    return prompts, [t + [tokenizer.eos_token_id] for t in targets]


@dataclass
class SFTInputs:
    """What an SFT stage trains: the model it starts from and the tokenized records."""

    model: Any  # the transformers model loaded from `source`; None when not asked for (the Megatron ranks)
    tokenizer: Any
    prompts: list[list[int]]  # per record: the prompt's token ids (not trained on)
    targets: list[list[int]]  # per record: the completion's token ids + eos (the loss tokens)
    init_from: str  # "<stage>/vNNNN", the version loaded
    truncated: int  # records longer than the settings' max_len (cut by the packer)
    source: Path  # the HF directory of that version


def sft_inputs(
    ctx: StageContext,
    stage: str,
    records: list[dict[str, Any]],
    settings: SFTStageConfig,
    with_model: bool = True,
) -> SFTInputs:
    """Load the newest model of the stage's init_from (r1hpc.recipe; with_model=False: its tokenizer
    only) and tokenize `records`."""
    from r1hpc.model.tokenizer import load_tokenizer

    init_stage = recipe.stage(stage).init_from
    source = latest_model(ctx.run, init_stage, verify="sha256")
    # model.pad_token is the teacher checkpoint's; a student keeps its own tokenizer's pad
    pad_token = "" if recipe.stage(stage).student else ctx.cfg.model.pad_token
    if with_model:
        model, tokenizer = load_policy(source, pad_token=pad_token)
    else:
        model, tokenizer = None, load_tokenizer(source.checked().path, pad_token=pad_token)
    # the format binds to the tokenizer of the model trained: a student's may differ from the teacher's
    prompts, targets = _tokenize(prompt_format(ctx.cfg, tokenizer), records)
    too_long = sum(len(p) + len(t) > settings.max_len for p, t in zip(prompts, targets))
    return SFTInputs(model, tokenizer, prompts, targets, f"{init_stage}/{source.name}", too_long, source.path)


def sft_summary(
    stage: str, inputs: SFTInputs, metrics: dict[str, float], started: float, meta: dict[str, Any] | None
) -> dict[str, Any]:
    """The published version's meta (the same under every backend)."""
    return {
        "stage": stage,
        "init_from": inputs.init_from,
        "examples": len(inputs.prompts),
        "target_tokens": sum(len(t) for t in inputs.targets),
        "truncated_examples": inputs.truncated,
        "steps": metrics.get("step"),
        "final_loss": metrics.get("loss"),
        "seconds": round(time.time() - started, 1),
        **(meta or {}),
    }
