"""r1hpc.distributed: launch-style detection, Slurm notations, rendezvous errors, a real 2-task group."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from r1hpc.config import load_config
from r1hpc.distributed import (
    detect,
    expand_hostlist,
    init_from_env,
    master_port_for_job,
    parse_tasks_per_node,
    shutdown,
    torchrun_command,
)
from r1hpc.launch import Launcher

# What srun sets in task 6 of 8 (2 nodes x 4 tasks), seen on the test cluster (names) and Slurm's docs.
SRUN_TASK = {
    "SLURM_JOB_ID": "81234",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "6",
    "SLURM_LOCALID": "2",
    "SLURM_NODEID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_STEP_NUM_TASKS": "8",
    "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
    "SLURM_STEP_NODELIST": "gpu[07-08]",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
}
TORCHRUN = {
    "RANK": "3",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1",
    "MASTER_ADDR": "node01",
    "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "none",
}


@pytest.mark.parametrize(
    "hostlist,hosts",
    [
        ("vm", ["vm"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("a1,b[8-11],c", ["a1", "b8", "b9", "b10", "b11", "c"]),
        ("rack[1-2]-n[09-10]", ["rack1-n09", "rack1-n10", "rack2-n09", "rack2-n10"]),
        ("n[1,03,9-10]", ["n1", "n03", "n9", "n10"]),
    ],
)
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize(
    "bad,match",
    [
        ("node[1-", "unbalanced"),
        ("node1]", "unbalanced"),
        ("n[3-1]", "backwards"),
        ("n[a-b]", "bad range"),
        ("", "names no host"),
    ],
)
def test_expand_hostlist_rejects_bad_syntax(bad, match):
    with pytest.raises(ValueError, match=match):
        expand_hostlist(bad)


def test_parse_tasks_per_node():
    assert parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert parse_tasks_per_node("8") == [8]
    with pytest.raises(ValueError, match="bad item 'x'"):
        parse_tasks_per_node("2,x")


def test_master_port_is_a_function_of_job_and_step():
    port = master_port_for_job("81234", "0")
    assert port == master_port_for_job("81234", "0") and 15000 <= port < 30000
    neighbours = {master_port_for_job(str(81234 + d), "0") for d in range(-50, 50)}
    assert len(neighbours) == 100  # consecutive jobs sharing a node never collide
    assert master_port_for_job("81234", "1") != port
    assert master_port_for_job("81234_7") == master_port_for_job("812347")  # array task ids: digits only


def test_detect_srun_task_on_second_node():
    info = detect(SRUN_TASK)
    assert (info.launcher, info.rank, info.world_size, info.local_rank, info.local_world_size, info.node_rank) == (
        "slurm",
        6,
        8,
        2,
        4,
        1,
    )
    assert info.master_addr == "gpu07" and info.master_port == master_port_for_job("81234", "0")
    assert info.slurm_job_id == "81234"
    override = detect({**SRUN_TASK, "MASTER_ADDR": "ib-gpu07", "MASTER_PORT": "23456"})
    assert (override.master_addr, override.master_port) == ("ib-gpu07", 23456)


def test_detect_torchrun_wins_over_the_slurm_task_it_runs_in():
    info = detect({**SRUN_TASK, **TORCHRUN})
    assert (info.launcher, info.rank, info.world_size, info.local_rank, info.node_rank) == ("env", 3, 4, 1, 1)
    assert (info.master_addr, info.master_port, info.slurm_job_id) == ("node01", 29500, "81234")


def test_detect_batch_step_and_plain_process_are_single():
    batch = {k: v for k, v in SRUN_TASK.items() if k not in ("SLURM_STEP_ID",)}  # the sbatch script itself
    assert detect(batch).launcher == "single" and detect(batch).world_size == 1
    assert detect({}).launcher == "single"


def _live_env(monkeypatch, env):
    """This process's environment = env (submitit.JobEnvironment reads os.environ itself)."""
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))] + list(TORCHRUN):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_detect_submitit_local_tasks(monkeypatch):
    """A task of submitit's local executor is read through submitit.JobEnvironment."""
    _live_env(
        monkeypatch,
        {
            "SUBMITIT_EXECUTOR": "local",
            "SUBMITIT_LOCAL_NTASKS": "2",
            "SUBMITIT_LOCAL_GLOBALID": "1",
            "SUBMITIT_LOCAL_LOCALID": "1",
            "SUBMITIT_LOCAL_JOB_ID": "4711",
            "SUBMITIT_LOCAL_NODEID": "0",
            "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        },
    )
    info = detect()
    assert (info.launcher, info.rank, info.world_size, info.local_rank, info.master_addr) == (
        "submitit-local",
        1,
        2,
        1,
        "127.0.0.1",
    )
    assert info.master_port == master_port_for_job("4711")


def test_detect_submitit_slurm_task_agrees_with_plain_srun(monkeypatch):
    """The same srun task seen through submitit.JobEnvironment (a Launcher job) and read by hand (a plain srun)."""
    _live_env(monkeypatch, {**SRUN_TASK, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_NUM_NODES": "2"})
    assert detect() == detect(SRUN_TASK)
    batch_step = {k: v for k, v in SRUN_TASK.items() if k != "SLURM_STEP_ID"}
    _live_env(monkeypatch, {**batch_step, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_NUM_NODES": "2"})
    assert detect().launcher == "single"


@pytest.mark.parametrize(
    "env,match",
    [
        ({**TORCHRUN, "RANK": "x"}, "RANK='x': expected an integer"),
        ({**TORCHRUN, "RANK": "4"}, "rank 4 is outside world size 4"),
        ({**TORCHRUN, "MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
        ({**SRUN_TASK, "SLURM_STEP_NODELIST": "", "SLURM_JOB_NODELIST": ""}, "cannot find the master host"),
    ],
)
def test_detect_rejects_bad_environments(env, match):
    with pytest.raises(ValueError, match=match):
        detect(env)


def test_torchrun_command_for_one_launcher_per_node():
    env = {**SRUN_TASK, "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    argv = torchrun_command(["train.py", "--lr", "1e-4"], 4, env=env, python="python")
    port = master_port_for_job("81234", "0")
    assert argv == [
        "python",
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--node_rank=1",
        "--nproc_per_node=4",
        "--master_addr=gpu07",
        f"--master_port={port}",
        "train.py",
        "--lr",
        "1e-4",
    ]
    with pytest.raises(ValueError, match="one srun task per node"):
        torchrun_command(["train.py"], 4, env=SRUN_TASK)


def test_single_process_group():
    saved = dict(os.environ)  # init_from_env exports RANK etc.; later tests' subprocesses must not inherit them
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID", "SUBMITIT_LOCAL_NTASKS"):
        os.environ.pop(key, None)
    try:
        info = init_from_env(backend="gloo")
        assert (info.launcher, info.world_size, dist.get_world_size()) == ("single", 1, 1)
        x = torch.tensor([2.0])
        dist.all_reduce(x)
        assert x.item() == 2.0
    finally:
        shutdown()
        os.environ.clear()
        os.environ.update(saved)
    assert not dist.is_initialized()


_LONE_RANK = """
import os, sys, time
os.environ.update(RANK=sys.argv[1], WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2],
                  SLURM_JOB_ID="4242")
from r1hpc.distributed import RendezvousError, init_from_env
t0 = time.monotonic()
try:
    init_from_env(timeout_s=2)
except RendezvousError as e:
    print("RENDEZVOUS-ERROR", e, "after %.1f s" % (time.monotonic() - t0))
"""


def test_missing_rank_gives_a_clear_error_within_the_timeout(unused_tcp_port_pair):
    """world_size=2 but only one process starts: rank 0 alone (waits for clients), rank 1 alone
    (no master to reach). Both fail with a message naming address, world size, rank and job."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LONE_RANK, str(rank), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, port in zip((0, 1), unused_tcp_port_pair)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    for rank, port, (out, err) in zip((0, 1), unused_tcp_port_pair, outs):
        assert "RENDEZVOUS-ERROR" in out, err[-2000:]
        assert f"rendezvous 127.0.0.1:{port}" in out and "expected world size 2" in out
        assert f"rank {rank} of world size 2" in out and "Slurm job 4242" in out
    assert "some never connected" in outs[0][0]
    assert "could not reach the master" in outs[1][0]


def test_taken_port_is_named_in_the_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-c", _LONE_RANK, "0", str(port)], capture_output=True, text=True, timeout=60
        )
    assert f"port {port} on 127.0.0.1 is taken" in res.stdout, res.stdout + res.stderr[-2000:]


@pytest.fixture
def unused_tcp_port_pair():
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def test_local_executor_tasks_form_one_group(tmp_path):
    """submitit's local executor with tasks_per_node=2: real processes, one group."""
    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            "name=dl",
            "launch.executor=local",
            "launch.train.tasks_per_node=2",
            "launch.train.time_min=5",
        ],
    )
    sub = Launcher(cfg).submit(
        "smoke", "train", "r1hpc.distributed:allreduce_check", {"timeout_s": 60}, distributed=True
    )
    seen = sub.jobs[0].results()
    assert sorted(s["rank"] for s in seen) == [0, 1], json.dumps(seen)
    assert all(s["launcher"] == "submitit-local" and s["result"] == 1.0 for s in seen)
