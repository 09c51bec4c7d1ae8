"""Chunked log-probs and entropy against full log_softmax (values and autograd gradients)."""

import math

import pytest
import torch

from r1hpc.algos import entropy_from_logits, logprobs_from_hidden, logprobs_from_logits


def ref_logprobs(logits, labels, temperature=1.0):
    return torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, labels[..., None]).squeeze(-1)


def ref_entropy(logits, temperature=1.0):
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def test_by_hand():
    # softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]
    logits = torch.tensor([[[0.0, 0.0, math.log(2)], [0.0, 0.0, math.log(2)]]])
    lp = logprobs_from_logits(logits, torch.tensor([[2, 0]]), chunk_size=1)
    torch.testing.assert_close(lp, torch.tensor([[math.log(0.5), math.log(0.25)]]))
    ent = entropy_from_logits(logits, chunk_size=1)
    torch.testing.assert_close(ent, torch.full((1, 2), 0.5 * math.log(4) + 0.5 * math.log(2)))
    # temperature 2 on logits [0, 2 ln 2] gives softmax([0, ln 2]) = [1/3, 2/3]
    lp_t = logprobs_from_logits(torch.tensor([[[0.0, 2 * math.log(2)]]]), torch.tensor([[1]]), temperature=2.0)
    assert lp_t.item() == pytest.approx(math.log(2 / 3))


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_logits_values_and_grads(chunk):
    gen = torch.Generator().manual_seed(chunk)
    logits = (torch.randn(3, 5, 17, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    labels = torch.randint(0, 17, (3, 5), generator=gen)
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64)  # a non-uniform upstream gradient
    for temp in (1.0, 0.7):
        out = logprobs_from_logits(logits, labels, chunk_size=chunk, temperature=temp)
        ref = ref_logprobs(logits.double(), labels, temp).double()
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
        (g,) = torch.autograd.grad((out * w).sum(), logits)
        (g_ref,) = torch.autograd.grad((ref * w).sum(), logits)
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


def test_hidden_values_and_grads():
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 6, 8, generator=gen, dtype=torch.float64).requires_grad_()
    weight = torch.randn(23, 8, generator=gen, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, 23, (2, 6), generator=gen)
    w = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    for chunk, temp in ((1, 1.0), (5, 0.6), (100, 1.3)):
        out, ent = logprobs_from_hidden(hidden, weight, labels, chunk_size=chunk, temperature=temp, return_entropy=True)
        logits = hidden @ weight.t()
        ref = ref_logprobs(logits.double(), labels, temp).double()
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            ent.double(), ref_entropy(logits.detach().double(), temp).double(), atol=1e-5, rtol=1e-5
        )
        assert not ent.requires_grad
        g_h, g_w = torch.autograd.grad((out * w).sum(), (hidden, weight))
        r_h, r_w = torch.autograd.grad((ref * w).sum(), (hidden, weight))
        torch.testing.assert_close(g_h, r_h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g_w, r_w, atol=1e-5, rtol=1e-5)


def test_hidden_grad_to_one_input_only():
    gen = torch.Generator().manual_seed(6)
    hidden = torch.randn(1, 4, 5, generator=gen)
    weight = torch.randn(9, 5, generator=gen).requires_grad_()
    labels = torch.randint(0, 9, (1, 4), generator=gen)
    logprobs_from_hidden(hidden, weight, labels, chunk_size=3).sum().backward()
    (r_w,) = torch.autograd.grad(ref_logprobs(hidden @ weight.t(), labels).sum(), weight)
    torch.testing.assert_close(weight.grad, r_w)
    assert hidden.grad is None


def test_gradcheck():
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(1, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    hidden = torch.randn(1, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (1, 4), generator=gen)
    # the functions compute in fp32, so use loose finite-difference tolerances
    assert torch.autograd.gradcheck(
        lambda x: logprobs_from_logits(x, labels, 3).double(), (logits,), eps=1e-3, atol=1e-3
    )
    assert torch.autograd.gradcheck(
        lambda h, w: logprobs_from_hidden(h, w, labels, 3, temperature=0.8).double(),
        (hidden, weight),
        eps=1e-3,
        atol=1e-3,
    )


def test_non_contiguous_logits_view():
    # the trainer slices logits[:, :-1] (shifted targets): a strided view, walked row by row
    gen = torch.Generator().manual_seed(10)
    full = torch.randn(3, 6, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 5), generator=gen)
    view = full[:, :-1]
    assert not view.is_contiguous()
    out = logprobs_from_logits(view, labels, chunk_size=2)
    ref = ref_logprobs(view, labels).double()
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-6)
    (g,) = torch.autograd.grad(out.sum(), full)
    (g_ref,) = torch.autograd.grad(ref.sum(), full)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-6)
    assert g[:, -1].abs().sum() == 0
    torch.testing.assert_close(
        entropy_from_logits(view, chunk_size=4).double(), ref_entropy(view).double(), atol=1e-6, rtol=1e-6
    )


def test_bf16_logits_close_to_fp32():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 9, 50, generator=gen).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, 50, (2, 9), generator=gen)
    out = logprobs_from_logits(logits, labels, chunk_size=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref_logprobs(logits.detach(), labels), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16


def test_entropy_values_and_grads():
    gen = torch.Generator().manual_seed(9)
    logits = (torch.randn(2, 7, 13, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    w = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    for chunk in (1, 4, 100):
        ent = entropy_from_logits(logits, chunk_size=chunk, temperature=0.9)
        ref = ref_entropy(logits.double(), 0.9).double()
        torch.testing.assert_close(ent.double(), ref, atol=1e-5, rtol=1e-5)
        (g,) = torch.autograd.grad((ent * w).sum(), logits)
        (g_ref,) = torch.autograd.grad((ref * w).sum(), logits)
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert not entropy_from_logits(logits, chunk_size=4).requires_grad


def test_bad_inputs():
    logits = torch.zeros(1, 3, 5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        logprobs_from_logits(logits, torch.tensor([[0, 5, 1]]))
    with pytest.raises(ValueError, match=r"labels \(1, 2\), expected \(1, 3\)"):
        logprobs_from_logits(logits, torch.tensor([[0, 1]]))
    nan_logits = logits.clone()
    nan_logits[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits.*1 NaN"):
        logprobs_from_logits(nan_logits, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="logits.*NaN"):
        entropy_from_logits(nan_logits)
    with pytest.raises(ValueError, match="chunk_size"):
        logprobs_from_logits(logits, torch.zeros(1, 3, dtype=torch.long), chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        logprobs_from_logits(logits, torch.zeros(1, 3, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match=r"hidden \(1, 3, 4\), lm_head_weight \(5, 3\)"):
        logprobs_from_hidden(torch.zeros(1, 3, 4), torch.zeros(5, 3), torch.zeros(1, 3, dtype=torch.long))
    inf_w = torch.zeros(5, 4)
    inf_w[0, 0] = float("-inf")
    with pytest.raises(ValueError, match="lm_head_weight.*inf"):
        logprobs_from_hidden(torch.zeros(1, 3, 4), inf_w, torch.zeros(1, 3, dtype=torch.long))
