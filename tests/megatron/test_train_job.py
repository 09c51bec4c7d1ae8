"""The Megatron backend of a GRPO stage's train job on tiny runs (configs/tiny_moe.yaml made
smaller, TP2 on 2 processes, 2 steps).

Each run directory gets the resolved config, the same random tiny DeepseekV3 as r1_zero/v0000 and
the same scored rollout shards (token ids drawn at random, rewards that differ within each group).
The runs:

- stage:       grpo.jobs=stage: train_loop, one job (its own torchrun) for both steps, no
               checkpoint until its end;
- step:        grpo.jobs=step: one job per step (step 1 restores step 0's checkpoint);
- killed:      v0001 of `stage` present and no checkpoint (a long-lived job killed after publishing
               it): the rerun replays step 0 from v0000 and trains step 1;
- stage_lag1 / killed_lag1: grpo.max_staleness=1 (step 1 sampled by v0000): the long-lived job
               takes the old log-probs from its copy of v0000, the rerun (restoring step 1's
               checkpoint) from v0000 imported from HF.

Every pair must publish byte-identical versions (MANIFEST sha256). To keep this to two torchrun
launches (each pays ~20 s of imports), the jobs other than `stage` run one after the other in one
launch (grpo_jobs_driver.py): each with its own backend, restored from the run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1hpc.config import load_config, write_resolved
from r1hpc.megatron.hf_convert import hf_config, megatron_config_from_run
from r1hpc.store import RunDir, list_versions, publish_model, publish_shard

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STAGE = "r1_zero"
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
STEPS = 2
SMALL = [
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
    "grpo.wait_timeout_s=60",
    "r1_zero.lr=0.01",
    f"r1_zero.steps={STEPS}",
]


def _records(step: int, vocab: int, prompts: int, group: int, lag: int = 0) -> list[dict]:
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
                    "policy_version": max(0, step - lag),
                    "gen_seconds": 0.1,
                    "score_seconds": 0.1,
                }
            )
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared v0000 (saved once) under a module temp dir."""
    from transformers import DeepseekV3ForCausalLM

    tmp = tmp_path_factory.mktemp("moe_runs")
    cfg = load_config(ROOT / "configs/tiny_moe.yaml", [f"runs_dir={tmp}", "name=v0", *SMALL])
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(hf_config(megatron_config_from_run(cfg.model), eos_id=1, pad_id=0))
    model.save_pretrained(str(tmp / "v0"))
    (tmp / "v0" / "tokenizer_config.json").write_text(json.dumps({"note": "copied along with the weights"}))
    return tmp


def _make_run(root: Path, name: str, *overrides: str, lag: int = 0, v0_by_job: bool = False) -> Path:
    """A run with the step's rollouts on disk and v0000 published, or with v0_by_job the base it
    starts from published, so that the train job publishes v0000 itself (as in a pipeline run)."""
    cfg = load_config(
        ROOT / "configs/tiny_moe.yaml",
        [f"runs_dir={root}", f"name={name}", *SMALL, f"grpo.max_staleness={lag}", *overrides],
    )
    write_resolved(cfg, argv=["test"])
    run = RunDir(cfg.run_dir)
    if v0_by_job:
        publish_model(run, "base", root / "v0", version=0, meta={"init_from": "test"})
    else:
        publish_model(run, STAGE, root / "v0", version=0, meta={"init_from": "test"})
    for step in range(STEPS):
        publish_shard(run, STAGE, step, 0, _records(step, 64, 2, 4, lag))
    return Path(cfg.run_dir)


def _hashes(run_dir: Path) -> dict[int, dict[str, str]]:
    return {
        v.version: {f["path"]: f["sha256"] for f in v.manifest["files"]} for v in list_versions(RunDir(run_dir), STAGE)
    }


def _state_steps(run_dir: Path) -> list[int]:
    from r1hpc.megatron.checkpoint import complete_steps

    return complete_steps(RunDir(run_dir).train_state_dir(STAGE))


@pytest.fixture(scope="module")
def stage_run(root: Path) -> tuple[Path, dict]:
    from r1hpc.stages.grpo_megatron import train_loop

    # The pipeline's train job: its first rank publishes v0000 from the base, the other waits for it.
    run_dir = _make_run(root, "stage", "grpo.jobs=stage", v0_by_job=True)
    return run_dir, train_loop(str(run_dir), STAGE)


@pytest.fixture(scope="module")
def driven(root: Path, stage_run: tuple[Path, dict]) -> Path:
    """The runs other than `stage`, trained by grpo_jobs_driver.py in one launch."""
    from grpo_jobs_driver import copy_version

    _make_run(root, "step", "grpo.jobs=step")
    killed = _make_run(root, "killed", "grpo.jobs=stage")
    copy_version(stage_run[0], killed, 1)  # published before the kill, never checkpointed
    _make_run(root, "stage_lag1", "grpo.jobs=stage", "grpo.checkpoint_every=1", lag=1)
    _make_run(root, "killed_lag1", "grpo.jobs=step", lag=1)
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node=2", str(Path(__file__).with_name("grpo_jobs_driver.py"))]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([*cmd, str(root)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return root


def test_stage_job_publishes_every_step(stage_run: tuple[Path, dict]) -> None:
    from transformers import AutoModelForCausalLM

    from r1hpc.megatron.checkpoint import read_meta
    from r1hpc.stages.common import read_metrics

    run_dir, out = stage_run
    assert out == {"stage": STAGE, "steps_trained": STEPS}
    versions = {v.version: v for v in list_versions(RunDir(run_dir), STAGE)}
    assert sorted(versions) == [0, 1, 2]
    assert versions[0].meta["init_from"] == "base/v0000"
    params = []
    for n in (0, 1, 2):
        m = AutoModelForCausalLM.from_pretrained(str(versions[n].path), dtype=torch.float32)
        params.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert (versions[1].path / "tokenizer_config.json").is_file()
    assert not torch.equal(params[0], params[1]) and not torch.equal(params[1], params[2])
    # One job, one checkpoint at its end: the model and optimizer stayed in memory between steps.
    assert _state_steps(run_dir) == [STEPS]
    meta = read_meta(RunDir(run_dir).train_state_dir(STAGE) / f"megatron_step_{STEPS:04d}")
    assert meta["step"] == STEPS and meta["optimizer"] is True
    rows = read_metrics(run_dir, STAGE)
    assert [r["step"] for r in rows] == list(range(STEPS))
    for r in rows:
        for key in ("loss", "pg_loss", "kl", "grad_norm", "reward_mean", "response_length_mean", "time_train_s"):
            assert key in r and r[key] == r[key], (key, r)
        assert r["backend"] == "megatron" and r["layout"]["tp"] == 2 and r["updates"] == 2.0
        assert r["grad_norm"] > 0 and r["policy_lag"] == 0


def test_step_jobs_equal_stage_job(stage_run: tuple[Path, dict], driven: Path) -> None:
    from r1hpc.megatron.checkpoint import read_meta
    from r1hpc.stages.common import read_metrics
    from r1hpc.stages.grpo_megatron import train_task

    step_dir = driven / "step"
    assert sorted(_hashes(step_dir)) == list(range(STEPS + 1))
    assert _hashes(step_dir) == _hashes(stage_run[0])
    rows = read_metrics(step_dir, STAGE)
    assert [r["step"] for r in rows] == list(range(STEPS))
    # Each job checkpointed its end (with the optimizer); the pruning keeps the newest two.
    assert _state_steps(step_dir) == list(range(max(1, STEPS - 1), STEPS + 1))
    assert read_meta(RunDir(step_dir).train_state_dir(STAGE) / "megatron_step_0001")["optimizer"] is True
    again = train_task(str(step_dir), STAGE, STEPS - 1)  # published: the stored record, no ranks started
    assert again["step"] == STEPS - 1 and again["loss"] == rows[-1]["loss"]
    assert len(read_metrics(step_dir, STAGE)) == STEPS


def test_rerun_after_kill_replays_to_same_versions(stage_run: tuple[Path, dict], driven: Path) -> None:
    from r1hpc.stages.common import read_metrics

    assert _hashes(driven / "killed") == _hashes(stage_run[0])
    # The killed job died before logging step 0 (its row is not in the copy): the rerun logs it once,
    # from v0001's meta, and does not log it again when it replays the step; then it logs step 1.
    rows = read_metrics(driven / "killed", STAGE)
    assert [r["step"] for r in rows] == list(range(STEPS))
    assert rows[0]["loss"] == read_metrics(stage_run[0], STAGE)[0]["loss"]


def test_lagged_policy_equal_after_restart(stage_run: tuple[Path, dict], driven: Path) -> None:
    from r1hpc.stages.common import read_metrics

    lagged = driven / "stage_lag1"
    assert [r["policy_lag"] for r in read_metrics(lagged, STAGE)] == [0] + [1] * (STEPS - 1)
    assert _state_steps(lagged) == [STEPS - 1, STEPS]  # checkpoint_every=1, the newest two kept
    # Step 1's old log-probs are v0000's, not v0001's: a different update than on-policy.
    on_policy = _hashes(stage_run[0])
    assert _hashes(lagged)[1] == on_policy[1] and _hashes(lagged)[2] != on_policy[2]
    assert _hashes(driven / "killed_lag1") == _hashes(lagged)
