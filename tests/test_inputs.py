"""What a user brings, checked before anything is submitted (r1hpc.inputs): released checkpoints,
their tokenizers and chat templates, the prompt format, and `r1hpc run` refusing bad inputs with
one line naming the file or key, leaving nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from released import make_checkpoint

from r1hpc.config import ConfigError, load_config
from r1hpc.inputs import check_inputs, input_problems
from r1hpc.model.prompting import PromptFormat, encode_prompt
from r1hpc.model.tokenizer import load_tokenizer, stop_token_ids

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "qwen": make_checkpoint(root / "qwen", "qwen", layers=1),
        "llama": make_checkpoint(root / "llama", "llama", layers=1),
    }


def test_released_tokenizers_load_without_the_tiny_specials(checkpoints):
    qwen, llama = load_tokenizer(checkpoints["qwen"]), load_tokenizer(checkpoints["llama"])
    assert qwen.pad_token == qwen.eos_token == "<|endoftext|>"  # no pad: eos stands in
    assert llama.pad_token == "<|end_of_text|>"
    # eos ids: the tokenizer's, then generation_config's end-of-turn tokens
    assert stop_token_ids(qwen, checkpoints["qwen"]) == [qwen.eos_token_id, qwen.convert_tokens_to_ids("<|im_end|>")]
    assert stop_token_ids(llama, checkpoints["llama"], ["<|eot_id|>"]) == [
        llama.eos_token_id,
        llama.convert_tokens_to_ids("<|eot_id|>"),
    ]
    assert load_tokenizer(checkpoints["qwen"], pad_token="<|im_start|>").pad_token == "<|im_start|>"


def test_prompt_ids_carry_bos_once(checkpoints):
    llama = load_tokenizer(checkpoints["llama"])
    plain = encode_prompt(llama, PromptFormat().render("What is 1 + 2?"))
    chat_text = PromptFormat("chat", "Be brief.", True, llama).render({"prompt": "What is 1 + 2?"})
    chat = encode_prompt(llama, chat_text)
    for ids in (plain, chat):
        assert ids[0] == llama.bos_token_id and ids.count(llama.bos_token_id) == 1
    assert llama.decode(plain) == "<|begin_of_text|>User: What is 1 + 2?\nAssistant: <think>"
    assert chat_text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<think>")
    qwen = load_tokenizer(checkpoints["qwen"])  # adds nothing
    assert qwen.decode(encode_prompt(qwen, "User: hi\nAssistant: <think>")) == "User: hi\nAssistant: <think>"


def test_chat_format_uses_the_datasets_messages_and_the_system_prompt(checkpoints):
    qwen = load_tokenizer(checkpoints["qwen"])
    fmt = PromptFormat("chat", "Reason first.", False, qwen)
    text = fmt.render({"prompt": "2+2?", "messages": [{"role": "user", "content": "2+2?"}]})
    assert (
        text == "<|im_start|>system\nReason first.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert not fmt.ends_with_think and PromptFormat().ends_with_think
    own = fmt.render(
        {"prompt": "q", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]}
    )
    assert own.startswith("<|im_start|>system\nS<|im_end|>")  # the dataset's own system message is kept


def _cfg(tmp_path: Path, *overrides: str):
    return load_config(REPO / "configs" / "smoke.yaml", [f"runs_dir={tmp_path / 'runs'}", *overrides])


def _broken(checkpoints, tmp_path: Path, kind: str) -> list[str]:
    """A copy of the Qwen-style checkpoint with one thing wrong; the overrides that use it."""
    bad = tmp_path / f"bad_{kind}"
    shutil.copytree(checkpoints["qwen"], bad)
    over = [f"model.init_from={bad}"]
    if kind == "no_tokenizer":
        for f in bad.glob("tokenizer*"):
            f.unlink()
    elif kind == "vocab_too_big":
        cfg = json.loads((bad / "config.json").read_text())
        (bad / "config.json").write_text(json.dumps({**cfg, "vocab_size": 100}))
    elif kind == "no_weights":
        (bad / "model.safetensors").unlink()
    elif kind == "bad_template":
        (bad / "chat_template.jinja").write_text("{{ messages[0]['content'] | nosuchfilter }}")
        over.append("prompt.format=chat")
    elif kind == "no_template":
        (bad / "chat_template.jinja").unlink()
        over.append("prompt.format=chat")
    elif kind == "pad_not_one_token":
        over.append("model.pad_token=not one token")
    elif kind == "bad_generation_config":
        (bad / "generation_config.json").write_text('{"eos_token_id": "x"}')
    elif kind == "config_not_json":
        (bad / "config.json").write_text("{oops")
    elif kind == "missing_dir":
        shutil.rmtree(bad)
    return over


CHECKPOINT_PROBLEMS = {
    "missing_dir": "directory does not exist",
    "no_tokenizer": "no tokenizer",
    "vocab_too_big": "config.json vocab_size is 100",
    "no_weights": "no *.safetensors weights",
    "bad_template": "chat template",
    "no_template": "has no chat_template",
    "pad_not_one_token": "model.pad_token 'not one token' encodes to",
    "bad_generation_config": "eos_token_id must be an int or a list of ints",
    "config_not_json": "config.json: not valid JSON",
}


@pytest.mark.parametrize("kind", sorted(CHECKPOINT_PROBLEMS))
def test_bad_checkpoints_give_one_line_naming_the_path(checkpoints, tmp_path, kind):
    cfg = _cfg(tmp_path, *_broken(checkpoints, tmp_path, kind))
    problems = input_problems(cfg)
    assert len(problems) == 1 and "\n" not in problems[0], problems
    assert CHECKPOINT_PROBLEMS[kind] in problems[0] and f"bad_{kind}" in problems[0], problems[0]


def test_good_inputs_pass(checkpoints, tmp_path):
    check_inputs(
        _cfg(
            tmp_path,
            f"model.init_from={checkpoints['llama']}",
            f"student.init_from={checkpoints['qwen']}",
            "prompt.format=chat",
        )
    )


def test_what_the_deepspeed_backend_does_not_run_is_refused(tmp_path):
    """DeepSpeed trains the SFT stages on one node: GRPO steps, several nodes and ZeRO stage 0 are
    refused, each naming its key."""
    from r1hpc import recipe

    problems = input_problems(_cfg(tmp_path, "parallel.backend=deepspeed"))
    grpo = [e.name for e in recipe.of_kind("grpo")]
    assert len(problems) == 1 and problems[0].startswith("parallel.backend: 'deepspeed' trains the SFT stages")
    assert all(name in problems[0] for name in grpo), problems
    no_grpo = [f"{section}.steps=0" for section in recipe.grpo_sections()]
    assert input_problems(_cfg(tmp_path, "parallel.backend=deepspeed", *no_grpo)) == []
    more = input_problems(
        _cfg(tmp_path, "parallel.backend=deepspeed", *no_grpo, "launch.train.nodes=2", "parallel.zero_stage=0")
    )
    assert [p.split(":")[0] for p in more] == ["launch.train.nodes", "parallel.zero_stage"], more
    assert input_problems(_cfg(tmp_path)) == []


# Qwen2.5-7B's shape (embeddings tied here): 7.1B parameters
QWEN_7B_SHAPE = [
    "model.num_layers=28",
    "model.hidden_size=3584",
    "model.num_heads=28",
    "model.num_kv_heads=4",
    "model.intermediate_size=18944",
    "model.vocab_size=152064",
]


def test_stages_that_train_as_one_process_must_hold_the_model_on_one_gpu(tmp_path):
    """A model whose fp32 training states (16 bytes per parameter) exceed one GPU is refused for
    the stages that no backend shards, naming them; which stages those are follows the backend."""
    from r1hpc.plan.one_process import one_process_stages

    # 7.1B parameters x 16 bytes = 113 GB > one H100 (86 GB)
    seven_b = ["launch.gpu_type=h100", *QWEN_7B_SHAPE]
    problems = input_problems(_cfg(tmp_path, *seven_b))
    assert len(problems) == 1 and problems[0].startswith(
        "parallel.backend: reward_model, r1_zero, cold_start, reasoning_rl, sft, rl_all train as one torch process"
    ), problems
    assert "7.1B parameters x 16 bytes" in problems[0] and "more than one H100 SXM 80GB holds" in problems[0]
    assert input_problems(_cfg(tmp_path, *seven_b, "launch.gpu_type=h200")) == []  # 113 GB < 151 GB
    assert input_problems(_cfg(tmp_path, "launch.gpu_type=h100")) == []  # the smoke model fits anywhere
    no_grpo = [f"{section}.steps=0" for section in ("r1_zero", "reasoning_rl", "rl_all")]
    assert one_process_stages(_cfg(tmp_path, "parallel.backend=megatron")) == ["reward_model"]
    assert one_process_stages(_cfg(tmp_path, "parallel.backend=deepspeed", *no_grpo)) == ["reward_model"]
    assert one_process_stages(_cfg(tmp_path, *no_grpo)) == ["reward_model", "cold_start", "sft"]
    # a reward model on a checkpoint of its own is that checkpoint's size, not the policy's
    assert one_process_stages(_cfg(tmp_path, *no_grpo, "reward_model.init_from=/rm")) == ["cold_start", "sft"]


def test_sft_stages_trained_in_one_node_must_fit_its_gpus(tmp_path):
    """cold_start and sft under backend megatron or deepspeed train in the ranks of one node: a model
    whose states exceed those GPUs even sharded evenly over them is refused, naming the key."""
    from r1hpc.plan.one_process import one_node_stages, one_process_memory_problems

    assert one_node_stages(_cfg(tmp_path)) == []
    assert one_node_stages(_cfg(tmp_path, "parallel.backend=megatron")) == ["cold_start", "sft"]
    # 7.1B parameters x 18 bytes (megatron: bf16 weights, fp32 grads, Adam) / 1 rank = 127 GB > 86 GB
    seven_b = [
        "launch.gpu_type=h100",
        "parallel.backend=megatron",
        "reward_model.init_from=/rm",  # else the reward model is refused too (one process)
        *QWEN_7B_SHAPE,
    ]
    problems = one_process_memory_problems(_cfg(tmp_path, *seven_b, "launch.train.tasks_per_node=1"))
    assert [key for key, _ in problems] == ["launch.train.tasks_per_node"], problems
    message = problems[0][1]
    assert message.startswith("cold_start, sft train in the 1 ranks of one node (parallel.backend 'megatron')")
    assert "= 127 GB per GPU even sharded evenly" in message, message
    # the ranks of that node hold whole model replicas (TP x PP groups)
    assert input_problems(
        _cfg(tmp_path, "parallel.backend=megatron", "parallel.tp=2", "launch.train.tasks_per_node=3")
    )[1:] == [
        "launch.train.tasks_per_node: 3 with parallel.backend 'megatron': cold_start, sft train in the ranks of "
        "one node, which must be a multiple of parallel.tp x parallel.pp = 2"
    ]
    assert one_process_memory_problems(_cfg(tmp_path, *seven_b, "launch.train.tasks_per_node=8")) == []  # 16 GB


def test_megatron_trains_deepseek_v3_models_only(checkpoints, tmp_path):
    """The Megatron backend converts DeepseekV3 checkpoints: another architecture is refused before
    anything is queued (its train jobs would fail at their first import), naming where it came from."""
    assert input_problems(load_config(REPO / "configs" / "tiny_moe.yaml", [f"runs_dir={tmp_path}"])) == []
    assert input_problems(_cfg(tmp_path, "parallel.backend=megatron")) == [
        "parallel.backend: 'megatron' trains DeepseekV3 models (r1hpc/megatron/hf_convert.py), but model.arch is "
        "'qwen2'; expected 'deepseek_v3', or backend 'torch' / 'deepspeed'"
    ]
    qwen = checkpoints["qwen"]
    (problem,) = input_problems(_cfg(tmp_path, "parallel.backend=megatron", f"model.init_from={qwen}"))
    assert problem.startswith("parallel.backend: 'megatron' trains DeepseekV3 models") and (
        f"model.init_from {qwen} is a 'qwen2' checkpoint ({qwen / 'config.json'}: model_type)" in problem
    ), problem


def test_run_refuses_bad_inputs_before_writing_anything(checkpoints, tmp_path, capsys):
    from r1hpc.pipeline import main

    over = _broken(checkpoints, tmp_path, "vocab_too_big")
    assert main([str(REPO / "configs" / "smoke.yaml"), f"runs_dir={tmp_path / 'runs'}", *over]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "vocab_size is 100" in err
    assert not (tmp_path / "runs").exists()  # no config.yaml, no job, no data
    with pytest.raises(ConfigError, match="vocab_size is 100"):
        check_inputs(_cfg(tmp_path, *over))


def test_the_example_config_plans_and_passes_the_input_checks(checkpoints, tmp_path, capsys):
    """configs/qwen_math_1p5b.yaml as shipped plans (its paths are a cluster's); with its paths
    pointed at a released-style checkpoint and files in each peer format, every input check passes
    and the data stage's loader reads all five files."""
    from released import write_datasets

    from r1hpc.datasets import load_problems
    from r1hpc.plan.render import main as plan_main

    example = REPO / "configs" / "qwen_math_1p5b.yaml"
    assert plan_main([str(example)]) == 0
    assert "fits" in capsys.readouterr().out
    files = write_datasets(tmp_path)
    cfg = load_config(
        example,
        [
            f"runs_dir={tmp_path / 'runs'}",
            f"model.init_from={checkpoints['qwen']}",
            "rejection.prompts=10",  # of the 44 problems here
            f"data.train=[{{path: {files['verl']}, preset: verl}}, "
            f"{{path: {files['openr1']}, preset: openr1, samples: 20}}]",
            f"data.heldout=[{{path: {files['math']}, preset: math, name: math500}}, "
            f"{{path: {files['aime']}, prompt: problem, answer: answer, name: aime24}}, "
            f"{{path: {files['gsm8k']}, preset: gsm8k, name: gsm8k}}]",
        ],
    )
    check_inputs(cfg)
    train, heldout, _ = load_problems(cfg)
    assert len(train) == 44 and {p["data_source"] for p in heldout} == {"math500", "aime24", "gsm8k"}
