"""The recipe's one table of stages (r1hpc.recipe): everything reads it, so a stage added there is
submitted by the pipeline, evaluated, compared in the report and shown by `r1hpc status`."""

from __future__ import annotations

import ast
from pathlib import Path

from r1hpc import recipe
from r1hpc.pipeline import main
from r1hpc.status import summarize_run
from r1hpc.store import RunDir, latest_model

REPO = Path(__file__).resolve().parents[1]


def test_the_table_is_consistent():
    names = recipe.names()
    assert len(set(names)) == len(names)
    for s in recipe.STAGES:
        assert all(a in names and names.index(a) < names.index(s.name) for a in s.after), s.name
        assert not s.init_from or s.init_from in names, s.name
        assert recipe.sibling(s.target, "x").endswith(":x")
    assert recipe.stage("distill_rl").section == "r1_zero"  # the student's RL spends R1-Zero's budget
    assert ("distill", "distill_rl") in recipe.comparisons()


def test_no_module_keeps_its_own_list_of_stage_names():
    """Outside the table, no tuple/list/set/dict display in r1hpc/ holds two or more stage names."""
    names = set(recipe.names())
    found = []
    for path in (REPO / "r1hpc").rglob("*.py"):
        if path.name == "recipe.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if not isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) or not items:
                continue
            hits = {i.value for i in items if isinstance(i, ast.Constant) and i.value in names}
            if len(hits) >= 2:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {sorted(hits)}")
    assert not found, found


def test_a_stage_added_to_the_table_runs_and_shows(tmp_path, monkeypatch):
    """One entry (and an existing job function): a second R1-Zero run from the base, as a user
    trying another reward mix would add it. The debug executor runs jobs in this process, so the
    extended table is what every job reads."""
    extra = recipe.Stage(
        "r1_zero_b",
        "grpo",
        "r1hpc.stages.grpo:prepare_stage",
        after=("base",),
        init_from="base",
        section="r1_zero",
        evaluated=True,
    )
    i = recipe.names().index("eval")
    monkeypatch.setattr(recipe, "STAGES", recipe.STAGES[:i] + (extra,) + recipe.STAGES[i:])
    assert (
        main(
            [
                str(REPO / "configs" / "smoke.yaml"),
                f"runs_dir={tmp_path}",
                "launch.executor=debug",
                "r1_zero.steps=1",
                "--stages",
                "data,base,r1_zero_b,eval,report",
            ]
        )
        == 0
    )
    run_dir = tmp_path / "smoke"
    assert latest_model(RunDir(run_dir), "r1_zero_b", verify="sha256").version == 1
    assert (run_dir / "eval" / "r1_zero_b.json").is_file()
    report = (run_dir / "report.md").read_text()
    assert "| r1_zero_b |" in report and "r1_zero_b" in report.split("What this")[-1]
    status = summarize_run(run_dir, ask_slurm=False)["stages"]["r1_zero_b"]
    assert status["steps_done"] == status["steps_planned"] == 1
