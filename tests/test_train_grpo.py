"""GRPO update on a tiny real transformers model: batching, accumulation, learning signal."""

import copy

import pytest
import torch

from r1hpc.algos import GRPOSettings
from r1hpc.model.factory import ModelSize, build_model
from r1hpc.train.batches import pack
from r1hpc.train.grpo import grpo_update, sequence_logprobs
from r1hpc.train.logprobs import token_logprobs

PAD = 0


def tiny_model(seed=0):
    return build_model(
        ModelSize(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, max_positions=64),
        vocab_size=40,
        eos_id=1,
        pad_id=PAD,
        seed=seed,
    )


def records():
    """Two groups of four; the response starting with token 7 is the rewarded one."""
    out = []
    for group, prompt in enumerate(([5, 6, 2], [9, 3])):
        for resp in ([7, 8, 1], [11, 12, 13, 1], [7, 1], [14, 1]):
            out.append(
                {"prompt_ids": prompt, "response_ids": resp, "group": group, "reward": 1.0 if resp[0] == 7 else 0.0}
            )
    return out


def test_pack_masks_only_response_tokens():
    b = pack([[5, 6], [9]], [[7, 8, 1], [3]], pad_id=PAD)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 1], [9, 3, PAD, PAD, PAD]]
    assert b.loss_mask.tolist() == [[False, True, True, True], [True, False, False, False]]
    assert b.labels[0, 1:].tolist() == [7, 8, 1]
    with pytest.raises(ValueError, match="empty prompt"):
        pack([[]], [[1]], pad_id=PAD)


def test_trainer_logprobs_equal_full_softmax():
    model = tiny_model()
    b = pack([[5, 6, 2], [9]], [[7, 8, 1], [3, 4]], pad_id=PAD)
    lp = token_logprobs(model, b, temperature=0.7)
    with torch.no_grad():
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1] / 0.7
    ref = torch.log_softmax(logits.float(), -1).gather(-1, b.labels[..., None]).squeeze(-1)
    assert torch.allclose(lp[b.loss_mask], ref[b.loss_mask], atol=1e-5)
    # Padding a row more does not change its values (right padding + attention mask).
    single = token_logprobs(model, pack([[9]], [[3, 4]], pad_id=PAD), temperature=0.7)
    assert torch.allclose(single[0, :2], lp[1, :2], atol=1e-5)


def update(micro, mini=1, agg="token-mean", seed=0):
    torch.manual_seed(0)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    s = GRPOSettings(micro_batch_size=micro, mini_batches=mini, loss_agg=agg, kl_coef=0.0, max_grad_norm=1e9)
    metrics = grpo_update(model, None, opt, records(), s, PAD, torch.Generator().manual_seed(seed))
    return model, metrics


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_gradient_accumulation_matches_one_big_batch(agg):
    whole, _ = update(micro=8, agg=agg)
    pieces, _ = update(micro=3, agg=agg)
    for a, b in zip(whole.parameters(), pieces.parameters()):
        assert torch.allclose(a, b, atol=1e-5), agg


def test_update_raises_likelihood_of_rewarded_responses():
    base = tiny_model()
    model, metrics = update(micro=4, mini=2)
    b = pack([r["prompt_ids"] for r in records()], [r["response_ids"] for r in records()], pad_id=PAD)
    before = (sequence_logprobs(base, b, 8, 1.0) * b.loss_mask).sum(1)
    after = (sequence_logprobs(model, b, 8, 1.0) * b.loss_mask).sum(1)
    good = torch.tensor([r["reward"] == 1.0 for r in records()])
    assert (after - before)[good].mean() > 0 > (after - before)[~good].mean()
    assert metrics["updates"] == 2 and metrics["reward_mean"] == pytest.approx(0.5)
    assert 0 <= metrics["clip_frac_high"] <= 1 and metrics["entropy"] > 0


def test_all_equal_groups_with_dynamic_sampling_make_no_update():
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    recs = [dict(r, reward=1.0) for r in records()]
    s = GRPOSettings(dynamic_sampling=True)
    metrics = grpo_update(model, None, torch.optim.SGD(model.parameters(), lr=1.0), recs, s, PAD, torch.Generator())
    assert metrics["updates"] == 0 and metrics["kept_fraction"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_kl_to_reference_and_generator_mismatch_are_reported():
    model, ref = tiny_model(), tiny_model(seed=1)
    recs = records()
    b = pack([r["prompt_ids"] for r in recs], [r["response_ids"] for r in recs], pad_id=PAD)
    lp = sequence_logprobs(model, b, 8, 1.0)
    for i, r in enumerate(recs):
        r["gen_logprobs"] = lp[i][b.loss_mask[i]].tolist()
    s = GRPOSettings(kl_coef=0.1)
    metrics = grpo_update(model, ref, torch.optim.SGD(model.parameters(), lr=0.1), recs, s, PAD, torch.Generator())
    assert metrics["kl"] > 0
    assert metrics["gen_logprob_diff_max"] < 1e-5


def _reference_step(policy, behaviour, recs, lr=0.5):
    """One GRPO step written out from the algos functions: old log-probs from `behaviour`, one SGD
    update of `policy` on the token-mean loss over the whole batch (no KL)."""
    from r1hpc.algos import group_advantages, grpo_loss

    batch = pack([r["prompt_ids"] for r in recs], [r["response_ids"] for r in recs], PAD)
    rewards = torch.tensor([r["reward"] for r in recs])
    groups = torch.tensor([r["group"] for r in recs])
    with torch.no_grad():
        old = token_logprobs(behaviour.eval(), batch)
    policy.eval()
    new = token_logprobs(policy, batch)
    loss, _ = grpo_loss(new, old, None, group_advantages(rewards, groups), batch.loss_mask, kl_coef=0.0)
    opt = torch.optim.SGD(policy.parameters(), lr=lr)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return policy


def test_lagged_update_uses_the_policy_that_sampled():
    """grpo.max_staleness = 1: the records were sampled by v(N-1), the update is of v(N). The ratio's
    old log-probs are v(N-1)'s: the update equals the reference computation with v(N-1) as the old
    policy, and differs from taking v(N) as old (the uncorrected ratio that starts at 1)."""
    behaviour, current = tiny_model(seed=1), tiny_model(seed=2)
    s = GRPOSettings(micro_batch_size=3, mini_batches=1, kl_coef=0.0, max_grad_norm=1e9)
    ours = copy.deepcopy(current)
    grpo_update(
        ours,
        None,
        torch.optim.SGD(ours.parameters(), lr=0.5),
        records(),
        s,
        PAD,
        torch.Generator().manual_seed(0),
        behaviour=behaviour,
    )
    want = _reference_step(copy.deepcopy(current), behaviour, records())
    wrong = _reference_step(copy.deepcopy(current), copy.deepcopy(current), records())
    for a, b in zip(ours.parameters(), want.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert max(float((a - c).detach().abs().max()) for a, c in zip(ours.parameters(), wrong.parameters())) > 1e-4


def test_on_policy_single_update_needs_no_old_pass():
    """On-policy with one optimizer update the old log-probs are the current policy's, detached: the
    update without the extra pass equals the one that computes them separately."""
    s = GRPOSettings(micro_batch_size=3, mini_batches=1, kl_coef=0.0, max_grad_norm=1e9)
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    ma = grpo_update(
        a, None, torch.optim.SGD(a.parameters(), lr=0.5), records(), s, PAD, torch.Generator().manual_seed(0)
    )
    grpo_update(
        b,
        None,
        torch.optim.SGD(b.parameters(), lr=0.5),
        records(),
        s,
        PAD,
        torch.Generator().manual_seed(0),
        behaviour=copy.deepcopy(b),
    )
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.allclose(x, y, atol=1e-6)
    assert ma["updates"] == 1.0
