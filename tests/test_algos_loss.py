"""Clipped surrogate, KL estimators, loss aggregation and grpo_loss: hand values, gradients, verl."""

import math

import pytest
import torch

from r1hpc.algos import agg_loss, clipped_surrogate, grpo_loss, kl_per_token, masked_mean

# Ratios and advantages worked out by hand (clip_low 0.2, clip_high 0.28, dual clip c = 3):
#   A=+1 r=1.5 -> max(-1.5, -1.28) = -1.28 (clip high)   A=+1 r=0.5 -> max(-0.5, -0.8) = -0.5
#   A=-1 r=0.5 -> max(0.5, 0.8)    = 0.8   (clip low)    A=-1 r=4.0 -> max(4, 1.28) = 4, dual: min(4, 3) = 3
#   A=-2 r=1.0 -> 2.0              A=+1 r=1.1 -> -1.1    row 1 positions 2, 3 masked out
RATIO = torch.tensor([[1.5, 0.5, 0.5, 4.0], [1.0, 1.1, 1.0, 1.0]], dtype=torch.float64)
ADV = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-2.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
LOSS_NO_DUAL = torch.tensor([[-1.28, -0.5, 0.8, 4.0], [2.0, -1.1, 0.0, 0.0]], dtype=torch.float64)


def _logps():
    logp_old = torch.log(torch.tensor([[0.2, 0.4, 0.3, 0.1], [0.5, 0.5, 0.9, 0.9]], dtype=torch.float64))
    logp_new = (logp_old + RATIO.log()).requires_grad_()
    return logp_new, logp_old


def test_clipped_surrogate_by_hand():
    logp_new, logp_old = _logps()
    loss, met = clipped_surrogate(logp_new, logp_old, ADV, MASK, clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(loss, LOSS_NO_DUAL)
    loss.sum().backward()
    # d(-A r)/d logp = -A r where the unclipped term is active, 0 where the clip is
    torch.testing.assert_close(logp_new.grad, torch.tensor([[0, -0.5, 0, 4.0], [2.0, -1.1, 0, 0]], dtype=torch.float64))
    assert met["clip_frac_high"].item() == pytest.approx(1 / 6)
    assert met["clip_frac_low"].item() == pytest.approx(1 / 6)
    assert met["dual_clip_frac"].item() == 0
    assert met["ratio_max"].item() == pytest.approx(4.0)

    logp_new.grad = None
    loss, met = clipped_surrogate(logp_new, logp_old, ADV, MASK, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    expected = LOSS_NO_DUAL.clone()
    expected[0, 3] = 3.0
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert logp_new.grad[0, 3] == 0  # capped by the dual clip: no gradient
    assert met["dual_clip_frac"].item() == pytest.approx(1 / 6)


def test_aggregation_by_hand():
    # row sums 3.02 and 0.9 over 4 and 2 tokens
    assert agg_loss(LOSS_NO_DUAL, MASK, "token-mean").item() == pytest.approx(3.92 / 6)
    assert agg_loss(LOSS_NO_DUAL, MASK, "seq-mean-token-mean").item() == pytest.approx((3.02 / 4 + 0.9 / 2) / 2)
    assert agg_loss(LOSS_NO_DUAL, MASK, "seq-mean-token-sum").item() == pytest.approx((3.02 + 0.9) / 2)
    assert agg_loss(LOSS_NO_DUAL, MASK, "seq-mean-token-sum-norm", max_length=8).item() == pytest.approx(3.92 / 16)
    # an extra fully masked row changes nothing and gives no NaN, whatever it holds
    padded = torch.cat([LOSS_NO_DUAL, torch.full((1, 4), 7.0, dtype=torch.float64)])
    pmask = torch.cat([MASK, torch.zeros(1, 4, dtype=torch.bool)])
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        assert agg_loss(padded, pmask, mode, max_length=8).item() == pytest.approx(
            agg_loss(LOSS_NO_DUAL, MASK, mode, max_length=8).item()
        )


def test_fully_masked_batch_gives_zero_loss_and_zero_grad():
    logp_new = torch.randn(3, 5, requires_grad=True)
    mask = torch.zeros(3, 5)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        loss, met = grpo_loss(
            logp_new,
            logp_new.detach() - 0.1,
            logp_new.detach() + 0.2,
            torch.ones(3),
            mask,
            agg_mode=mode,
            max_length=5,
            kl_coef=0.1,
        )
        loss.backward()
        assert loss.item() == 0 and torch.equal(logp_new.grad, torch.zeros(3, 5))
        assert all(torch.isfinite(v).all() for v in met.values())
        logp_new.grad = None


def test_agg_matches_verl_without_empty_rows():
    gen = torch.Generator().manual_seed(1)
    loss = torch.randn(5, 9, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 9, generator=gen) > 0.4
    mask[:, 0] = True
    mf = mask.to(torch.float64)
    seq_sum = (loss * mf).sum(-1)
    assert agg_loss(loss, mask, "token-mean").item() == pytest.approx(((loss * mf).sum() / mf.sum()).item())
    assert agg_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx(seq_sum.mean().item())
    assert agg_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((seq_sum / mf.sum(-1)).mean().item())
    # verl divides the total by T without averaging over the B sequences; Dr. GRPO (and we) average
    verl_norm = seq_sum.sum() / mask.shape[-1]
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm", max_length=9).item() == pytest.approx(verl_norm.item() / 5)


def test_kl_estimators_by_hand_and_clamp():
    logp = torch.log(torch.tensor([[0.5, 1.0]]))
    ref = torch.log(torch.tensor([[0.25, 1.0]]))
    # log(ref/p) = log 0.5 = -0.693147
    assert kl_per_token(logp, ref, "k1")[0, 0].item() == pytest.approx(math.log(2))
    assert kl_per_token(logp, ref, "k2")[0, 0].item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_per_token(logp, ref, "k3")[0, 0].item() == pytest.approx(0.5 + math.log(2) - 1)
    for est in ("k1", "k2", "k3"):
        assert kl_per_token(logp, ref, est)[0, 1].item() == 0
    # clamp: log-ratio 12 -> k3 = e^12 - 13 -> 10; k1 = -12 -> -10; k2 = 72 -> 10
    big = torch.tensor([[12.0]])
    zero = torch.zeros(1, 1, requires_grad=True)
    assert kl_per_token(zero, big, "k3").item() == 10 and kl_per_token(zero, big, "k1").item() == -10
    assert kl_per_token(zero, big, "k2").item() == 10
    kl_per_token(zero, big, "k3").sum().backward()
    assert zero.grad.item() == 0  # clamped: no gradient


def test_kl_k3_properties_and_verl():
    gen = torch.Generator().manual_seed(2)
    logp = (-torch.rand(4, 7, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    ref = -torch.rand(4, 7, generator=gen, dtype=torch.float64) * 3
    k3 = kl_per_token(logp, ref, "k3")
    assert (k3 >= 0).all()
    kl = torch.clamp(ref - logp.detach(), -20, 20)  # verl kl_penalty("low_var_kl")
    torch.testing.assert_close(k3.detach(), torch.clamp(torch.exp(kl) - kl - 1, -10, 10))
    k3.sum().backward()
    torch.testing.assert_close(logp.grad, 1 - torch.exp(ref - logp.detach()))  # d k3 / d logp


def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, cl, ch, c):
    """verl compute_policy_loss_vanilla with token-mean, transcribed (masked_mean = sum*mask/sum mask)."""

    def mm(x, m):
        return (x * m).sum() / m.sum()

    neg_kl = torch.clamp(log_prob - old_log_prob, -20.0, 20.0)
    ratio = torch.exp(neg_kl)
    l1 = -advantages * ratio
    l2 = -advantages * torch.clamp(ratio, 1 - cl, 1 + ch)
    c1 = torch.maximum(l1, l2)
    clipfrac = mm(torch.gt(l2, l1).float(), response_mask)
    l3 = -advantages * c
    c2 = torch.min(l3, c1)
    clipfrac_lower = mm(torch.gt(c1, l3) * (advantages < 0).float(), response_mask)
    pg = torch.where(advantages < 0, c2, c1)
    return mm(pg, response_mask), clipfrac, mm(-neg_kl, response_mask), clipfrac_lower


def test_policy_loss_matches_verl():
    gen = torch.Generator().manual_seed(3)
    old = -torch.rand(6, 10, generator=gen, dtype=torch.float64) * 4
    new = (old + torch.randn(6, 10, generator=gen, dtype=torch.float64) * 0.6).requires_grad_()
    adv = torch.randn(6, generator=gen, dtype=torch.float64)[:, None].expand(6, 10)
    mask = (torch.rand(6, 10, generator=gen) > 0.3).to(torch.float64)
    loss, met = grpo_loss(new, old, None, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.0)
    ref, clipfrac, _, clipfrac_lower = verl_policy_loss(old, new, adv, mask, 0.2, 0.28, 3.0)
    torch.testing.assert_close(loss, ref)
    (g_ours,) = torch.autograd.grad(loss, new)
    (g_ref,) = torch.autograd.grad(ref, new)
    torch.testing.assert_close(g_ours, g_ref)
    assert (met["clip_frac_high"] + met["clip_frac_low"]).item() == pytest.approx(clipfrac.item())
    assert met["dual_clip_frac"].item() == pytest.approx(clipfrac_lower.item())


def test_grpo_loss_combines_pg_and_kl():
    logp_new, logp_old = _logps()
    ref = logp_old + 0.3
    loss, met = grpo_loss(logp_new, logp_old, ref, ADV, MASK, clip_low=0.2, clip_high=0.28, kl_coef=0.5)
    kl = masked_mean(kl_per_token(logp_new, ref, "k3"), MASK)
    torch.testing.assert_close(loss, 3.92 / 6 + 0.5 * kl)
    assert met["pg_loss"].item() == pytest.approx(3.92 / 6) and met["kl"].item() == pytest.approx(kl.item())
    assert not met["loss"].requires_grad
    # (B,) advantages broadcast like (B, T)
    adv_b = torch.tensor([1.0, -1.0], dtype=torch.float64)
    l1, _ = grpo_loss(logp_new, logp_old, ref, adv_b, MASK, kl_coef=0.5)
    l2, _ = grpo_loss(logp_new, logp_old, ref, adv_b[:, None].expand(2, 4), MASK, kl_coef=0.5)
    torch.testing.assert_close(l1, l2)


def test_on_policy_gradient_is_minus_advantage_over_tokens():
    logp = torch.randn(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, met = grpo_loss(logp, logp.detach(), None, torch.tensor([2.0, -1.0]), mask, kl_coef=0.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.0, -2.0, -2.0], [1.0, 0.0, 0.0]]) / 4)
    assert met["approx_kl"].item() == 0 and met["clip_frac_high"].item() == 0


def test_bad_inputs_are_named():
    logp = torch.zeros(2, 3)
    mask = torch.ones(2, 3)
    bad = torch.zeros(2, 3)
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match="logp_old"):
        grpo_loss(logp, bad, None, torch.zeros(2), mask, kl_coef=0.0)
    with pytest.raises(ValueError, match="logp_ref"):
        grpo_loss(logp, logp, bad * float("nan"), torch.zeros(2), mask)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, logp, None, torch.tensor([0.0, float("nan")]), mask, kl_coef=0.0)
    with pytest.raises(ValueError, match=r"logp_new \(2, 3\), logp_old \(2, 4\)"):
        grpo_loss(logp, torch.zeros(2, 4), None, torch.zeros(2), mask, kl_coef=0.0)
    with pytest.raises(ValueError, match="needs logp_ref"):
        grpo_loss(logp, logp, None, torch.zeros(2), mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="dual_clip"):
        grpo_loss(logp, logp, None, torch.zeros(2), mask, kl_coef=0.0, dual_clip=0.5)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        grpo_loss(logp, logp, logp, torch.zeros(2), mask, kl_estimator="k4")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        agg_loss(logp, mask, "mean")
    with pytest.raises(ValueError, match="needs max_length"):
        agg_loss(logp, mask, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="max_length must be"):
        agg_loss(logp, mask, "seq-mean-token-sum-norm", max_length=2)
