"""What a user downloads, built locally (the hub cannot be reached here): HF checkpoints written by
transformers with released-style tokenizers, and the dataset files peers use.

- `qwen_style`: byte-level BPE with Qwen's specials (<|endoftext|>, <|im_start|>, <|im_end|>), its
  ChatML chat template, eos <|endoftext|> and generation_config eos [<|im_end|>, <|endoftext|>], NO
  pad token and NO <think> tokens; embedding rows padded past the tokenizer (as Qwen's 151936 rows
  for 151665 tokens).
- `llama_style`: a tokenizer that ADDS BOS (<|begin_of_text|>) to every encode, Llama-3-like
  specials and chat template (which writes the BOS itself), no pad; a LlamaForCausalLM.

Models are random and small (head dim 32, as vLLM's CPU attention needs). Tokenizers are trained
on a few hundred lines of generated math text, so prompts tokenize into real multi-token pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def _corpus() -> list[str]:
    from r1hpc.tasks.dataset import generate_problems

    lines = []
    for p in generate_problems(0, "train", 300, difficulties=[1, 2]):
        lines.append(f"{p['prompt']} The answer is {p['answer']}. \\boxed{{{p['answer']}}} #### {p['answer']}")
    lines += ["<think> reasoning </think> <answer> 42 </answer>", "User: Assistant: Solve step by step."]
    return lines


def _train(specials: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def make_checkpoint(path: Path, style: str = "qwen", seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """Write a released-style checkpoint (`style` "qwen" or "llama") to `path`; returns it."""
    path.mkdir(parents=True, exist_ok=True)
    if style == "qwen":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = _train(specials, 600)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|endoftext|>", additional_special_tokens=specials[1:]
        )
        fast.chat_template = QWEN_CHAT_TEMPLATE
        eos_ids = [fast.convert_tokens_to_ids("<|im_end|>"), fast.eos_token_id]
        rows = (len(fast) + 63) // 64 * 64 + 64  # padded embedding, as released Qwen checkpoints have
        config = Qwen2Config(
            vocab_size=rows,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=hidden // 32,
            num_key_value_heads=1,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=eos_ids[1],
            pad_token_id=None,
        )
        model_cls = Qwen2ForCausalLM
    elif style == "llama":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        tok = _train(specials, 640)
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))],
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|begin_of_text|>",
            eos_token="<|end_of_text|>",
            additional_special_tokens=specials[2:],
        )
        fast.chat_template = LLAMA_CHAT_TEMPLATE
        eos_ids = [fast.eos_token_id, fast.convert_tokens_to_ids("<|eot_id|>")]
        config = LlamaConfig(
            vocab_size=len(fast),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=hidden // 32,
            num_key_value_heads=1,
            max_position_embeddings=512,
            tie_word_embeddings=False,
            bos_token_id=fast.bos_token_id,
            eos_token_id=eos_ids,
            pad_token_id=None,
        )
        model_cls = LlamaForCausalLM
    else:
        raise ValueError(f"style must be 'qwen' or 'llama', got {style!r}")
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = None
    model.save_pretrained(str(path), safe_serialization=True)
    fast.save_pretrained(str(path))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_datasets(root: Path) -> dict[str, Path]:
    """The generated task's problems rewritten in the formats users bring: open-r1 JSONL (train),
    verl parquet (train), and GSM8K-, MATH- and AIME-style held-out files."""
    import pandas as pd

    from r1hpc.tasks.dataset import generate_problems

    train = generate_problems(0, "train", 48, difficulties=[1, 2])
    heldout = generate_problems(0, "heldout", 12, difficulties=[1, 2])
    verl = root / "verl.parquet"
    pd.DataFrame(
        [
            {
                "data_source": "arith_verl",
                "prompt": [{"role": "user", "content": p["prompt"]}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": p["answer"]},
                "extra_info": {"index": i},
            }
            for i, p in enumerate(train[24:])
        ]
    ).to_parquet(verl)
    return {
        "openr1": write_jsonl(
            root / "openr1.jsonl",
            [
                {"problem": p["prompt"], "solution": f"We compute. So the result is $\\boxed{{{p['answer']}}}$."}
                for p in train[:24]
            ],
        ),
        "verl": verl,
        "gsm8k": write_jsonl(
            root / "gsm8k_test.jsonl",
            [{"question": p["prompt"], "answer": f"Step by step.\n#### {p['answer']}"} for p in heldout[:6]],
        ),
        "math": write_jsonl(
            root / "math500.jsonl",
            [
                {"problem": p["prompt"], "solution": f"Hence $\\boxed{{{p['answer']}}}$.", "level": "Level 1"}
                for p in heldout[6:9]
            ],
        ),
        "aime": write_jsonl(
            root / "aime24.jsonl", [{"problem": p["prompt"], "answer": p["answer"]} for p in heldout[9:]]
        ),
    }
