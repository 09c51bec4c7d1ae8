"""Config: defaults -> YAML -> overrides; every bad input is a one-line error naming key and file."""

from pathlib import Path

import pytest
import yaml

from r1hpc import configio
from r1hpc.config import Config, ConfigError, load_config, read_run_config, write_resolved

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def test_tiny_config_loads_and_round_trips(tmp_path):
    cfg = load_config(TINY)
    assert cfg.name == "tiny" and cfg.grpo.group_size == 8 and cfg.launch.executor == "local"
    again = configio.from_dict(Config, yaml.safe_load(configio.to_yaml(cfg)))
    assert again == cfg


def test_overrides_apply_in_order_and_parse_types():
    cfg = load_config(
        TINY,
        [
            "grpo.group_size=16",
            "r1_zero.lr=3e-6",
            "launch.executor=slurm",
            "launch.train.gpus_per_node=8",
            "r1_zero.rewards={accuracy_math: 1.0}",
            "grpo.group_size=4",
        ],
    )
    assert cfg.grpo.group_size == 4
    assert cfg.r1_zero.lr == pytest.approx(3e-6)
    assert cfg.launch.train.gpus_per_node == 8
    assert cfg.r1_zero.rewards == {"accuracy_math": 1.0}
    assert isinstance(cfg.r1_zero.lr, float)


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["grpo.temperature=1"]).grpo.temperature == 1.0
    with pytest.raises(ConfigError, match="r1_zero.steps: expected an integer"):
        load_config(None, ["r1_zero.steps=2.5"])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


# Each bad input: (YAML text or None, overrides, regex the one-line error must match).
BAD_INPUTS = {
    "unknown top-level key": ("grop:\n  group_size: 4\n", [], r"bad.yaml:1: unknown key 'grop'; did you mean 'grpo'"),
    "unknown nested key": (
        "grpo:\n  group_sise: 4\n",
        [],
        r"bad.yaml:2: unknown key 'grpo.group_sise'; did you mean 'grpo.group_size'",
    ),
    "wrong type": ("r1_zero:\n  steps: many\n", [], r"bad.yaml:2: r1_zero.steps: expected an integer, got 'many'"),
    "bool as string": (
        "parallel:\n  sequence_parallel: 'yes'\n",
        [],
        r"bad.yaml:2: parallel.sequence_parallel: expected true or false",
    ),
    "section not a mapping": ("grpo: 5\n", [], r"bad.yaml:1: grpo: expected a mapping \(GRPOConfig\)"),
    "bad choice": (
        "launch:\n  executor: slrum\n",
        [],
        r"bad.yaml:2: launch.executor: expected one of .*did you mean 'slurm'",
    ),
    "duplicate key": ("seed: 1\nseed: 2\n", [], r"bad.yaml:2: duplicate key 'seed' \(first set at line 1\)"),
    "invalid yaml": ("grpo:\n  steps: [1, 2\n", [], r"bad.yaml:\d+: invalid YAML"),
    "top level not a mapping": ("- a\n- b\n", [], r"bad.yaml:1: expected a mapping of config keys"),
    "array size zero": ("grpo:\n  rollout_shards: 0\n", [], r"bad.yaml:2: grpo.rollout_shards: must be >= 1, got 0"),
    "tp does not divide heads": (
        "model:\n  num_heads: 6\n  hidden_size: 96\n  num_kv_heads: 2\nparallel:\n  backend: megatron\n  tp: 4\n",
        [],
        r"bad.yaml:7: parallel.tp: 4 does not divide model.num_heads=6",
    ),
    "kv heads do not divide heads": (
        "model:\n  num_kv_heads: 3\n",
        [],
        r"bad.yaml:2: model.num_kv_heads: model.num_heads=4 is not divisible by 3",
    ),
    "ep does not divide experts": (
        "model:\n  arch: qwen3_moe\n  num_experts: 6\n  experts_per_token: 2\n"
        "parallel:\n  backend: megatron\n  ep: 4\n",
        [],
        r"bad.yaml:7: parallel.ep: 4 must divide model.num_experts=6",
    ),
    "shards do not divide prompts": (
        "grpo:\n  prompts_per_step: 10\n  rollout_shards: 4\n",
        [],
        r"bad.yaml:3: grpo.rollout_shards: grpo.prompts_per_step=10 is not divisible into 4 shards",
    ),
    "unknown task language": (
        "data:\n  languages: [en, xx]\n",
        [],
        r"bad.yaml:2: data.languages: must be a non-empty list of distinct languages from \['en', 'ru'\]",
    ),
    "group of one": ("grpo:\n  group_size: 1\n", [], r"bad.yaml:2: grpo.group_size: must be >= 2"),
    "negative lr": ("reasoning_rl:\n  lr: -0.1\n", [], r"bad.yaml:2: reasoning_rl.lr: must be in \(0, 1\)"),
    "nan": ("grpo:\n  kl_coef: .nan\n", [], r"bad.yaml:2: grpo.kl_coef: expected a finite number"),
    "bad run name": ("name: 'my run:1'\n", [], r"bad.yaml:1: name: run name 'my run:1' must be"),
    "time below signal delay": (
        "launch:\n  signal_delay_s: 120\n  train: {time_min: 1}\n",
        [],
        r"bad.yaml:3: launch.train.time_min: 1 min leaves no time",
    ),
    # Only the other key of a cross-key rule was set: the error points at the line that set it.
    "held-out set below eval's default": (
        "data:\n  heldout_problems: 10\n",
        [],
        r"bad.yaml:2: eval.problems: 100 > data.heldout_problems=10",
    ),
    "max_seq_len below generation length": (
        None,
        ["eval.max_new_tokens=32", "model.max_seq_len=64"],
        r"override 'model.max_seq_len=64': grpo.max_new_tokens: 128 leaves no room",
    ),
    "overlong reward without window": (
        "r1_zero:\n  rewards: {accuracy_math: 1.0, overlong: 0.5}\n",
        [],
        r"bad.yaml:2: r1_zero.rewards.overlong: the soft overlong penalty needs a window: set grpo.overlong_cache > 0",
    ),
    "tp without megatron": (
        "parallel:\n  tp: 2\n",
        [],
        r"bad.yaml:2: parallel.tp: 2 > 1 needs parallel.backend 'megatron', got 'torch'",
    ),
    "gpus not a multiple of tp*pp": (
        "model: {num_heads: 4}\nparallel: {backend: megatron, tp: 4}\nlaunch:\n  train: {gpus_per_node: 6}\n",
        [],
        r"bad.yaml:4: launch.train.gpus_per_node: 6 training GPUs are not a multiple of parallel.tp\*parallel.pp=4",
    ),
    "unknown reward": (
        "rl_all:\n  rewards: {acuracy_math: 1.0}\n",
        [],
        r"bad.yaml:2: rl_all.rewards.acuracy_math: unknown reward .*did you mean .accuracy_math.",
    ),
    "reward model with no general prompts": (
        "rl_all:\n  general_share: 0.0\n",
        [],
        r"bad.yaml:2: rl_all.reward_model_weight: the reward model rates general prompts only .*"
        r"set rl_all.general_share > 0 or the weight to 0",
    ),
    "eval wants more problems than held out": (
        "eval: {problems: 500}\n",
        [],
        r"bad.yaml:1: eval.problems: 500 > data.heldout_problems=100",
    ),
    "override without equals": (None, ["grpo.group_size"], r"override 'grpo.group_size': expected key=value"),
    "override unknown key": (
        None,
        ["grpo.groupsize=4"],
        r"override 'grpo.groupsize=4': unknown key 'grpo.groupsize'; did you mean 'grpo.group_size'",
    ),
    "override wrong type": (
        None,
        ["launch.train.mem_gb=lots"],
        r"override 'launch.train.mem_gb=lots': launch.train.mem_gb: expected a number",
    ),
    "override into a scalar": (None, ["seed.x=1"], r"override 'seed.x=1': seed: expected an integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_error_naming_key_and_source(tmp_path, case):
    text, overrides, pattern = BAD_INPUTS[case]
    path = write(tmp_path, text) if text is not None else None
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    assert __import__("re").search(pattern, message), message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_several_problems_are_all_listed(tmp_path):
    path = write(tmp_path, "grpo:\n  mini_batches: 0\n  group_size: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "2 config errors" in str(info.value)
    assert "bad.yaml:2: grpo.mini_batches" in str(info.value) and "bad.yaml:3: grpo.group_size" in str(info.value)


def test_resolved_config_is_written_once_with_revision(tmp_path):
    cfg = load_config(TINY, [f"runs_dir={tmp_path}", "name=r1"])
    path = write_resolved(cfg, argv=["r1hpc", "run"])
    text = path.read_text()
    assert "code_revision:" in text and "command: r1hpc run" in text
    again = read_run_config(path.parent)
    assert again.grpo == cfg.grpo and again.provenance.code_revision
    # Same config again (a resumed submit) is accepted and leaves the file alone.
    write_resolved(load_config(TINY, [f"runs_dir={tmp_path}", "name=r1"]))
    assert path.read_text() == text
    # A different config for the same run is refused, naming what differs.
    changed = load_config(TINY, [f"runs_dir={tmp_path}", "name=r1", "grpo.group_size=4"])
    with pytest.raises(ConfigError, match=r"grpo.group_size: 8 -> 4"):
        write_resolved(changed)


def test_general_prompts_of_a_step():
    """rl_all's share of general prompts rounds down, but a share > 0 keeps one while a reasoning
    prompt is left (a small step still gives its reward model something to rate)."""
    from r1hpc.config import RLStageConfig

    quarter = RLStageConfig(general_share=0.25)
    assert [quarter.general_prompts(p) for p in (1, 2, 3, 4, 8, 16)] == [0, 1, 1, 1, 2, 4]
    assert RLStageConfig().general_prompts(16) == 0
