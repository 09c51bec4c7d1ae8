"""A released-style checkpoint and dataset files as real Slurm jobs: the shorter form of
tests/test_released_run.py (data, base, one R1-Zero step, eval, report) on the test cluster, with
a Qwen-style checkpoint (no pad, no <think> tokens, ChatML end-of-turn eos) and R1's plain template."""

import json

from released import make_checkpoint, write_datasets

from r1hpc.fsio import read_jsonl
from r1hpc.pipeline import main
from r1hpc.stages.common import read_metrics
from r1hpc.store import RunDir, latest_model


def test_released_checkpoint_and_files_on_slurm(tmp_path, slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    teacher = make_checkpoint(tmp_path / "qwen", "qwen", layers=1)
    files = write_datasets(tmp_path)
    assert (
        main(
            [
                "configs/smoke.yaml",
                f"runs_dir={tmp_path / 'runs'}",
                "name=released",
                "launch.executor=slurm",
                f"model.init_from={teacher}",
                "r1_zero.steps=1",
                "eval.problems=0",
                f"data.train=[{{path: {files['verl']}, preset: verl}}, {{path: {files['openr1']}, preset: openr1}}]",
                f"data.heldout=[{{path: {files['math']}, preset: math, name: math500}}, "
                f"{{path: {files['aime']}, prompt: problem, answer: answer, name: aime24}}]",
                "--stages",
                "data,base,r1_zero,eval,report",
            ]
        )
        == 0
    )
    run_dir = tmp_path / "runs" / "released"
    assert all(r["executor"] == "slurm" for r in read_jsonl(run_dir / "jobs.jsonl"))
    assert latest_model(RunDir(run_dir), "r1_zero", verify="sha256").version == 1
    [step] = read_metrics(run_dir, "r1_zero")
    assert step["gen_logprob_diff_max"] < 1e-3
    summary = json.loads((run_dir / "eval" / "r1_zero.json").read_text())
    # held-out problems sharing a 13-word n-gram with a train problem are dropped (and counted)
    sources = json.loads((run_dir / "data" / "sources_report.json").read_text())
    kept = sum(s["contamination"]["kept"] for s in sources["heldout"])
    assert set(summary["by_source"]) == {"math500", "aime24"} and summary["problems"] == kept == 5
    assert "math500" in (run_dir / "report.md").read_text()
