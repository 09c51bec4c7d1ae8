"""The Megatron backend of a GRPO train job on a tiny run (configs/tiny_moe.yaml, TP2, 2 processes).

The fixture builds a run directory: the resolved config (small overrides), a random tiny
DeepseekV3 published as r1_zero/v0000, and scored rollout shards for steps 0 and 1 (token ids drawn
at random, rewards that differ within each group). train_task then runs twice: v0001 and v0002 must
be published, load in transformers, differ from their predecessor; metrics are logged; a rerun is
a no-op; and the Megatron checkpoint of step 2 holds the optimizer state.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from r1hpc.config import load_config, write_resolved
from r1hpc.megatron.hf_convert import hf_config, megatron_config_from_run
from r1hpc.store import RunDir, list_versions, publish_model, publish_shard

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STAGE = "r1_zero"


def _records(step: int, vocab: int, prompts: int, group: int) -> list[dict]:
    g = torch.Generator().manual_seed(100 + step)
    out = []
    for p in range(prompts):
        prompt = torch.randint(3, vocab, (5 + p,), generator=g).tolist()
        for k in range(group):
            n = 4 + (k % 3)
            out.append(
                {
                    "group": p,
                    "problem_id": f"p{p}",
                    "prompt_ids": prompt,
                    "response_ids": torch.randint(3, vocab, (n,), generator=g).tolist(),
                    "gen_logprobs": [-1.0] * n,
                    "reward": float(k % 2) + 0.1 * p,
                    "rewards": {"accuracy_math": float(k % 2)},
                    "policy_version": step,
                    "gen_seconds": 0.1,
                    "score_seconds": 0.1,
                }
            )
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import DeepseekV3ForCausalLM

    tmp = tmp_path_factory.mktemp("moe_run")
    cfg = load_config(
        ROOT / "configs/tiny_moe.yaml",
        [
            f"runs_dir={tmp}",
            "name=t",
            "model.vocab_size=64",
            "model.hidden_size=32",
            "model.num_layers=2",
            "model.intermediate_size=64",
            "model.num_experts=4",
            "model.moe_intermediate_size=16",
            "model.q_lora_rank=16",
            "model.kv_lora_rank=16",
            "model.qk_nope_head_dim=8",
            "model.qk_rope_head_dim=4",
            "model.v_head_dim=8",
            "model.max_seq_len=64",
            "grpo.max_new_tokens=16",
            "eval.max_new_tokens=16",
            "grpo.prompts_per_step=2",
            "grpo.group_size=4",
            "grpo.rollout_shards=1",
            "grpo.micro_batch_size=2",
            "grpo.mini_batches=2",
            "r1_zero.lr=0.01",
            "r1_zero.steps=2",
        ],
    )
    write_resolved(cfg, argv=["test"])
    run = RunDir(cfg.run_dir)
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(hf_config(megatron_config_from_run(cfg.model), eos_id=1, pad_id=0))
    v0 = tmp / "v0"
    model.save_pretrained(str(v0))
    (v0 / "tokenizer_config.json").write_text(json.dumps({"note": "copied along with the weights"}))
    publish_model(run, STAGE, v0, version=0, meta={"init_from": "test"})
    for step in (0, 1):
        publish_shard(run, STAGE, step, 0, _records(step, 64, 2, 4))
    return cfg.run_dir


@pytest.fixture(scope="module")
def trained(run_dir: Path) -> list[dict]:
    from r1hpc.stages.grpo_megatron import train_task

    return [train_task(str(run_dir), STAGE, step) for step in (0, 1)]


def test_versions_published_and_loadable(run_dir: Path, trained: list[dict]) -> None:
    from transformers import AutoModelForCausalLM

    versions = {v.version: v for v in list_versions(RunDir(run_dir), STAGE)}
    assert sorted(versions) == [0, 1, 2]
    params = []
    for n in (0, 1, 2):
        m = AutoModelForCausalLM.from_pretrained(str(versions[n].path), dtype=torch.float32)
        params.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert (versions[1].path / "tokenizer_config.json").is_file()
    assert not torch.equal(params[0], params[1]) and not torch.equal(params[1], params[2])


def test_metrics_logged(run_dir: Path, trained: list[dict]) -> None:
    from r1hpc.stages.common import read_metrics

    rows = read_metrics(run_dir, STAGE)
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:
        for key in ("loss", "pg_loss", "kl", "grad_norm", "reward_mean"):
            assert key in r and r[key] == r[key], (key, r)
        assert r["backend"] == "megatron" and r["layout"]["tp"] == 2 and r["updates"] == 2.0
        assert r["grad_norm"] > 0


def test_rerun_is_noop_and_state_kept(run_dir: Path, trained: list[dict]) -> None:
    from r1hpc.megatron.checkpoint import read_meta
    from r1hpc.stages.grpo_megatron import train_task

    again = train_task(str(run_dir), STAGE, 1)
    assert again["skipped"] == "already published"
    meta = read_meta(RunDir(run_dir).train_state_dir(STAGE) / "megatron_step_0002")
    assert meta["step"] == 2 and meta["optimizer"] is True
