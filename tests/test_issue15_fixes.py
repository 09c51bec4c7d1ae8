"""Small defects fixed on the way through issue 15, one test each."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from r1hpc.accounting.cli import main as gpu_hours
from r1hpc.algos import GRPOSettings
from r1hpc.rollout.base import derive_seed
from r1hpc.train.grpo import grpo_update

PAD = 0


def _records_one_group_informative():
    """Group 0 has mixed rewards (kept by dynamic sampling), group 1 is all-zero (dropped): 4 rows kept."""
    out = []
    for group, prompt in enumerate(([5, 6, 2], [9, 3])):
        for resp in ([7, 8, 1], [11, 12, 13, 1], [7, 1], [14, 1]):
            out.append(
                {
                    "prompt_ids": prompt,
                    "response_ids": resp,
                    "group": group,
                    "reward": float(group == 0 and resp[0] == 7),
                }
            )
    return out


def _update(mini_batches):
    from r1hpc.model.factory import ModelSize, build_model

    model = build_model(
        ModelSize(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, max_positions=64),
        vocab_size=40,
        eos_id=1,
        pad_id=PAD,
        seed=0,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = GRPOSettings(micro_batch_size=2, mini_batches=mini_batches, kl_coef=0.0, dynamic_sampling=True)
    return grpo_update(model, None, opt, _records_one_group_informative(), s, PAD, torch.Generator().manual_seed(3))


def test_grpo_update_with_fewer_kept_rows_than_mini_batches_averages_over_real_updates():
    # 4 kept rows split 8 ways: 4 one-row updates and 4 empty splits, which are no update. The same
    # 4 updates as mini_batches=4 (same shuffle), so every per-update mean must match it.
    few, exact = _update(8), _update(4)
    assert few["kept_fraction"] == 0.5
    assert few["updates"] == exact["updates"] == 4.0
    for key in ("grad_norm", "loss", "entropy"):
        assert few[key] == pytest.approx(exact[key], rel=1e-6), key


def test_compute_logprobs_restores_the_models_mode(monkeypatch):
    from r1hpc.megatron import schedule

    seen = []
    monkeypatch.setattr(schedule, "run_schedule", lambda model, *a, **k: seen.append(model.training) or [])
    ref = torch.nn.Linear(2, 2).eval()  # a frozen reference
    policy = torch.nn.Linear(2, 2).train()
    assert schedule.compute_logprobs(ref, []) == [] and not ref.training
    schedule.compute_logprobs(policy, [])
    assert policy.training and seen == [False, False]  # both ran in eval mode

    def boom(*a, **k):
        raise RuntimeError("schedule failed")

    monkeypatch.setattr(schedule, "run_schedule", boom)
    with pytest.raises(RuntimeError, match="schedule failed"):
        schedule.compute_logprobs(policy, [])
    assert policy.training


def test_gpu_hours_without_slurm_conf_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nowhere" / "slurm.conf"))
    assert gpu_hours(["--since", "now-1days"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"gpu-hours: error: SLURM_CONF={tmp_path}/nowhere/slurm.conf does not exist; "
        "run on a Slurm login node or use --sacct-file"
    ]


def test_gpu_hours_without_a_reachable_slurm_says_what_is_missing(monkeypatch, tmp_path, capsys):
    """SLURM_CONF unset and no slurm.conf: sacct's configless DNS lookup fails (its own lines, faked here)."""
    fake = tmp_path / "sacct"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'sacct: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host' >&2\n"
        "echo 'sacct: error: fetch_config: DNS SRV lookup failed' >&2\n"
        "echo 'sacct: fatal: Could not establish a configuration source' >&2\n"
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpu_hours(["--since", "now-1days"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Slurm configuration" in err[0] and "SLURM_CONF is unset" in err[0]
    assert "fetch_config" not in err[0] and "--sacct-file" in err[0]


def test_stage_seed_is_the_rollout_layers_derive_seed():
    from r1hpc.stages.common import stage_seed

    assert stage_seed is derive_seed
    assert derive_seed(7, "r1_zero", "rollout", 3, 1) == derive_seed(7, "r1_zero", "rollout", 3, 1)
    assert derive_seed(3, 4) != derive_seed(4, 3) and 0 <= derive_seed(3, 4) < 2**31 - 1
