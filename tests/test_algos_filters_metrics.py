"""DAPO filters and the step metrics: hand-worked values and edge cases."""

import math

import pytest
import torch

from r1hpc.algos import approx_kl, dynamic_sampling_mask, response_length_metrics, reward_metrics


def test_dynamic_sampling_by_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.0, 2.0])
    groups = torch.tensor([3, 3, 8, 8, 1, 1, 1, 42])  # 3 mixed, 8 all-equal, 1 mixed, 42 alone
    keep = dynamic_sampling_mask(rewards, groups)
    assert keep.tolist() == [True, True, False, False, True, True, True, False]
    # interleaved groups
    keep = dynamic_sampling_mask(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0, 1, 0, 1]))
    assert keep.tolist() == [True, False, True, False]
    assert not dynamic_sampling_mask(torch.ones(5), torch.zeros(5, dtype=torch.long)).any()


def test_reward_metrics_by_hand():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([5, 5, 2, 2, 9, 9, 0])  # 5 all correct, 2 mixed, 9 all wrong, 0 alone and correct
    m = reward_metrics(rewards, groups)
    assert m["reward_mean"].item() == pytest.approx(4 / 7)
    assert m["reward_std"].item() == pytest.approx(torch.tensor([1, 1, 0, 1, 0, 0, 1.0]).std().item())
    assert m["frac_groups_all_correct"].item() == pytest.approx(2 / 4)
    assert m["frac_groups_all_wrong"].item() == pytest.approx(1 / 4)
    assert m["group_ids"].tolist() == [0, 2, 5, 9]
    assert m["group_reward_mean"].tolist() == [1.0, 0.5, 1.0, 0.0]
    torch.testing.assert_close(m["group_reward_std"], torch.tensor([0.0, math.sqrt(0.5), 0.0, 0.0]))
    one = reward_metrics(torch.tensor([0.3]), torch.tensor([1]), correct_threshold=0.5)
    assert one["reward_std"].item() == 0 and one["frac_groups_all_wrong"].item() == 1


def test_response_length_metrics():
    m = response_length_metrics(torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
    assert (m["response_length_mean"].item(), m["response_length_max"].item(), m["response_length_min"].item()) == (
        pytest.approx(4 / 3),
        3.0,
        0.0,
    )
    with pytest.raises(ValueError, match="mask"):
        response_length_metrics(torch.ones(3))


def test_approx_kl_by_hand():
    new = torch.log(torch.tensor([[0.5, 0.5, 0.9]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.1]]))
    # token 0: old/new = 0.5 -> 0.5 - ln 0.5 - 1; token 1: 0; token 2 masked out
    got = approx_kl(new, old, torch.tensor([[1, 1, 0]]))
    assert got.item() == pytest.approx((0.5 + math.log(2) - 1) / 2, rel=1e-6)
    assert approx_kl(new, old, torch.zeros(1, 3)).item() == 0
    with pytest.raises(ValueError, match="shape mismatch"):
        approx_kl(new, old, torch.ones(1, 4))
