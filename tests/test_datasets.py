"""r1hpc.datasets: the user's problem files (jsonl, json, parquet, save_to_disk) as the run's problems."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from r1hpc.config import Config, ConfigError, DataConfig, DataSource, load_config, write_resolved
from r1hpc.datasets import load_problems, normalise_answer, source_problems
from r1hpc.tasks.dataset import read_jsonl, write_jsonl

REQUIRED = {
    "id": str,
    "prompt": str,
    "answer": str,
    "difficulty": int,
    "kind": str,
    "solution_steps": list,
    "data_source": str,
}


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_with(train: list[DataSource], heldout: list[DataSource], seed: int = 0, ngram: int = 13) -> Config:
    return dataclasses.replace(Config(), seed=seed, data=DataConfig(train=train, heldout=heldout, decontam_ngram=ngram))


def check_schema(records: list[dict]) -> None:
    for r in records:
        for key, typ in REQUIRED.items():
            assert isinstance(r[key], typ), (key, r)
        assert r["difficulty"] == 0 and r["kind"] in ("math", "code")


def questions(n: int, stem: str = "what is") -> list[dict]:
    return [{"q": f"{stem} {i} plus {i}?", "a": str(2 * i)} for i in range(n)]


def plain(path: Path, **kw) -> DataSource:
    return DataSource(path=str(path), prompt="q", answer="a", **kw)


# ---------------------------------------------------------------- formats and presets


def test_jsonl_string_prompts(tmp_path):
    src = write_lines(tmp_path / "mine.jsonl", questions(3) + [{"q": "  spaced  ", "a": 7}])
    held = write_lines(tmp_path / "held.jsonl", questions(3) + [{"q": "new one", "a": "1"}])
    train, heldout, report = load_problems(cfg_with([plain(src)], [plain(held, name="bench")], ngram=0))
    check_schema(train)
    assert [r["answer"] for r in train] == ["0", "2", "4", "7"]
    assert train[3]["prompt"] == "spaced" and "messages" not in train[0]
    assert train[0]["data_source"] == "mine" and train[0]["id"].startswith("mine-")
    assert report["train"][0] | {"rows": 4, "used": 4, "duplicates_dropped": 0} == report["train"][0]
    assert [r["data_source"] for r in heldout] == ["bench"]
    assert report["heldout"][0]["contamination"] == {"exact": 3, "ngram": 0, "kept": 1}
    with pytest.raises(ValueError, match=r"^data\.heldout: no problems left"):
        load_problems(cfg_with([plain(src)], [plain(src)]))


def test_verl_parquet(tmp_path):
    import pandas as pd

    rows = [
        {
            "data_source": "openai/gsm8k",
            "ability": "math",
            "prompt": [
                {"role": "system", "content": "Reason step by step."},
                {"role": "user", "content": f"Tom has {i} apples. How many?"},
            ],
            "reward_model": {"ground_truth": str(i), "style": "rule"},
            "extra_info": {"index": i, "split": "train"},
        }
        for i in range(5)
    ]
    path = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(path)
    train, _, _ = load_problems(
        cfg_with(
            [DataSource(path=str(path), preset="verl")], [plain(write_lines(tmp_path / "h.jsonl", questions(2, "zzz")))]
        )
    )
    check_schema(train)
    assert train[2]["prompt"] == "Tom has 2 apples. How many?" and train[2]["answer"] == "2"
    assert train[2]["messages"][0] == {"role": "system", "content": "Reason step by step."}
    assert train[2]["data_source"] == "openai/gsm8k" and train[2]["id"].startswith("openai/gsm8k-")


def test_openr1_math_and_gsm8k(tmp_path):
    openr1 = write_lines(
        tmp_path / "openr1.jsonl",
        [
            {"problem": "Half of one?", "solution": "We halve: $\\boxed{\\frac{1}{2}}$.", "prompt": "ignored"},
            {"problem": "Two and two?", "solution": "4"},
        ],
    )
    gsm = write_lines(
        tmp_path / "gsm.jsonl", [{"question": "Big sum?", "answer": "1000+250=<<1000+250=1250>>\n#### 1,250"}]
    )
    math_ = write_lines(
        tmp_path / "math.jsonl",
        [{"problem": "Nested?", "solution": "$\\boxed{2}$ no, \\fbox{x^{2}}", "level": "Level 5", "type": "Algebra"}],
    )
    cfg = cfg_with(
        [DataSource(path=str(openr1), preset="openr1"), DataSource(path=str(gsm), preset="gsm8k")],
        [DataSource(path=str(math_), preset="math")],
    )
    train, heldout, _ = load_problems(cfg)
    assert [r["answer"] for r in train] == ["\\frac{1}{2}", "4", "1250"]
    assert train[0]["solution_steps"] == ["We halve: $\\boxed{\\frac{1}{2}}$."] and train[1]["solution_steps"] == []
    assert train[2]["solution_steps"] == ["1000+250=<<1000+250=1250>>"]
    assert heldout[0]["answer"] == "x^{2}"


@pytest.mark.parametrize(
    "value, fmt, want",
    [
        ("\\boxed{3} then \\boxed{\\sqrt{2}}", "auto", "\\sqrt{2}"),
        ("x\n#### 12,345,678", "auto", "12345678"),
        (" 7 ", "raw", "7"),
        (3, "auto", "3"),
        (2.5, "raw", "2.5"),
        ("#### 1,25", "gsm8k", "1,25"),
    ],
)
def test_normalise_answer(value, fmt, want):
    assert normalise_answer(value, fmt)[0] == want


def test_save_to_disk_dict_and_code_tests(tmp_path):
    import datasets

    rows = {
        "q": ["Echo the input.", "Add one."],
        "a": ["", ""],
        "t": [json.dumps([{"input": "hi\n", "output": "hi\n"}]), [{"input": "1\n", "output": "2\n"}]],
    }
    rows["t"][1] = json.dumps(rows["t"][1])
    test = {"q": ["Shout it."], "a": ["x"], "t": [json.dumps([{"input": "a", "output": "A"}])]}
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "test": datasets.Dataset.from_dict(test)})
    dd.save_to_disk(str(tmp_path / "saved"))
    src = DataSource(path=str(tmp_path / "saved"), prompt="q", answer="a", tests="t")
    train, heldout, _ = load_problems(cfg_with([src], [dataclasses.replace(src, split="test", language="")]))
    check_schema(train)
    assert [r["kind"] for r in train] == ["code", "code"] and train[1]["tests"] == [{"input": "1\n", "output": "2\n"}]
    assert heldout[0]["prompt"] == "Shout it." and heldout[0]["answer"] == "x"
    # optional columns: choices and language
    mc = write_lines(tmp_path / "mc.jsonl", [{"q": "Pick", "a": "B", "c": ["1", "2"], "lang": "en"}])
    train, _, _ = load_problems(cfg_with([plain(mc, choices="c", language="lang")], [dataclasses.replace(src)]))
    assert train[0]["choices"] == ["1", "2"] and train[0]["language"] == "en"


def test_records_pass_read_jsonl(tmp_path):
    src = write_lines(tmp_path / "m.jsonl", [{"q": [{"role": "user", "content": "Hi?"}], "a": 1, "t": None}])
    held = write_lines(tmp_path / "h.jsonl", questions(1))
    train, _, _ = load_problems(cfg_with([plain(src, tests="t")], [plain(held)]))
    write_jsonl(tmp_path / "out.jsonl", train)
    assert read_jsonl(tmp_path / "out.jsonl") == train


# ---------------------------------------------------------------- mixture and decontamination


def test_mixture_counts_duplicates_and_determinism(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", questions(10) + questions(2))  # 2 exact duplicate rows
    b = write_lines(tmp_path / "b.jsonl", questions(10, "how much is"))
    c = write_lines(tmp_path / "c.jsonl", questions(10, "compute"))
    h = write_lines(tmp_path / "h.jsonl", questions(3, "zzz"))
    cfg = cfg_with([plain(a, samples=4), plain(b, weight=2.5), plain(c, weight=0.3)], [plain(h)], seed=3)
    train, _, report = load_problems(cfg)
    assert [s["used"] for s in report["train"]] == [4, 25, 3] and len(train) == 32
    assert report["train"][0]["duplicates_dropped"] == 2 and report["train"][0]["rows"] == 12
    from_b = [r["prompt"] for r in train if r["data_source"] == "b"]
    assert all(from_b.count(p) in (2, 3) for p in set(from_b)) and len(set(from_b)) == 10
    assert load_problems(cfg)[0] == train
    other = load_problems(dataclasses.replace(cfg, seed=4))[0]
    assert [r["prompt"] for r in other] != [r["prompt"] for r in train]


def test_decontamination_exact_and_ngram(tmp_path):
    train_src = write_lines(
        tmp_path / "t.jsonl",
        [
            {"q": "Natalia sold clips to 48 of her friends in April, and then half as many in May.", "a": "72"},
            {"q": "What is 2 + 2?", "a": "4"},
        ],
    )
    held = write_lines(
        tmp_path / "bench.jsonl",
        [
            {"q": "  what IS 2 +   2? ", "a": "4"},  # exact after normalising
            {"q": "Bob: Natalia sold clips to 48 of her friends in April, and then some.", "a": "1"},  # 8-gram
            {"q": "A fresh question about trains.", "a": "3"},
        ],
    )
    _, heldout, report = load_problems(cfg_with([plain(train_src)], [plain(held)], ngram=8))
    assert [r["prompt"] for r in heldout] == ["A fresh question about trains."]
    assert report["heldout"][0]["contamination"] == {"exact": 1, "ngram": 1, "kept": 1}
    _, heldout, report = load_problems(cfg_with([plain(train_src)], [plain(held)], ngram=0))
    assert report["heldout"][0]["contamination"] == {"exact": 1, "ngram": 0, "kept": 2} and len(heldout) == 2


# ---------------------------------------------------------------- bad inputs


def _bad(tmp_path: Path, case: str) -> tuple[list[DataSource], str]:
    """(train sources, text the error must contain) for one bad input."""
    good = write_lines(tmp_path / "good.jsonl", questions(3))
    f = tmp_path / "bad.jsonl"
    if case == "missing file":
        return [plain(tmp_path / "nope.jsonl")], f"{tmp_path / 'nope.jsonl'}: no such file"
    if case == "empty file":
        f.write_text("\n")
        return [plain(f)], f"{f}: empty (0 rows)"
    if case == "not json":
        f.write_text('{"q": "a", "a": "1"}\n{"q": oops}\n')
        return [plain(f)], f"{f}:2: not a JSON line"
    if case == "missing column":
        return [
            DataSource(path=str(good), prompt="q", answer="solution")
        ], f"{good}: no column 'solution' (data.train[0].answer); columns: q, a"
    if case == "no prompt key":
        return [DataSource(path=str(good), answer="a")], "data.train[0].prompt: no prompt column given"
    if case == "unbalanced boxed":
        write_lines(f, questions(2) + [{"q": "x", "a": "so \\boxed{\\frac{1}{2}"}])
        return [plain(f)], f"{f}: row 3: answer column 'a' has no complete \\boxed{{...}} (answer_format boxed)"
    if case == "no boxed":
        write_lines(f, [{"q": "x", "a": "just words"}])
        return [plain(f, answer_format="boxed")], f"{f}: row 1: answer column 'a' has no complete \\boxed"
    if case == "gsm8k without ####":
        write_lines(f, [{"question": "x", "answer": "42"}])
        return [DataSource(path=str(f), preset="gsm8k")], f"{f}: row 1: answer column 'answer' has no '####"
    if case == "empty answer":
        write_lines(f, [{"q": "x", "a": "1"}, {"q": "y", "a": "   "}])
        return [plain(f)], f"{f}: row 2: answer column 'a' is empty"
    if case == "empty prompt":
        write_lines(f, [{"q": "", "a": "1"}])
        return [plain(f)], f"{f}: row 1: prompt column 'q' is empty"
    if case == "prompt not text":
        write_lines(f, [{"q": {"text": "x"}, "a": "1"}])
        return [plain(f)], f"{f}: row 1: prompt column 'q' should be a string or a list of chat messages"
    if case == "bad tests":
        write_lines(f, [{"q": "x", "a": "1", "t": [{"input": "1"}]}])
        return [plain(f, tests="t")], f"{f}: row 1: tests column 't' test 0 should be a dict with str 'input'"
    if case == "unknown split":
        import datasets

        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"q": ["x"], "a": ["1"]})}).save_to_disk(str(f))
        return [plain(f, split="validation")], f"{f}: no split 'validation' (data.train[0].split); splits: train"
    if case == "too few rows":
        return [plain(good, samples=5)], f"data.train[0].samples: 5 asked, but {good} has 3 unique rows"
    if case == "unknown suffix":
        (tmp_path / "d.csv").write_text("q,a\n")
        return [plain(tmp_path / "d.csv")], f"{tmp_path / 'd.csv'}: unknown file type '.csv' (data.train[0].path)"
    raise AssertionError(case)


BAD_CASES = [
    "missing file",
    "empty file",
    "not json",
    "missing column",
    "no prompt key",
    "unbalanced boxed",
    "no boxed",
    "gsm8k without ####",
    "empty answer",
    "empty prompt",
    "prompt not text",
    "bad tests",
    "unknown split",
    "too few rows",
    "unknown suffix",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_file_row_or_key(tmp_path, case):
    train, want = _bad(tmp_path, case)
    held = plain(write_lines(tmp_path / "held.jsonl", questions(2, "zzz")))
    cfg = cfg_with(train, [held])
    with pytest.raises(ValueError) as err:
        load_problems(cfg)
    assert want in str(err.value) and "\n" not in str(err.value)
    assert source_problems(cfg) == [str(err.value)]  # the submit-time check: the same line, no raise


def test_source_problems_lists_every_source_and_counts(tmp_path):
    good = write_lines(tmp_path / "good.jsonl", questions(3))
    cfg = cfg_with([plain(tmp_path / "x.jsonl"), plain(good)], [plain(tmp_path / "y.parquet")])
    problems = source_problems(cfg)
    assert len(problems) == 2 and "x.jsonl" in problems[0] and "y.parquet" in problems[1]
    held = write_lines(tmp_path / "h.jsonl", questions(2, "zzz"))
    cfg = dataclasses.replace(cfg_with([plain(good)], [plain(held)]))
    cfg = dataclasses.replace(
        cfg, eval=dataclasses.replace(cfg.eval, problems=5), rejection=dataclasses.replace(cfg.rejection, prompts=2)
    )
    assert source_problems(cfg) == [
        "eval.problems: 5 > the 2 held-out problems of data.heldout (after decontamination); 0 takes them all"
    ]
    assert source_problems(Config()) == []


# ---------------------------------------------------------------- config and the data stage


def test_config_needs_heldout_with_train(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  train:\n    - {{path: {tmp_path}/t.jsonl, prompt: q, answer: a}}\n")
    with pytest.raises(ConfigError, match=r"data\.heldout: data\.train is given"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"eval\.problems: must be >= 0"):
        load_config(None, ["eval.problems=-1"])


def test_prepare_data_reads_the_sources(tmp_path):
    from r1hpc.stages.base import prepare_data

    train = write_lines(tmp_path / "train.jsonl", questions(12))
    held = write_lines(tmp_path / "bench.jsonl", questions(2) + questions(4, "zzz"))  # 2 contaminated
    path = tmp_path / "run.yaml"
    path.write_text(f"""name: files
runs_dir: {tmp_path / "runs"}
data:
  decontam_ngram: 0
  general_train: 5
  general_heldout: 5
  train:
    - {{path: {train}, prompt: q, answer: a, weight: 2.0}}
  heldout:
    - path: {held}
      prompt: q
      answer: a
      name: bench
eval: {{problems: 0}}
rejection: {{prompts: 4}}
base: {{tokenizer_vocab: 300, corpus_docs: 200}}
""")
    cfg = load_config(path)
    assert cfg.data.heldout[0].name == "bench" and cfg.eval.problems == 0
    run_dir = write_resolved(cfg, argv=["test"]).parent
    info = prepare_data(str(run_dir))
    assert info["counts"]["problems_train"] == 24 and info["counts"]["problems_heldout"] == 4
    assert info["sources"]["heldout"][0]["contamination"] == {"exact": 2, "ngram": 0, "kept": 4}
    report = json.loads((run_dir / "data" / "sources_report.json").read_text())
    assert report["train"][0]["used"] == 24 and report["heldout_problems"] == 4
    heldout = read_jsonl(run_dir / "data" / "problems_heldout.jsonl")
    assert {r["data_source"] for r in heldout} == {"bench"}
    assert prepare_data(str(run_dir)) == info  # idempotent
