"""A generation task whose vLLM engine spans 2 processes (engine.tp=2 on CPU) on the test cluster:
one array task of 2 Slurm tasks (srun starts both; rank 0 runs the task, rank 1 serves its
engine), against the 1-process engine's samples and log-probs before and after an in-place reload.
The local-executor version and the failure cases: tests/test_engine_ranks.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_engine_ranks import PROMPTS, check_against, submit, wait_done
from test_stage_template import R1HPC, REPO, TEMPLATE
from tiny_policies import make_policies

from r1hpc.fsio import read_json


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    return make_policies(tmp_path_factory.mktemp("policies"))


def test_two_task_engine_on_slurm_equals_the_one_process_engine(tmp_path, policies, slurm, slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    one = submit(tmp_path / "one", "slurm", 1, policies)
    two = submit(tmp_path / "two", "slurm", 2, policies)
    wait_done(one, 600)
    wait_done(two, 600)
    reference, result = read_json(one.results()[0]), read_json(two.results()[0])
    assert (result["generator"], result["world"]) == ("EngineLeader", 2)
    check_against(result, reference, policies)
    # one Slurm allocation of 2 tasks (1 CPU each): its batch step started both with srun
    rows = slurm.sacct_rows(two.job_id, ["JobID", "NTasks", "AllocCPUS"], allocations=False)
    assert any(row["NTasks"] == "2" and not row["JobID"].endswith(".batch") for row in rows), rows


def test_two_task_engine_through_the_plain_sbatch_template(tmp_path, policies, slurm, slurm_env):
    """slurm/templates/stage.sbatch with SRUN=srun and --engine-workers 2: the processes find each
    other from srun's environment (r1hpc.distributed's `slurm` launch style), not submitit's."""
    out = tmp_path / "samples.json"
    args = [
        "--engine-workers",
        "2",
        "jobfns:engine_generate",
        f"model_dirs={json.dumps([str(p) for p in policies])}",
        f"out={out}",
        "tp=2",
        f"prompts={json.dumps(PROMPTS)}",
    ]
    res = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--ntasks-per-node=2",
            "--cpus-per-task=1",
            "--mem=3G",
            f"--output={tmp_path}/%j.out",
            str(TEMPLATE),
            *args,
        ],
        env={**slurm_env, "R1HPC": R1HPC, "SRUN": "srun", "PYTHONPATH": str(REPO / "tests")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    job = res.stdout.strip().split(";")[0]
    slurm.wait_for_state(job, {"COMPLETED"}, timeout=600)
    result = read_json(out)
    assert (result["generator"], result["world"]) == ("EngineLeader", 2)
    assert result["fixes"] == [["lm_head CPU gemm re-packed"]]
    # rank 0 printed the task's result; rank 1 (the follower) printed none
    printed = (tmp_path / f"{job}.out").read_text()
    assert printed.count(json.dumps(str(out))) == 1, printed[-2000:]
