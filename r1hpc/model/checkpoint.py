"""Checks of a released checkpoint given as model.init_from, student.init_from or
reward_model.init_from, before any job is submitted: the files are there, the config, tokenizer
and generation config load, the tokenizer fits the embedding, the configured pad/eos tokens and
the chat template work. Reads the small files only; no weights are loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from r1hpc.config import Config
from r1hpc.model.prompting import PromptFormat

__all__ = ["checkpoint_problems", "check_checkpoint"]


def checkpoint_problems(cfg: Config) -> list[str]:
    """One line per problem with each checkpoint the config names."""
    out: list[str] = []
    for key, path, pad in (
        ("model.init_from", cfg.model.init_from, cfg.model.pad_token),
        ("student.init_from", cfg.student.init_from, ""),
        ("reward_model.init_from", cfg.reward_model.init_from, ""),
    ):
        if path:
            # the teacher's tokens and chat template are what rollouts use; the student's and the reward
            # model's tokenizers must load and fit, and render the same prompt format
            eos = list(cfg.model.eos_tokens) if key == "model.init_from" else []
            out += check_checkpoint(Path(path), key, cfg, pad_token=pad, eos_tokens=eos)
    return out


def check_checkpoint(
    path: Path, key: str, cfg: Config, pad_token: str = "", eos_tokens: list[str] | None = None
) -> list[str]:
    """Problems with one HF checkpoint directory (empty when it is usable)."""
    from r1hpc.model.tokenizer import load_tokenizer, stop_token_ids  # transformers: only when a checkpoint is named

    where = f"{key}={path}"
    if not path.is_dir():
        return [
            f"{where}: directory does not exist (expected an HF model directory: config.json, *.safetensors, tokenizer)"
        ]
    config_path = path / "config.json"
    if not config_path.is_file():
        return [f"{where}: no config.json (expected an HF model directory written by save_pretrained)"]
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"{config_path}: not valid JSON: {e}"]
    problems = []
    if not any(path.glob("*.safetensors")):
        problems.append(
            f"{where}: no *.safetensors weights (convert .bin weights with save_pretrained(safe_serialization=True))"
        )
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 1:
        problems.append(f"{config_path}: vocab_size = {vocab!r}; expected a positive integer")
        vocab = None
    try:
        tok = load_tokenizer(path, pad_token=pad_token)
    except (FileNotFoundError, ValueError) as e:
        return problems + [f"{where}: {e}"]
    if vocab is not None and len(tok) > vocab:
        problems.append(
            f"{where}: the tokenizer has {len(tok)} tokens but config.json vocab_size is {vocab}: "
            f"ids past {vocab - 1} have no embedding row"
        )
    try:
        eos_ids = stop_token_ids(tok, path, eos_tokens or [])
    except ValueError as e:
        return problems + [f"{where}: {e}"]
    if vocab is not None and (too_big := [i for i in (*eos_ids, tok.pad_token_id) if i >= vocab]):
        problems.append(f"{where}: eos/pad ids {too_big} are outside vocab_size {vocab}")
    p = cfg.prompt
    try:
        fmt = PromptFormat(format=p.format, system=p.system, open_think=p.open_think, tokenizer=tok)
        fmt.render({"prompt": "What is 1 + 1?"})
    except ValueError as e:
        problems.append(f"{where}: prompt.format={p.format!r}: {e}")
    return problems
