"""SFT: it learns, and a job killed mid-way resumes to exactly the undisturbed run's weights."""

import pytest
import torch

from r1hpc.model.factory import ModelSize, build_model
from r1hpc.train.sft import SFTSettings, train_sft

PAD = 0


def tiny_model():
    return build_model(
        ModelSize(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, max_positions=64),
        vocab_size=30,
        eos_id=1,
        pad_id=PAD,
        seed=0,
    )


# Prompt [a, b] -> target [(a + b) % 10 + 10, 1]: learnable, and only targets are trained.
PROMPTS = [[2 + a, 2 + b] for a in range(6) for b in range(6)]
TARGETS = [[10 + (a + b) % 10, 1] for a in range(6) for b in range(6)]
SETTINGS = SFTSettings(epochs=4, batch_size=8, micro_batch_size=3, lr=1e-2, warmup_steps=2, save_every=3)


class Killed(Exception):
    pass


def test_sft_lowers_loss(tmp_path):
    logged = []
    train_sft(
        tiny_model(), PROMPTS, TARGETS, SETTINGS, PAD, seed=1, state_dir=tmp_path, log=logged.append, progress=False
    )
    assert len(logged) == 18
    assert logged[-1]["loss"] < 0.7 * logged[0]["loss"]


def test_killed_sft_resumes_to_identical_weights(tmp_path):
    undisturbed = tiny_model()
    train_sft(undisturbed, PROMPTS, TARGETS, SETTINGS, PAD, seed=1, state_dir=tmp_path / "a", progress=False)

    def die_at_step_8(m):
        if m["step"] == 8:
            raise Killed

    model = tiny_model()
    with pytest.raises(Killed):
        train_sft(
            model, PROMPTS, TARGETS, SETTINGS, PAD, seed=1, state_dir=tmp_path / "b", log=die_at_step_8, progress=False
        )
    steps = []
    resumed = tiny_model()  # a fresh process: only the checkpoint survives
    train_sft(
        resumed,
        PROMPTS,
        TARGETS,
        SETTINGS,
        PAD,
        seed=1,
        state_dir=tmp_path / "b",
        log=lambda m: steps.append(m["step"]),
        progress=False,
    )
    assert steps[0] == 7  # the checkpoint after step 6, then step 7 onwards
    for a, b in zip(undisturbed.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_mismatched_inputs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="equally many"):
        train_sft(tiny_model(), PROMPTS, TARGETS[:-1], SETTINGS, PAD, seed=1, state_dir=tmp_path)
