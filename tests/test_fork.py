"""`r1hpc fork`: a new run that takes over a finished run's outputs before a stage and runs that stage
and the later ones with other settings (on the session's smoke run, with real jobs)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from r1hpc import recipe
from r1hpc.cli import main as cli_main
from r1hpc.config import ConfigError, load_config, read_run_config, write_resolved
from r1hpc.fork import dropped_stages, fork_run, plan_fork
from r1hpc.store import RunDir, latest_model, list_versions


def _weights(version) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in version.manifest["files"] if f["path"].endswith(".safetensors")}


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_what_a_fork_from_a_stage_runs_again():
    assert dropped_stages("rl_all") == ("rl_all",)
    assert dropped_stages("rl_all,distill_rl") == ("rl_all", "distill_rl")
    assert dropped_stages("reasoning_rl") == ("reasoning_rl", "rejection", "sft", "rl_all", "distill")
    # the student's RL starts from student_base, so it goes with it; the teacher's chain does not
    assert dropped_stages("student_base") == ("student_base", "distill", "distill_rl")
    # the teacher's base: everything but the student's own branch
    assert set(dropped_stages("base")) == set(recipe.names()) - {"data", "student_base", "distill_rl", "eval", "report"}
    for stage in ("data", "eval", "report"):
        with pytest.raises(ConfigError, match=f"--from {stage}: fork from stages after data"):
            dropped_stages(stage)


def test_every_data_file_of_a_run_belongs_to_one_stage(smoke_run_local):
    """A fork leaves out a stage's data files by the table's data_files: a file no stage claims would
    be missing from every fork, one claimed twice would go with the wrong stage."""
    claims = [f for s in recipe.STAGES for f in s.data_files]
    assert len(claims) == len(set(claims))
    assert sorted(p.name for p in (smoke_run_local / "data").iterdir()) == sorted(
        set(claims) - {"sources_report.json"}  # written only for the user's dataset files
    )


def test_fork_from_rl_all_reruns_only_rl_all_with_the_new_setting(smoke_run_local, tmp_path, capsys):
    source_before = _files(smoke_run_local)
    args = ["fork", str(smoke_run_local), "--from", "rl_all", f"runs_dir={tmp_path}", "name=fork", "rl_all.lr=0.05"]
    assert cli_main(args) == 0
    fork = tmp_path / "fork"
    assert f"r1hpc run {fork / 'config.yaml'}" in capsys.readouterr().out
    run = RunDir(fork)
    # rl_all and its eval are gone; what it starts from is there, the published files hard-linked
    assert not (fork / "models" / "rl_all").exists() and not (fork / "rollouts" / "eval-rl_all").exists()
    assert not (fork / "eval" / "rl_all.json").exists() and not (fork / "report.md").exists()
    sft = latest_model(run, "sft", verify="sha256")
    weights = next(sft.path.glob("*.safetensors"))
    assert weights.stat().st_ino == (smoke_run_local / weights.relative_to(fork)).stat().st_ino
    assert (fork / "data" / "sft_reasoning.jsonl").is_file() and (fork / "eval" / "sft.json").is_file()
    assert not (fork / "jobs.jsonl").exists() and not (fork / "leases").exists()
    assert json.loads((fork / "forked_from.json").read_text())["dropped"] == ["rl_all"]
    cfg = read_run_config(fork)
    assert cfg.rl_all.lr == 0.05 and cfg.provenance.command.startswith("r1hpc fork ")

    # Continuing submits rl_all, its eval and the report only: rl_all starts from the kept sft model
    # and, at the new learning rate, ends elsewhere than the source's rl_all.
    assert cli_main(["run", str(fork / "config.yaml")]) == 0
    jobs = [json.loads(line) for line in (fork / "jobs.jsonl").read_text().splitlines()]
    assert {(j["stage"], j.get("model_stage")) for j in jobs} == {
        ("rl_all", None),
        ("eval", "rl_all"),
        ("report", None),
    }
    versions = {v.version: _weights(v) for v in list_versions(run, "rl_all")}
    assert sorted(versions) == list(range(cfg.rl_all.steps + 1))
    assert versions[0] == _weights(sft)
    assert versions[cfg.rl_all.steps] != _weights(latest_model(RunDir(smoke_run_local), "rl_all"))
    report = (fork / "report.md").read_text()
    assert (fork / "eval" / "rl_all.json").is_file() and "| rl_all |" in report
    assert f"Forked from `{smoke_run_local.resolve()}` at rl_all" in report and "this run trained rl_all." in report
    # the source run is untouched: same files, same inodes, not modified
    assert _files(smoke_run_local) == source_before


def test_a_fork_refuses_what_it_cannot_keep(smoke_run_local, tmp_path):
    def refused(stage: str, *overrides: str, source: Path = smoke_run_local) -> str:
        with pytest.raises(ConfigError) as e:
            plan_fork(source, stage, [f"runs_dir={tmp_path}", "name=f", *overrides])
        return str(e.value)

    assert "stages r1_zero, distill_rl are kept" in refused("reasoning_rl", "r1_zero.lr=1e-3")
    assert "fork --from reasoning_rl,r1_zero,distill_rl to change it" in refused("reasoning_rl", "r1_zero.lr=1e-3")
    # which it can: distill_rl spends r1_zero's settings, so both go
    plan = plan_fork(smoke_run_local, "r1_zero,distill_rl", [f"runs_dir={tmp_path}", "name=z", "r1_zero.lr=1e-3"])
    assert plan.kept == ("data", "base", "student_base", "reward_model")
    assert "model.hidden_size: every stage's outputs depend on 'model'" in refused("sft", "model.hidden_size=64")
    assert "data.heldout_problems" in refused("sft", "data.heldout_problems=9")
    assert "prompt.system: every stage's outputs depend on 'prompt'" in refused("rl_all", "prompt.system=Be brief.")
    with pytest.raises(ConfigError, match="the fork's directory exists"):
        plan_fork(smoke_run_local, "sft", [])  # same name and runs_dir: the source itself
    # a kept stage that is not complete in the source: the fork would have to redo it
    partial = tmp_path / "partial" / "smoke"
    shutil.copytree(smoke_run_local, partial)
    os.remove(partial / "config.yaml")
    (partial / "done" / "rejection" / "merge.json").unlink()
    write_resolved(load_config("configs/smoke.yaml", [f"runs_dir={partial.parent}"]))
    assert "stage rejection is not complete there" in refused("rl_all", source=partial)
    # an eval setting changes: no eval is taken over; without the reward model no general-prompt eval
    plan = plan_fork(smoke_run_local, "rl_all", [f"runs_dir={tmp_path}", "name=e", "eval.k=3"])
    assert not plan.keep_evals
    fork = fork_run(plan)
    assert not list((fork / "rollouts").glob("eval*")) and not (fork / "eval").exists()
    plan = plan_fork(smoke_run_local, "reward_model", [f"runs_dir={tmp_path}", "name=r"])
    fork = fork_run(plan)
    assert (fork / "rollouts" / "eval-base").is_dir() and not (fork / "rollouts" / "eval_general-base").exists()
    assert not (fork / "eval" / "base.json").exists()  # its general figures were the old reward model's
