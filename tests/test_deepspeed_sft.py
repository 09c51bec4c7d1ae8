"""DeepSpeed ZeRO-3 SFT on 2 CPU processes (torchrun, gloo): it learns, its HF export reproduces
the gathered DeepSpeed model's logits, it follows the plain torch train_sft, and a run killed
mid-way (SIGKILL of rank 0) resumes to exactly the undisturbed run's weights.

The 2-process runs are this file run as a script under torchrun (the `__main__` part below).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1hpc.model.factory import ModelSize, build_model, load_model
from r1hpc.train.sft import SFTSettings, train_sft

PAD = 0
# Prompt [a, b] -> target [(a + b) % 10 + 10, 1] (as in test_train_sft): learnable, only targets trained.
PROMPTS = [[2 + a, 2 + b] for a in range(6) for b in range(6)]
TARGETS = [[10 + (a + b) % 10, 1] for a in range(6) for b in range(6)]
# 9 steps of 8 rows; on 2 ranks each trains 4 rows as micro-batches of 3 and 1 (an uneven last one).
SETTINGS = SFTSettings(epochs=2, batch_size=8, micro_batch_size=3, lr=1e-2, warmup_steps=2, save_every=3)
STEPS = 9
KILL_AT = 5  # rank 0 SIGKILLs itself after step 5: the newest complete checkpoint is step 3
# Partition every parameter, however small (DeepSpeed keeps params under 1e5 elements whole by default).
ZERO = {"stage3_param_persistence_threshold": 0}
# Plain train_sft vs 2-rank ZeRO-3 after 9 steps: same math, different float summation order
# (gradients summed over ranks, Adam on flat partitions). Measured: |dloss| <= 2.4e-7 per step,
# max |dweight| 8e-6 after 9 steps; allowed 1e-4 for both. (ZeRO-1 and -2 gave the same losses.)
LOSS_TOL = 1e-4
REPO = Path(__file__).resolve().parents[1]


def tiny_model():
    return build_model(
        ModelSize(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, max_positions=64),
        vocab_size=30,
        eos_id=1,
        pad_id=PAD,
        seed=0,
    )


def _torchrun(tmp: Path, name: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    out = tmp / name
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__).resolve()),
        "--state-dir",
        str(tmp / f"{name}_state"),
        "--export-dir",
        str(tmp / f"{name}_hf"),
        "--out",
        str(out),
        "--kill-at",
        str(kill_at),
    ]
    # TORCH_EXTENSIONS_DIR: where DeepSpeed would JIT-compile ops; the test checks it stays empty.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_BUILD_OPS": "0",
        "PYTHONPATH": str(REPO),
        "TORCH_EXTENSIONS_DIR": str(tmp / "torch_extensions"),
    }
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, cwd=tmp)


def _ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, f"torchrun exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    _ok(_torchrun(tmp, "a"))
    return tmp, json.loads((tmp / "a").read_text())


@pytest.mark.slow
def test_zero3_sft_learns_and_export_matches_gathered_model(undisturbed):
    tmp, out = undisturbed
    losses = [m["loss"] for m in out["log"]]
    assert [m["step"] for m in out["log"]] == list(range(1, STEPS + 1))
    assert losses[-1] < 0.7 * losses[0], losses
    assert out["zero_stage"] == 3
    # ZeRO-3 really sharded: each rank holds about half of every parameter.
    assert 0.45 < out["partition_fraction"] < 0.55, out["partition_fraction"]
    # The exported HF directory (loaded by transformers in rank 0) gives the gathered model's logits.
    assert out["export_vs_gathered_max_abs"] == 0.0, out["export_vs_gathered_max_abs"]
    assert (tmp / "a_state" / "latest").read_text().strip() == "step_000006"
    assert not (tmp / "torch_extensions").exists(), "DeepSpeed JIT-compiled an op (slow, needs a compiler)"


@pytest.mark.slow
def test_zero3_sft_follows_plain_torch_sft(undisturbed, tmp_path):
    tmp, out = undisturbed
    plain_log = []
    plain = tiny_model()
    train_sft(plain, PROMPTS, TARGETS, SETTINGS, PAD, seed=1, state_dir=tmp_path, log=plain_log.append, progress=False)
    ds_losses = [m["loss"] for m in out["log"]]
    plain_losses = [m["loss"] for m in plain_log]
    diffs = [abs(a - b) for a, b in zip(ds_losses, plain_losses)]
    print(f"per-step |loss(deepspeed) - loss(train_sft)|: {[f'{d:.1e}' for d in diffs]}")
    assert len(ds_losses) == len(plain_losses) == STEPS
    assert max(diffs) < LOSS_TOL, (ds_losses, plain_losses)
    assert [m["tokens"] for m in out["log"]] == [m["tokens"] for m in plain_log]  # same rows, same order
    norm_diffs = [abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(out["log"], plain_log)]
    print(f"max |grad_norm(deepspeed) - grad_norm(train_sft)|: {max(norm_diffs):.1e}")
    assert max(norm_diffs) < LOSS_TOL
    exported = load_model(tmp / "a_hf").state_dict()
    weight_diff = max(float((exported[k] - v).abs().max()) for k, v in plain.state_dict().items())
    print(f"max |weight(deepspeed) - weight(train_sft)| after {STEPS} steps: {weight_diff:.1e}")
    assert weight_diff < LOSS_TOL


@pytest.mark.slow
def test_killed_zero3_run_resumes_to_identical_weights(undisturbed):
    tmp, _ = undisturbed
    killed = _torchrun(tmp, "b", kill_at=KILL_AT)
    assert killed.returncode != 0, "rank 0 was meant to die"
    assert not (tmp / "b").exists() and not (tmp / "b_hf").exists()
    _ok(_torchrun(tmp, "b"))
    resumed = json.loads((tmp / "b").read_text())
    assert [m["step"] for m in resumed["log"]] == list(range(4, STEPS + 1))  # from the step-3 checkpoint
    a, b = load_model(tmp / "a_hf").state_dict(), load_model(tmp / "b_hf").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_batch_size_must_split_over_ranks():
    from r1hpc.train.deepspeed_sft import deepspeed_config

    with pytest.raises(ValueError, match="divisible by the data-parallel world size 3"):
        deepspeed_config(SETTINGS, world_size=3)
    with pytest.raises(ValueError, match="zero_stage must be 1, 2 or 3, got 0"):
        deepspeed_config(SETTINGS, world_size=2, zero_stage=0)
    cfg = deepspeed_config(SETTINGS, world_size=2)
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == (3, 2)


def test_half_written_checkpoints_are_not_resumed_from(tmp_path):
    from r1hpc.train.deepspeed_sft import COMPLETE, complete_checkpoints

    for step, complete in ((3, True), (6, True), (9, False)):  # step 9: a job killed while saving
        (tmp_path / f"step_{step:06d}").mkdir()
        (tmp_path / f"step_{step:06d}" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x")
        if complete:
            (tmp_path / f"step_{step:06d}" / COMPLETE).write_text("{}")
    (tmp_path / "step_junk").mkdir()
    assert complete_checkpoints(tmp_path) == [3, 6]
    assert complete_checkpoints(tmp_path / "missing") == []


def _worker(args: argparse.Namespace) -> None:
    """One rank of a 2-process torchrun job."""
    import deepspeed
    import torch.distributed as dist

    from r1hpc.distributed import init_from_env, shutdown
    from r1hpc.train.deepspeed_sft import train_deepspeed_sft

    info = init_from_env(timeout_s=120)
    log = []

    def record(m: dict) -> None:
        log.append(m)
        if m["step"] == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup, no exception handling

    model = tiny_model()
    train_deepspeed_sft(
        model,
        PROMPTS,
        TARGETS,
        SETTINGS,
        PAD,
        seed=1,
        state_dir=Path(args.state_dir),
        export_dir=Path(args.export_dir),
        log=record,
        progress=False,
        zero_overrides=ZERO,
    )
    weight = model.model.embed_tokens.weight
    fraction = weight.ds_tensor.numel() / weight.ds_numel
    ids = torch.tensor(PROMPTS[:6])
    with torch.no_grad(), deepspeed.zero.GatheredParameters(list(model.parameters())):
        gathered = model(input_ids=ids).logits
    if info.rank == 0:
        with torch.no_grad():
            exported = load_model(args.export_dir)(input_ids=ids).logits
        out = {
            "log": log,
            "partition_fraction": fraction,
            "zero_stage": 3,
            "export_vs_gathered_max_abs": float((exported - gathered).abs().max()),
        }
        Path(args.out).write_text(json.dumps(out))
    dist.barrier()
    shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for flag in ("--state-dir", "--export-dir", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--kill-at", type=int, default=0)
    _worker(parser.parse_args())
