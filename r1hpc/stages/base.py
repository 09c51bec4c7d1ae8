"""The `data` and `base` stages: the generated task, the tokenizer, and the pretrained base models.

    prepare_data(run_dir)           data/problems_{train,heldout}.jsonl, data/general_{train,heldout}.jsonl
                                    and data/tokenizer/ (trained on the pretraining corpus)
    pretrain_base(run_dir, which)   models/base (which="teacher", cfg.model sizes) or
                                    models/student_base (which="student", cfg.student sizes):
                                    causal-LM pretraining on problems with imperfect worked solutions

Real users start from released weights instead: set model.init_from to an HF directory and the
teacher's base is that checkpoint (verified to load), published as models/base/v0000; likewise
student.init_from for models/student_base.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from r1hpc.config import Config, SFTStageConfig
from r1hpc.fsio import atomic_write_json
from r1hpc.stages.common import StageContext, data_path, log_metrics, publish_policy, stage_seed
from r1hpc.store import done_info, list_versions, mark_done, publish_model
from r1hpc.train.sft import SFTSettings, train_sft

__all__ = ["prepare_data", "pretrain_base", "sft_settings"]


def sft_settings(s: SFTStageConfig) -> SFTSettings:
    return SFTSettings(
        epochs=s.epochs,
        batch_size=s.batch_size,
        micro_batch_size=s.micro_batch_size,
        lr=s.lr,
        warmup_steps=s.warmup_steps,
        max_len=s.max_len,
        save_every=s.save_every,
    )


def prepare_data(run_dir: str) -> dict[str, Any]:
    """Generate the run's task data, or read the user's dataset files (data.train / data.heldout: then
    data/sources_report.json has their counts), and train its tokenizer (idempotent, deterministic)."""
    from r1hpc.model.pretrain_corpus import build_corpus
    from r1hpc.model.tokenizer import save_tokenizer, train_tokenizer
    from r1hpc.tasks.dataset import generate_general, generate_problems, write_jsonl

    ctx = StageContext(run_dir)
    done = done_info(ctx.run, "data", "data")
    if done is not None:
        return done
    cfg, d = ctx.cfg, ctx.cfg.data
    counts: dict[str, Any] = {}
    sources = None
    if d.train:  # the user's files replace both problem sets (r1hpc.datasets)
        from r1hpc.datasets import load_problems

        train, heldout, sources = load_problems(cfg)
        atomic_write_json(ctx.run.data_dir() / "sources_report.json", sources)
    else:
        train = generate_problems(
            cfg.seed, "train", d.train_problems, difficulties=d.difficulties, languages=d.languages
        )
        heldout = generate_problems(
            cfg.seed, "heldout", d.heldout_problems, difficulties=d.difficulties, languages=d.languages
        )
    for name, examples in (
        ("problems_train", train),
        ("problems_heldout", heldout),
        ("general_train", generate_general(cfg.seed, "train", d.general_train)),
        ("general_heldout", generate_general(cfg.seed, "heldout", d.general_heldout)),
    ):
        write_jsonl(data_path(ctx, name), examples)
        counts[name] = len(examples)
    tok_dir = ctx.run.data_dir() / "tokenizer"
    if cfg.model.init_from:
        source = Path(cfg.model.init_from)
        tmp = ctx.tmp_dir()
        for f in source.iterdir():
            if f.is_file() and (f.name.startswith(("tokenizer", "chat_template")) or f.name in _TOKENIZER_EXTRAS):
                shutil.copy2(f, tmp / f.name)
    else:
        corpus = build_corpus(cfg.seed, min(cfg.base.corpus_docs, 8000), corpus_mix(cfg))
        tokenizer = train_tokenizer(corpus, cfg.base.tokenizer_vocab)
        tmp = ctx.tmp_dir()
        save_tokenizer(tokenizer, tmp)
    if tok_dir.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(tok_dir)  # one rename: the tokenizer directory appears complete or not at all
    info = {"counts": counts, "tokenizer": str(tok_dir)}
    if sources is not None:
        info["sources"] = {which: sources[which] for which in ("train", "heldout")}  # per-source counts
    mark_done(ctx.run, "data", "data", info)
    return info


# Tokenizer files besides tokenizer*.json/.model and chat_template.jinja/.json (transformers 5
# writes the chat template to its own file).
_TOKENIZER_EXTRAS = ("special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json")


def corpus_mix(cfg: Config) -> Any:
    """The default pretraining mix, with math only at the difficulties the run trains and evaluates,
    in the run's task languages."""
    import dataclasses

    from r1hpc.model.pretrain_corpus import CorpusMix

    default = CorpusMix()
    weights = tuple(w if d in cfg.data.difficulties else 0.0 for d, w in enumerate(default.difficulty_weights, 1))
    return dataclasses.replace(default, difficulty_weights=weights, languages=tuple(cfg.data.languages))


def _model_size(cfg: Config, which: str) -> Any:
    from r1hpc.model.factory import ModelSize

    if which == "teacher":
        m = cfg.model
        return ModelSize(
            layers=m.num_layers,
            hidden=m.hidden_size,
            heads=m.num_heads,
            kv_heads=m.num_kv_heads,
            intermediate=m.intermediate_size,
            max_positions=m.max_seq_len,
            tied_embeddings=m.tie_embeddings,
        )
    s = cfg.student
    return ModelSize(
        layers=s.num_layers,
        hidden=s.hidden_size,
        heads=s.num_heads,
        kv_heads=s.num_kv_heads,
        intermediate=s.intermediate_size,
        max_positions=cfg.model.max_seq_len,
        tied_embeddings=True,
    )


def _build_moe(cfg: Config, tokenizer: Any, seed: int) -> Any:
    """A DeepSeek-V3-style HF model of the run's sizes: the base of a Megatron-backend MoE run."""
    import torch
    from transformers import DeepseekV3ForCausalLM

    from r1hpc.megatron.hf_convert import hf_config, megatron_config_from_run

    config = hf_config(
        megatron_config_from_run(cfg.model, len(tokenizer)),
        bos_id=tokenizer.eos_token_id,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DeepseekV3ForCausalLM(config)


def _blocks(token_ids: list[int], length: int) -> list[list[int]]:
    """Cut the concatenated corpus into equal blocks (the standard packing for causal-LM pretraining)."""
    return [token_ids[i : i + length] for i in range(0, len(token_ids) - length + 1, length)]


def pretrain_base(run_dir: str, which: str = "teacher") -> dict[str, Any]:
    """Pretrain (or import) a base model and publish it as v0000 of models/base or models/student_base."""
    from r1hpc.model.factory import build_model, load_model, n_params
    from r1hpc.model.pretrain_corpus import build_corpus
    from r1hpc.model.tokenizer import load_tokenizer

    if which not in ("teacher", "student"):
        raise ValueError(f"pretrain_base: which must be 'teacher' or 'student', got {which!r}")
    ctx = StageContext(run_dir)
    cfg = ctx.cfg
    stage = "base" if which == "teacher" else "student_base"
    existing = [v for v in list_versions(ctx.run, stage) if v.version == 0]
    if existing:
        return {"stage": stage, "skipped": "already published", **existing[0].meta}
    checkpoint = cfg.model.init_from if which == "teacher" else cfg.student.init_from
    if checkpoint:
        # a released checkpoint with its own tokenizer; loading it here gives a clear error now
        # rather than in every rollout task
        load_model(checkpoint)
        version = publish_model(ctx.run, stage, checkpoint, version=0, meta={"init_from": checkpoint})
        return {"stage": stage, "init_from": checkpoint, "version": version.name}
    started = time.time()
    tokenizer = load_tokenizer(ctx.run.data_dir() / "tokenizer")
    docs = build_corpus(cfg.seed, cfg.base.corpus_docs, corpus_mix(cfg))
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    blocks = _blocks(ids, cfg.model.max_seq_len)
    size = _model_size(cfg, which)
    init_seed = stage_seed(cfg.seed, stage, "init")
    if which == "teacher" and cfg.model.arch == "deepseek_v3":
        model = _build_moe(cfg, tokenizer, init_seed)  # trained here like any HF causal LM
    else:
        model = build_model(size, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=init_seed)
    # Each block is all target: the first token conditions the rest (pack needs a non-empty prompt).
    prompts = [b[:1] for b in blocks]
    targets = [b[1:] for b in blocks]
    metrics = train_sft(
        model,
        prompts,
        targets,
        sft_settings(cfg.base.train),
        tokenizer.pad_token_id,
        seed=stage_seed(cfg.seed, stage, "train"),
        state_dir=ctx.run.train_state_dir(stage),
        log=lambda m: log_metrics(ctx, stage, m),
    )
    meta = {
        "params": n_params(model),
        "tokens": len(ids),
        "blocks": len(blocks),
        "final_loss": metrics.get("loss"),
        "seconds": round(time.time() - started, 1),
        "arch": type(model).__name__,
        "sizes": size.to_dict(),
    }
    version = publish_policy(ctx, stage, 0, model, tokenizer, meta=meta)
    atomic_write_json(ctx.run.data_dir() / f"{stage}_summary.json", meta)
    return {"stage": stage, "version": version.name, **meta}
