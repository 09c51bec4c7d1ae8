"""Group-relative advantages: hand-worked values, edge cases, and verl's formula as reference."""

from collections import defaultdict

import pytest
import torch

from r1hpc.algos import group_advantages, group_stats, token_advantages


def verl_grpo_advantage(scores, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True):
    """verl's compute_grpo_outcome_advantage (outcome reward, one score per row), transcribed."""
    scores = scores.clone()
    id2score = defaultdict(list)
    id2mean, id2std = {}, {}
    for i in range(scores.shape[0]):
        id2score[index[i]].append(scores[i])
    for idx, vals in id2score.items():
        if len(vals) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            t = torch.stack(vals)
            id2mean[idx], id2std[idx] = torch.mean(t), torch.std(t)
    for i in range(scores.shape[0]):
        if norm_adv_by_std_in_grpo:
            scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
        else:
            scores[i] = scores[i] - id2mean[index[i]]
    return scores


def test_one_group_by_hand():
    # mean 0.5, unbiased std sqrt(1/3) = 0.57735 -> +-0.5 / 0.57735 = +-0.866025
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([5, 5, 5, 5]))
    torch.testing.assert_close(adv, torch.tensor([0.866025, -0.866025, 0.866025, -0.866025]), atol=1e-5, rtol=0)


def test_non_contiguous_groups_by_hand():
    rewards = torch.tensor([1.0, 2.0, 0.0, 4.0, 3.0])
    groups = torch.tensor([7, 2, 7, 2, 7])
    # group 7: [1, 0, 3], mean 4/3, var (1/9 + 16/9 + 25/9) / 2 = 7/3, std 1.527525
    # group 2: [2, 4], mean 3, std sqrt(2)
    expected = torch.tensor([-0.218218, -0.707107, -0.872872, 0.707107, 1.091089])
    torch.testing.assert_close(group_advantages(rewards, groups), expected, atol=1e-5, rtol=0)
    dr = group_advantages(rewards, groups, scale_by_std=False)
    torch.testing.assert_close(dr, torch.tensor([-1 / 3, -1.0, -4 / 3, 1.0, 5 / 3]), atol=1e-6, rtol=0)


def test_edge_cases():
    # a lone sample: mean 0, std 1 (verl) -> the reward itself (over 1 + eps)
    torch.testing.assert_close(
        group_advantages(torch.tensor([0.7]), torch.tensor([0])), torch.tensor([0.7 / (1 + 1e-6)])
    )
    # all equal: advantage 0, not NaN (std 0 + eps)
    assert torch.equal(group_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long)), torch.zeros(4))
    assert torch.equal(
        group_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long), scale_by_std=False), torch.zeros(4)
    )


def test_matches_verl_on_random_batches():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        b = int(torch.randint(1, 40, (1,), generator=gen))
        groups = torch.randint(0, 6, (b,), generator=gen) * 3 + 11  # sparse ids, shuffled, singletons likely
        rewards = torch.randint(0, 3, (b,), generator=gen).float() + 0.1 * torch.randn(b, generator=gen) * (trial % 2)
        for norm in (True, False):
            ours = group_advantages(rewards, groups, scale_by_std=norm)
            ref = verl_grpo_advantage(rewards, groups.tolist(), norm_adv_by_std_in_grpo=norm)
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_group_stats_and_dtype():
    st = group_stats(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([4, 9, 4]))
    assert st.ids.tolist() == [4, 9] and st.count.tolist() == [2, 1] and st.index.tolist() == [0, 1, 0]
    assert st.mean.tolist() == [2.5, 1.0] and st.min.tolist() == [2.0, 1.0] and st.max.tolist() == [3.0, 1.0]
    assert st.std[1] == 0
    assert (
        group_advantages(torch.tensor([1.0, 0.0], dtype=torch.bfloat16), torch.tensor([0, 0])).dtype == torch.bfloat16
    )


def test_token_broadcast():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    out = token_advantages(torch.tensor([2.0, -1.0, 0.5]), mask)
    assert torch.equal(out, torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="rewards.*NaN"):
        group_advantages(torch.tensor([1.0, float("nan")]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="rewards.*inf"):
        group_advantages(torch.tensor([1.0, float("inf")]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"rewards \(3,\), group_ids \(2,\)"):
        group_advantages(torch.zeros(3), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="group_ids must be an integer"):
        group_advantages(torch.zeros(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        group_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"advantages \(2,\), mask \(3, 4\)"):
        token_advantages(torch.zeros(2), torch.ones(3, 4))
    with pytest.raises(ValueError, match="mask must hold only 0/1"):
        token_advantages(torch.zeros(2), torch.full((2, 3), 0.5))
