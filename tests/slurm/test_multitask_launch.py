"""Multi-task jobs on the real test cluster: every srun task joins one process group.

- through r1hpc.launch.Launcher (submitit runs one process per task with srun),
- through the plain sbatch template slurm/templates/train_multinode.sbatch, in both of its launch
  styles (one task per GPU; one torchrun per node),
- and the pure-Python hostlist expansion agrees with `scontrol show hostnames`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1hpc.config import load_config
from r1hpc.distributed import expand_hostlist, master_port_for_job
from r1hpc.launch import Launcher

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "slurm" / "templates" / "train_multinode.sbatch"


def _check_ranks(seen: list[dict], world: int, launcher: str, job_id: str) -> None:
    assert sorted(s["rank"] for s in seen) == list(range(world)), seen
    for s in seen:
        assert s["world_size"] == world and s["launcher"] == launcher
        assert s["result"] == world * (world - 1) / 2  # the all-reduce of every rank's id
        assert s["slurm_job_id"] == job_id
        assert len(s["hosts"]) == world
    assert len({s["master"] for s in seen}) == 1  # all met at one address


def test_launcher_job_with_three_tasks_forms_one_process_group(tmp_path, slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            "name=mt",
            "launch.executor=slurm",
            "launch.train.nodes=1",
            "launch.train.tasks_per_node=3",
            "launch.train.cpus_per_task=1",
            "launch.train.mem_gb=3",
            "launch.train.time_min=5",
        ],
    )
    sub = Launcher(cfg).submit(
        "smoke", "train", "r1hpc.distributed:allreduce_check", {"timeout_s": 90}, distributed=True
    )
    seen = sub.jobs[0].results()  # one result per task (submitit's result() is task 0's only)
    _check_ranks(seen, 3, "slurm", sub.job_id)
    assert seen[0]["master"] == f"{seen[0]['hosts'][0]}:{master_port_for_job(sub.job_id, '0')}"
    assert sorted(s["local_rank"] for s in seen) == [0, 1, 2]


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _sbatch(env: dict, cwd: Path, options: list[str], command: list[str]) -> str:
    """sbatch the template with `command` as its arguments (after the script, where sbatch passes them on)."""
    res = subprocess.run(
        ["sbatch", "--parsable", *options, str(TEMPLATE), *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, f"sbatch failed: {res.stdout}{res.stderr}"
    return res.stdout.strip().split(";")[0]


def test_sbatch_template_both_launch_styles(tmp_path, slurm, slurm_env):
    common = ["--nodes=1", "--gpus-per-node=0", "--cpus-per-task=1", "--mem=3G", "--time=5"]
    tasks = _sbatch(
        slurm_env,
        tmp_path,
        [*common, "--ntasks-per-node=3", f"--output={tmp_path}/tasks.out"],
        [sys.executable, "-u", "-m", "r1hpc.distributed", "check", "--timeout", "90"],
    )
    torchrun = _sbatch(
        {**slurm_env, "LAUNCH": "torchrun", "NPROC_PER_NODE": "2", "PYTHON": sys.executable},
        tmp_path,
        [*common, "--ntasks-per-node=1", f"--output={tmp_path}/torchrun.out"],
        ["-m", "r1hpc.distributed", "check", "--timeout", "90"],
    )
    slurm.wait_for_state(tasks, {"COMPLETED"}, timeout=120)
    slurm.wait_for_state(torchrun, {"COMPLETED"}, timeout=120)
    _check_ranks(_json_lines(tmp_path / "tasks.out"), 3, "slurm", tasks)
    seen = _json_lines(tmp_path / "torchrun.out")
    _check_ranks(seen, 2, "env", torchrun)  # torchrun's variables win over its task's SLURM_* ones
    assert all(s["master"].endswith(f":{master_port_for_job(torchrun, '0')}") for s in seen)


@pytest.mark.parametrize(
    "hostlist", ["vm", "node[01-03,07]", "a1,b[8-11],c", "rack[1-2]-n[09-10]", "gpu[098-101],login", "n[1,03,8-10]"]
)
def test_hostlist_expansion_matches_scontrol(slurm, hostlist):
    assert expand_hostlist(hostlist) == slurm.cmd(["scontrol", "show", "hostnames", hostlist]).split()
