"""A tiny Qwen2 policy built here (no hub access), for the rollout backends' tests: two versions
with one tokenizer, and the teacher-forced log-probs their samples must match."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from r1hpc.algos import logprobs_from_logits

EOS_BOOST = 3.0
TEXTS = [f"{a} plus {b} is {a + b}. the cat sat on the mat." for a in range(40) for b in range(12)]


def build_policy(path, tokenizer, seed: int) -> None:
    """A 2-layer Qwen2 with tied embeddings, head_dim 32 (a size vLLM's CPU attention supports),
    init std 0.3 so next-token distributions are peaked (entropy ~3.5 of 6 nats) and log-prob
    errors show. eos is made likely in some contexts (p up to ~0.6) so that some samples end with eos
    and others run to the length limit."""
    eos = tokenizer.eos_token_id
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        initializer_range=0.3,
        tie_word_embeddings=True,
        eos_token_id=eos,
        bos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        # every token's embedding gets the same value c in coordinate 0, so the final hidden
        # state carries it too; eos's row gets c + EOS_BOOST there, which raises eos's logit
        # (and no other's, relative to the rest) in every context
        emb = model.model.embed_tokens.weight
        emb[:, 0] = 1.0
        emb[eos, 0] = 1.0 + EOS_BOOST
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


def make_policies(root: Path) -> list[Path]:
    """Two policy directories under ``root`` (different weights, same tokenizer): v0 and v1."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        TEXTS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<eos>", "<pad>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", padding_side="left")
    dirs = []
    for seed in (0, 1):
        build_policy(root / f"v{seed}", fast, seed)
        dirs.append(root / f"v{seed}")
    return dirs


@functools.lru_cache(maxsize=4)
def load_policy(model_dir: str) -> Qwen2ForCausalLM:
    return Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def forward_logprobs(
    model_dir, tokenizer, prompt: str, token_ids: list[int], temperature: float = 1.0, top_p: float = 1.0
) -> torch.Tensor:
    """(L,) teacher-forced log-probs of the response under the sampling distribution:
    log_softmax(logits / T), restricted to the top-p nucleus and renormalised (HF's rule:
    drop the tokens whose ascending cumulative probability is <= 1 - top_p)."""
    model = load_policy(str(model_dir))
    p = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p + token_ids])).logits[0, len(p) - 1 : -1]
    labels = torch.tensor(token_ids)
    if top_p == 1.0:
        # the trainer's own function: generator and trainer must agree on this definition
        return logprobs_from_logits(logits[None], labels[None], temperature=temperature)[0]
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    sorted_p, idx = logp.exp().sort(dim=-1)
    drop_sorted = sorted_p.cumsum(-1) <= 1 - top_p
    drop_sorted[:, -1] = False
    drop = drop_sorted.scatter(-1, idx, drop_sorted)
    logp = torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
    return logp.gather(-1, labels[:, None]).squeeze(-1).float()
