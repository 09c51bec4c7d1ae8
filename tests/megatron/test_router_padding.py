"""Pad tokens stay out of the MoE routers' expert-bias counts (TP1, one torchrun process, CPU).

The batch is built as the Megatron train job builds it (``stages.grpo_megatron.rollout_batch``): 8 rows of
different lengths, padded to the longest row (S = 13), and two copies with 3 and 8 more pad
columns. This file is also the torchrun script: run as ``__main__`` it builds the tiny MoE,
measures, and prints one ``PADDING {...}`` JSON line that the tests below check.

What it measures, per MoE layer:
- ``local_tokens_per_expert`` after one grad-enabled forward of the padded batch (with
  ``padding_mask = ~token_mask``) equals the sum of the counts of each row run alone, unpadded;
- the padding mask does not change the logits (pad tokens are still routed);
- two SFT steps (``grpo_step.sft_train_step``, through megatron's schedule and
  ``finalize_model_grads``, which applies the expert-bias update) give the same expert biases on the
  batch and on its wider copies.

Measured: counts equal exactly, logits identical, expert biases identical (3 MoE layers). With the
padding mask left out of ``grpo_step``'s forward (the pads counted, as before) the wider batches'
biases after the two SFT steps differ from the batch's in one layer (0 instead of +-2e-3 per expert),
and the batch's own biases differ from the masked run's in two of the three layers; without
``model.PaddingMaskTopKRouter`` the forward with a mask raises megatron-core 0.16.1's shape error
(Megatron-LM#6111: [104, 4] routing map & [104] mask). Wall time ~10 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
LENGTHS = [(5, 4), (5, 9), (7, 2), (7, 6), (6, 3), (6, 8), (4, 5), (4, 1)]  # (prompt, response) tokens per row


def _records() -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(11)
    return [
        {
            "prompt_ids": torch.randint(3, 64, (p,), generator=g).tolist(),
            "response_ids": torch.randint(3, 64, (r,), generator=g).tolist(),
            "reward": float(i % 2),
            "group": i // 4,
        }
        for i, (p, r) in enumerate(LENGTHS)
    ]


def _worker() -> None:
    import torch

    from r1hpc.megatron.grpo_step import sft_train_step
    from r1hpc.megatron.model import MegatronModelConfig, PaddingMaskTopKRouter, ParallelLayout, build_model
    from r1hpc.megatron.parallel import OptimConfig, build_optimizer, destroy_parallel, init_parallel, wrap_ddp
    from r1hpc.megatron.rollout_batch import shard_for_rank
    from r1hpc.stages.grpo_megatron import rollout_batch

    layout = ParallelLayout()
    init_parallel(layout, seed=7)
    cfg = MegatronModelConfig()
    model = build_model(cfg, layout)
    init_state = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    routers = [m for m in model.modules() if isinstance(m, PaddingMaskTopKRouter)]
    batch = rollout_batch(_records(), pad_id=0, pad_multiple=1)  # (8, 13): rows padded to the longest
    wide = rollout_batch(_records(), pad_id=0, pad_multiple=8)  # (8, 16): 3 more pad columns
    wider = rollout_batch(_records(), pad_id=0, pad_multiple=21)  # (8, 21): 8 more pad columns

    def counts(input_ids: torch.Tensor, padding_mask: torch.Tensor | None) -> tuple[list[list[float]], torch.Tensor]:
        for r in routers:
            r.local_tokens_per_expert.zero_()
        b, s = input_ids.shape
        logits = model(input_ids, torch.arange(s).expand(b, s), None, padding_mask=padding_mask)
        return [r.local_tokens_per_expert.tolist() for r in routers], logits.detach()

    model.train()
    masked, logits_masked = counts(batch.input_ids, ~batch.token_mask)
    unmasked, logits_unmasked = counts(batch.input_ids, None)
    alone = [[0.0] * cfg.num_experts for _ in routers]
    for i in range(batch.size):
        n = int(batch.token_mask[i].sum())
        row, _ = counts(batch.input_ids[i : i + 1, :n], None)
        alone = [[a + c for a, c in zip(acc, layer)] for acc, layer in zip(alone, row)]

    def sft_bias(rb) -> list[list[float]]:  # noqa: ANN001
        m = build_model(cfg, layout)
        m.load_state_dict(init_state, strict=False)
        ddp = wrap_ddp(m, OptimConfig(lr=1e-2))
        opt = build_optimizer(ddp, OptimConfig(lr=1e-2))
        for _ in range(2):
            sft_train_step(ddp, opt, shard_for_rank(rb, 0, 1, 2))
        return [r.expert_bias.tolist() for r in m.modules() if isinstance(r, PaddingMaskTopKRouter)]

    rec = {
        "n_real": int(batch.token_mask.sum()),
        "n_positions": batch.input_ids.numel(),
        "topk": cfg.router_topk,
        "masked": masked,
        "unmasked": unmasked,
        "alone": alone,
        "logits_equal": bool(torch.equal(logits_masked, logits_unmasked)),
        "bias": sft_bias(batch),
        "bias_wide": sft_bias(wide),
        "bias_wider": sft_bias(wider),
    }
    print("PADDING " + json.dumps(rec), flush=True)
    destroy_parallel()


@pytest.fixture(scope="module")
def measured() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node=1", __file__]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PADDING ")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0][len("PADDING ") :])


def test_pad_tokens_not_counted(measured: dict) -> None:
    """Each layer counts top-k experts for every real token and none for the pads, as if each row ran alone."""
    assert measured["n_real"] < measured["n_positions"]  # the batch really is padded
    for layer, (masked, alone) in enumerate(zip(measured["masked"], measured["alone"], strict=True)):
        assert masked == alone, f"MoE layer {layer}: padded batch {masked} vs rows alone {alone}"
        assert sum(masked) == measured["topk"] * measured["n_real"]
    # Without the mask the pads are counted (what the train steps did before).
    assert all(sum(c) == measured["topk"] * measured["n_positions"] for c in measured["unmasked"])


def test_padding_mask_keeps_outputs(measured: dict) -> None:
    """Pad tokens are still routed: the mask changes only the statistics, not the logits."""
    assert measured["logits_equal"]


def test_expert_bias_update_ignores_padding(measured: dict) -> None:
    """Two SFT steps through megatron's schedule: the same expert biases however wide the padding."""
    assert any(v != 0.0 for layer in measured["bias"] for v in layer)  # the bias did move
    assert measured["bias_wide"] == measured["bias"]
    assert measured["bias_wider"] == measured["bias"]


if __name__ == "__main__":
    _worker()
