"""Custom rewards by import path (rewards.custom): loaded only inside the isolated worker pool,
scored beside the built-ins, checked at submit time with one line per problem."""

from __future__ import annotations

import pickle
import re
import sys
import textwrap
from pathlib import Path

import pytest

from r1hpc.config import Config, ConfigError, load_config
from r1hpc.rewards import REWARD_FUNCS
from r1hpc.rewards.custom import CustomReward, custom_reward_problems, module_name_for, parse_spec, reward_table
from r1hpc.rewards.isolation import WorkerPool
from r1hpc.rewards.scorer import score_batch

MODULE = "r1hpc_test_custom_rewards_mod"

MODULE_SRC = """
def answer_len(completion, example):
    return len(example["answer"]) / 10

def boom(completion, example):
    raise ValueError("custom reward exploded")
"""

FILE_SRC = """
def mentions_answer(completion, example):
    return 1.0 if "<answer>" in completion else 0.0

def maybe(completion, example):
    return None
"""


def write(path: Path, src: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(src))
    return path


def test_parse_spec_module_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = parse_spec("pkg.mod:fn")
    assert (m.kind, m.target, m.attr) == ("module", "pkg.mod", "fn")
    f = parse_spec("sub/r.py:Cls.fn")
    assert (f.kind, f.target, f.attr) == ("file", str(tmp_path / "sub" / "r.py"), "Cls.fn")
    assert module_name_for(f.target) == module_name_for(str(tmp_path / "sub" / "r.py"))
    assert module_name_for(f.target) != module_name_for(str(tmp_path / "r.py"))
    for bad in ("nocolon", ":fn", "pkg.mod:", "pkg-mod:fn", "dir/mod:fn", "pkg:1fn"):
        with pytest.raises(ValueError, match="expected 'package.module:function' or 'path/to/file.py:function'"):
            parse_spec(bad)


def test_module_and_file_rewards_scored_in_pool_beside_builtin(tmp_path, monkeypatch):
    write(tmp_path / "mods" / f"{MODULE}.py", MODULE_SRC)
    write(tmp_path / "rewards_file.py", FILE_SRC)
    # Workers get the parent's sys.path when they start (forkserver sends it with each new process),
    # so no PYTHONPATH is needed here; a job needs the module importable on its own sys.path.
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.chdir(tmp_path)  # the file spec below is relative to the current directory
    table = reward_table(
        {
            "alen": f"{MODULE}:answer_len",
            "mention": "rewards_file.py:mentions_answer",
            "maybe": "rewards_file.py:maybe",
            "boom": f"{MODULE}:boom",
        }
    )
    assert set(REWARD_FUNCS) < set(table)
    assert isinstance(table["mention"], CustomReward) and table["mention"].spec.target == str(
        tmp_path / "rewards_file.py"
    )
    pickle.loads(pickle.dumps(table["mention"]))  # sent to workers by reference
    monkeypatch.chdir("/")  # resolved at table time: the workers' directory no longer matters

    completions = ["<think>a</think><answer>12</answer>", "no tags at all"]
    examples = [{"prompt": "q", "answer": "12"}, {"prompt": "q", "answer": "12345"}]
    with WorkerPool(2, item_timeout_s=5.0, memory_limit_bytes=1024**3) as pool:
        res = score_batch(
            completions,
            examples,
            {"format": 1.0, "alen": 2.0, "mention": 0.5, "maybe": 1.0, "boom": 1.0},
            pool=pool,
            reward_funcs=table,
            progress=False,
        )
    assert res.values["alen"] == [0.2, 0.5]
    assert res.values["mention"] == [1.0, 0.0]
    assert res.statuses["maybe"] == ["not_applicable"] * 2
    assert res.values["format"] == [1.0, 0.0]
    # A custom reward that raises at scoring time is counted as an error and scores 0: the run goes on.
    assert res.statuses["boom"] == ["error", "error"] and res.values["boom"] == [0.0, 0.0]
    assert res.counts["boom"]["error"] == 2 and "ValueError: custom reward exploded" in res.messages["boom"][0]
    assert res.totals == pytest.approx([1.0 + 0.4 + 0.5, 1.0])
    # User code ran only in the workers, never in this process.
    assert MODULE not in sys.modules
    assert module_name_for(str(tmp_path / "rewards_file.py")) not in sys.modules


def test_custom_reward_may_not_shadow_a_builtin():
    with pytest.raises(ValueError, match=r"rewards.custom.format: shadows the built-in reward 'format'"):
        reward_table({"format": "x.y:z"})
    cfg = Config()
    cfg.rewards.custom = {"format": "x.y:z"}
    assert custom_reward_problems(cfg) == [
        "rewards.custom.format: shadows the built-in reward 'format'; choose another name"
    ]


BAD_SRC = """
import time
NOT_CALLABLE = 3

def one_arg(completion):
    return 1.0

def kw_only(*, completion, example):
    return 1.0

def raises(completion, example):
    raise ValueError("bad " + example["answer"])

def returns_str(completion, example):
    return "abc"

def returns_nan(completion, example):
    return float("nan")

def sleeps(completion, example):
    time.sleep(30)

def good(completion, example, extra=None):
    return 1.0 if example["answer"] in completion else 0.0
"""

# reward name -> (spec, regex its one line must match after "rewards.custom.<name>: "); None: no problem
BAD_SPECS = {
    "no_colon": (
        "bad_rewards.py",
        r"'bad_rewards.py' has no ':'; expected 'package.module:function' or 'path/to/file.py:function'",
    ),
    "no_module": (
        "r1hpc_no_such_module_xyz:f",
        r"r1hpc_no_such_module_xyz does not import: ModuleNotFoundError: No module named 'r1hpc_no_such_module_xyz'",
    ),
    "no_file": ("missing.py:f", r"file .*/missing.py does not exist"),
    "import_error": ("broken.py:f", r".*/broken.py does not import: RuntimeError: broken at import"),
    "no_attr": (
        "bad_rewards.py:nope",
        r".*/bad_rewards.py has no attribute 'nope'; expected a function \(completion, example\)",
    ),
    "not_callable": (
        "bad_rewards.py:NOT_CALLABLE",
        r".*bad_rewards.py:NOT_CALLABLE is a int, not callable; expected a function",
    ),
    "one_arg": (
        "bad_rewards.py:one_arg",
        r".*:one_arg has signature \(completion\), which cannot take two positional arguments "
        r".*expected \(completion, example\)",
    ),
    "kw_only": (
        "bad_rewards.py:kw_only",
        r".*:kw_only has signature \(\*, completion, example\), which cannot take two positional arguments",
    ),
    "raises": ("bad_rewards.py:raises", r"trial call raised ValueError: bad 1 at .*bad_rewards.py:\d+"),
    "returns_str": ("bad_rewards.py:returns_str", r"trial call returned 'abc' \(expected a finite number or None\)"),
    "returns_nan": ("bad_rewards.py:returns_nan", r"trial call returned nan \(expected a finite number or None\)"),
    "sleeps": (
        "bad_rewards.py:sleeps",
        r"trial call timed out \(killed after .* s \(limit 1.0 s\); rewards.timeout_s=1.0, rewards.memory_mb=512\)",
    ),
    "good": ("bad_rewards.py:good", None),
}


def test_each_bad_custom_reward_gives_one_line_naming_its_key(tmp_path, monkeypatch):
    write(tmp_path / "bad_rewards.py", BAD_SRC)
    write(tmp_path / "broken.py", 'raise RuntimeError("broken at import")\n')
    monkeypatch.chdir(tmp_path)
    cfg = Config()
    cfg.rewards.custom = {name: spec for name, (spec, _) in BAD_SPECS.items()}
    cfg.rewards.timeout_s = 1.0
    cfg.rewards.memory_mb = 512
    problems = custom_reward_problems(cfg)
    expected = [name for name, (_, pattern) in BAD_SPECS.items() if pattern]
    assert [p.split(":", 1)[0] for p in problems] == [f"rewards.custom.{n}" for n in expected], problems
    for name, line in zip(expected, problems):
        assert "\n" not in line
        assert re.match(rf"rewards\.custom\.{name}: {BAD_SPECS[name][1]}", line), line
    assert module_name_for(str(tmp_path / "bad_rewards.py")) not in sys.modules  # checked in workers only


def test_input_problems_includes_custom_reward_problems(tmp_path, monkeypatch):
    pytest.importorskip("r1hpc.model.checkpoint")
    from r1hpc.inputs import input_problems

    cfg = Config()
    cfg.rewards.custom = {"mine": "nocolon"}
    assert any(p.startswith("rewards.custom.mine: 'nocolon' has no ':'") for p in input_problems(cfg))


def test_config_accepts_custom_reward_names_in_stage_rewards(tmp_path):
    write(tmp_path / "my_reward.py", FILE_SRC)
    good = tmp_path / "good.yaml"
    good.write_text(
        "rewards:\n  custom: {mention: my_reward.py:mentions_answer}\n"
        "r1_zero:\n  rewards: {accuracy_math: 1.0, mention: 0.5}\n"
    )
    cfg = load_config(good)
    assert cfg.r1_zero.rewards == {"accuracy_math": 1.0, "mention": 0.5}
    assert cfg.rewards.custom == {"mention": "my_reward.py:mentions_answer"}  # kept as written

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rewards:\n  custom: {mention: my_reward.py:mentions_answer}\n"
        "r1_zero:\n  rewards: {accuracy_math: 1.0, mentoin: 0.5}\n"
    )
    with pytest.raises(ConfigError, match=r"r1_zero.rewards.mentoin: unknown reward 'mentoin'; did you mean 'mention'"):
        load_config(bad)

    shadow = tmp_path / "shadow.yaml"
    shadow.write_text("rewards:\n  custom: {format: my_reward.py:mentions_answer}\n")
    with pytest.raises(ConfigError, match=r"rewards.custom.format: shadows the built-in reward 'format'"):
        load_config(shadow)
