"""Tokenizer training / round trip / special tokens, and the tiny model's build-save-load
round trip with identical logits."""

from __future__ import annotations

import json

import pytest
import torch

from r1hpc.model.factory import ModelSize, build_model, load_model, n_params, save_model
from r1hpc.model.pretrain_corpus import R1_ZERO_TEMPLATE, build_corpus
from r1hpc.model.tokenizer import EOS, PAD, TAG_TOKENS, load_tokenizer, save_tokenizer, train_tokenizer

SMALL = ModelSize(layers=2, hidden=32, heads=4, kv_heads=2, intermediate=64, max_positions=64)


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return build_corpus(1, 1500)


@pytest.fixture(scope="module")
def tok(docs, tmp_path_factory):
    t = train_tokenizer(docs, vocab_size=512)
    path = tmp_path_factory.mktemp("tok")
    save_tokenizer(t, path)
    return load_tokenizer(path)


def test_tokenizer_deterministic(docs) -> None:
    a, b = train_tokenizer(docs, 512), train_tokenizer(docs, 512)
    assert a.get_vocab() == b.get_vocab()
    assert json.loads(a.backend_tokenizer.to_str()) == json.loads(b.backend_tokenizer.to_str())
    assert 300 < len(a) <= 512


def test_round_trip_and_special_tokens(tok, docs) -> None:
    texts = docs[:50] + [
        R1_ZERO_TEMPLATE.format(prompt="What is 12 + 345?") + " 12 + 345 = 357 </think> <answer> 357 </answer>",
        "Unseen words: Zürich, naïve, 3.14159, tabs\tand\nnewlines  double  spaces.",
    ]
    for t in texts:
        assert tok.decode(tok.encode(t, add_special_tokens=False)) == t
    for s in (EOS, PAD, *TAG_TOKENS):
        ids = tok.encode(s, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [s]
    ids = tok.encode("<think>x</think><answer>7</answer>", add_special_tokens=False)
    for s in TAG_TOKENS:
        assert tok.convert_tokens_to_ids(s) in ids
    assert len({tok.convert_tokens_to_ids(s) for s in (EOS, PAD, *TAG_TOKENS)}) == 6
    # digits are single tokens, so numbers are spelled digit by digit
    assert tok.tokenize("2048")[-4:] == ["2", "0", "4", "8"]
    assert tok.eos_token == EOS and tok.pad_token == PAD and tok.padding_side == "left"


def test_load_tokenizer_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=100)


def test_model_round_trip_identical_logits(tok, tmp_path) -> None:
    torch.manual_seed(123)  # build_model must not depend on the global RNG
    model = build_model(SMALL, len(tok), tok.eos_token_id, tok.pad_token_id, seed=5)
    same = build_model(SMALL, len(tok), tok.eos_token_id, tok.pad_token_id, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), same.parameters()))
    model.eval()
    x = torch.tensor([tok.encode("User: What is 2 + 3?\nAssistant: <think>")])
    with torch.no_grad():
        want = model(input_ids=x).logits  # (1, T, vocab)
    assert want.shape == (1, x.shape[1], len(tok))
    save_model(model, tmp_path / "m")
    tok.save_pretrained(str(tmp_path / "m"))
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = load_model(tmp_path / "m")
    with torch.no_grad():
        got = loaded(input_ids=x).logits
    assert torch.equal(got, want)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert n_params(loaded) == n_params(model)
    cfg = loaded.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads) == (2, 32, 2)
    # greedy generation runs and stops at eos or the length limit
    out = loaded.generate(input_ids=x, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= x.shape[1] + 5


def test_model_size_validation(tmp_path) -> None:
    with pytest.raises(ValueError, match="divisible by heads"):
        ModelSize(hidden=30, heads=4)
    with pytest.raises(ValueError, match="divisible by kv_heads"):
        ModelSize(heads=4, kv_heads=3)
    with pytest.raises(ValueError, match=r"model\.size: unknown keys \['hiden'\]"):
        ModelSize.from_dict({"hiden": 3}, where="model.size")
    assert ModelSize.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
