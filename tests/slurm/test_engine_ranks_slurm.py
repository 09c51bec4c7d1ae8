"""A generation task whose vLLM engine spans 2 processes (engine.tp=2 on CPU) on the test cluster:
one array task of 2 Slurm tasks (srun starts both; rank 0 runs the task, rank 1 serves its
engine), against the 1-process engine's samples and log-probs before and after an in-place reload.
The local-executor version and the failure cases: tests/test_engine_ranks.py."""

from __future__ import annotations

import pytest
from test_engine_ranks import check_against, submit, wait_done
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
