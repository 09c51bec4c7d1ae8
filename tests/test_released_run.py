"""The recipe as a user who arrives with released checkpoints and dataset files runs it: a
BOS-adding Llama-style teacher with its chat template, a Qwen-style student with another tokenizer,
problems from an open-r1 JSONL and a verl parquet, a GSM8K-style benchmark, on the local executor.
Every stage runs for real; the published models load in transformers and vLLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from released import make_checkpoint, write_datasets

from r1hpc.model.prompting import PromptFormat, encode_prompt

REPO = Path(__file__).resolve().parents[1]


def released_overrides(root: Path, teacher: Path, student: Path) -> list[str]:
    files = write_datasets(root)
    return [
        f"runs_dir={root / 'runs'}",
        "name=released",
        f"model.init_from={teacher}",
        f"student.init_from={student}",
        "prompt.format=chat",
        "prompt.system=Think step by step, then answer in <answer> tags.",
        f"data.train=[{{path: {files['openr1']}, preset: openr1}}, {{path: {files['verl']}, preset: verl}}]",
        f"data.heldout=[{{path: {files['gsm8k']}, preset: gsm8k, name: gsm8k}}]",
        "model.max_seq_len=256",
        "eval.problems=0",
        "r1_zero.steps=1",
    ]


@pytest.fixture(scope="module")
def released_run(tmp_path_factory):
    from r1hpc.pipeline import main

    root = tmp_path_factory.mktemp("released")
    teacher = make_checkpoint(root / "llama_teacher", "llama")
    student = make_checkpoint(root / "qwen_student", "qwen", layers=1)
    assert main([str(REPO / "configs" / "smoke.yaml"), *released_overrides(root, teacher, student)]) == 0
    return root / "runs" / "released", teacher, student


def test_every_stage_runs_from_released_checkpoints_and_files(released_run):
    from r1hpc.stages.common import read_metrics
    from r1hpc.store import RunDir, latest_model

    run_dir, teacher, _ = released_run
    run = RunDir(run_dir)
    for stage in (
        "base",
        "r1_zero",
        "cold_start",
        "reasoning_rl",
        "sft",
        "rl_all",
        "student_base",
        "distill",
        "distill_rl",
    ):
        assert (latest_model(run, stage, verify="sha256").path / "config.json").is_file(), stage
    assert (run_dir / "data" / "sources_report.json").is_file()
    train = [json.loads(x) for x in (run_dir / "data" / "problems_train.jsonl").read_text().splitlines()]
    assert {p["data_source"] for p in train} == {"openr1", "arith_verl"} and len(train) == 48
    summary = json.loads((run_dir / "eval" / "r1_zero.json").read_text())
    assert set(summary["by_source"]) == {"gsm8k"} and summary["problems"] == 6
    # Sampled vs trained log-probs: the trainer scores exactly the ids the generator sampled from
    # (BOS written by the chat template once, not twice). A random 2-layer model: fp32 noise only.
    for stage in ("r1_zero", "reasoning_rl"):
        for row in read_metrics(run_dir, stage):
            assert row["gen_logprob_diff_max"] < 1e-3, (stage, row)
    # The rollouts' prompts are the chat template's rendering, one BOS at the start.
    shard = [
        json.loads(x)
        for x in (run_dir / "rollouts" / "r1_zero" / "step_0000" / "shard_000.jsonl").read_text().splitlines()
        if x.strip()
    ]
    from r1hpc.model.tokenizer import load_tokenizer

    tok = load_tokenizer(teacher)
    ids = shard[0]["prompt_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<think>")


def test_published_models_load_in_transformers(released_run):
    from transformers import AutoModelForCausalLM

    from r1hpc.model.tokenizer import load_tokenizer
    from r1hpc.store import RunDir, latest_model

    run = RunDir(released_run[0])
    for stage, arch in (("rl_all", "LlamaForCausalLM"), ("distill", "Qwen2ForCausalLM")):
        path = latest_model(run, stage, verify="sha256").path
        assert type(AutoModelForCausalLM.from_pretrained(str(path))).__name__ == arch
        assert load_tokenizer(path).chat_template  # the checkpoint's tokenizer travels with every version


def _trainer_vs_generator(gen, model_dir: Path, prompts: list[str]) -> tuple[float, list[list[int]]]:
    """Largest |generator - trainer| sampled-token log-prob, the trainer scoring the stored ids
    with its own batching (pack, pad = eos) and log-prob function."""
    from r1hpc.model.factory import load_model
    from r1hpc.train.batches import pack
    from r1hpc.train.grpo import sequence_logprobs

    ids = [encode_prompt(gen.tokenizer, p) for p in prompts]
    out = gen.generate(ids, n=2, max_new_tokens=12, temperature=1.0, top_p=1.0, seed=3)
    samples = [(ids[i], s) for i, group in enumerate(out) for s in group]
    batch = pack([p for p, _ in samples], [s.token_ids for _, s in samples], gen.tokenizer.pad_token_id)
    trainer = sequence_logprobs(load_model(model_dir), batch, 8, 1.0)
    worst = 0.0
    for row, (_, s) in enumerate(samples):
        pos = batch.loss_mask[row].nonzero().squeeze(1)
        worst = max(worst, float((trainer[row, pos] - torch.tensor(s.logprobs)).abs().max()))
    return worst, ids


@pytest.mark.slow
def test_published_version_in_vllm_matches_the_trainer_with_a_bos_tokenizer(released_run):
    """A published policy (BOS-adding tokenizer, pad = eos) serves in vLLM, and what vLLM samples
    from the R1 plain template is scored by the trainer within fp32 noise: the BOS the tokenizer
    adds is in the sampled context and in the stored prompt ids alike."""
    from r1hpc.rollout import make_generator
    from r1hpc.store import RunDir, latest_model

    path = latest_model(RunDir(released_run[0]), "r1_zero", verify="sha256").path
    gen = make_generator("vllm", path, progress=False)
    try:
        worst, ids = _trainer_vs_generator(
            gen, path, [PromptFormat().render("What is 3 + 4?"), PromptFormat().render("What is 9 - 2?")]
        )
    finally:
        gen.close()
    assert all(x[0] == gen.tokenizer.bos_token_id and x.count(gen.tokenizer.bos_token_id) == 1 for x in ids)
    assert worst < 1e-3
