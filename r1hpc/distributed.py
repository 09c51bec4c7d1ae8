"""torch.distributed process-group setup from whatever launched this process.

    info = init_from_env()          # in every rank of a job
    ...                             # torch.distributed collectives, DeepSpeed, Megatron
    shutdown()

Launch styles understood (checked in this order; `detect()` is the pure part, unit-tested):

- `env`: torchrun (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
  LOCAL_RANK / LOCAL_WORLD_SIZE when present). torchrun started inside a Slurm job still has the
  SLURM_* variables of its own task, so this must win over `slurm`.
- a task submitit started (r1hpc.launch's jobs): rank, world, local rank, node and hosts come
  from `submitit.JobEnvironment` -- launcher `slurm` for its Slurm executor (the master is its
  first host), `submitit-local` for its local executor (tests, laptops; master 127.0.0.1).
- `slurm`: a plain `srun` (slurm/templates/train_multinode.sbatch), which submitit knows nothing
  of. Rank = SLURM_PROCID, world = SLURM_STEP_NUM_TASKS (SLURM_NTASKS), local rank =
  SLURM_LOCALID; the master is the first host of SLURM_STEP_NODELIST (SLURM_JOB_NODELIST),
  expanded in Python (no `scontrol` needed inside containers).
- `single`: anything else, including the batch step of an sbatch script (which has SLURM_NTASKS
  of the whole allocation but is ONE process: only `srun` starts the other tasks).

The port (both Slurm styles) is derived from the job AND step id, so concurrent jobs or steps on
one node do not collide; submitit's `helpers.TorchDistributedEnvironment` is not used for it: its
port is a function of the job id only, drawn from 20000-60000 (Linux's ephemeral range starts at
32768), and its export() refuses to run when RANK etc. are already set. MASTER_ADDR / MASTER_PORT
set by the user (e.g. exported in the sbatch script) take precedence.

A world of one gets a process group on an in-memory store, so code that calls collectives needs
no special case. The rendezvous variables are exported to os.environ afterwards, so libraries that
read them (DeepSpeed, accelerate) agree with this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import submitit
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "RendezvousError",
    "detect",
    "init_from_env",
    "shutdown",
    "expand_hostlist",
    "parse_tasks_per_node",
    "master_port_for_job",
    "torchrun_command",
    "die_with_parent",
    "allreduce_check",
]

Launcher = Literal["env", "slurm", "submitit-local", "single"]

# Below Linux's ephemeral range (32768-60999), so a derived port is not taken by some outgoing
# connection; above the usual service ports.
PORT_BASE, PORT_SPAN = 15000, 15000

# Set with setdefault (a user's own setting wins). Why each:
NCCL_DEFAULTS = {
    # On a collective error or timeout, abort the communicators and kill the process (what
    # torchrun sets too): Slurm then sees the job fail instead of every rank hanging until the
    # time limit burns the allocation.
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    # Flight recorder: keep the last 2000 collectives per rank and dump them on a timeout, so a
    # hang can be attributed to the rank/collective that did not arrive (torch's fr_trace tool).
    "TORCH_NCCL_TRACE_BUFFER_SIZE": "2000",
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
    # NCCL's own warnings (e.g. a fallback from InfiniBand to sockets) reach the job log.
    "NCCL_DEBUG": "WARN",
}


class RendezvousError(RuntimeError):
    """The ranks of a job did not all meet (timeout, unreachable master, port taken)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. `device` is cuda:<i> under nccl, else cpu."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    launcher: Launcher
    job_id: str = ""  # what the port is derived from (Slurm job id, submitit local pid)
    slurm_job_id: str = ""  # SLURM_JOB_ID in any launch style ("" outside Slurm)
    backend: str = ""
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        job = f"Slurm job {self.slurm_job_id}" if self.slurm_job_id else "not in a Slurm job"
        return (
            f"rank {self.rank} of world size {self.world_size} (local rank {self.local_rank}, node {self.node_rank}), "
            f"rendezvous {self.master_addr}:{self.master_port}, {self.launcher} launch, {job}"
        )


# --- Slurm's compact notations ---------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside [...]."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"hostlist {text!r}: unbalanced ']'")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ValueError(f"hostlist {text!r}: unbalanced '['")
    parts.append("".join(cur))
    return parts


def _expand_bracket(body: str, where: str) -> list[str]:
    """`01-03,07` -> ['01', '02', '03', '07'] (zero padding kept, as Slurm does)."""
    out = []
    for item in body.split(","):
        m = _RANGE.match(item.strip())
        if not m:
            raise ValueError(f"hostlist {where!r}: bad range {item!r} (expected N or N-M)")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"hostlist {where!r}: range {item!r} runs backwards")
        width = len(lo)
        out += [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    return out


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand Slurm's hostlist syntax, as `scontrol show hostnames` does.

    `node[01-03,07],gpu5` -> node01 node02 node03 node07 gpu5; several brackets in one name give
    their product in order (`r[1-2]n[1-2]` -> r1n1 r1n2 r2n1 r2n2).
    """
    hosts: list[str] = []
    for part in _split_top_level(hostlist.strip()):
        if not part:
            continue
        pieces = re.split(r"\[([^\]]*)\]", part)  # literal, bracket, literal, bracket, ..., literal
        choices = [[p] if i % 2 == 0 else _expand_bracket(p, hostlist) for i, p in enumerate(pieces)]
        hosts += ["".join(combo) for combo in itertools.product(*choices)]
    if not hosts:
        raise ValueError(f"hostlist {hostlist!r} names no host")
    return hosts


def parse_tasks_per_node(spec: str) -> list[int]:
    """SLURM_TASKS_PER_NODE syntax: `2(x3),1` -> [2, 2, 2, 1]."""
    out: list[int] = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if not m:
            raise ValueError(f"tasks-per-node spec {spec!r}: bad item {item!r} (expected N or N(xM))")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def master_port_for_job(job_id: str, step_id: str = "") -> int:
    """A port in [15000, 30000) that is a function of (job id, step id) only.

    Every rank of the job computes the same one without talking to the others. Equal steps of jobs
    whose ids differ by less than 15000 get different ports (101 is coprime with the span), and so
    do the first 101 steps of one job. Collisions left are rare; MASTER_PORT overrides.
    """
    digits = re.sub(r"\D", "", job_id)
    if not digits:
        raise ValueError(f"job id {job_id!r} has no digits to derive a port from")
    step = int(step_id) if step_id.isdigit() else 0
    return PORT_BASE + (int(digits) * 101 + step) % PORT_SPAN


# --- detection (pure) ------------------------------------------------------------------------


def _int(env: Mapping[str, str], key: str) -> int:
    value = env.get(key, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r}: expected an integer") from None


def _port(env: Mapping[str, str], job_id: str, step_id: str) -> int:
    if env.get("MASTER_PORT"):
        port = _int(env, "MASTER_PORT")
        if not 1 <= port <= 65535:
            raise ValueError(f"MASTER_PORT={port}: expected 1-65535")
        return port
    return master_port_for_job(job_id, step_id)


def _submitit_task(env: Mapping[str, str]) -> DistInfo | None:
    """Where a task that submitit started sits, from ``submitit.JobEnvironment`` (which reads this
    process's environment); None outside one (and in a Slurm batch step, which is no task)."""
    executor = env.get("SUBMITIT_EXECUTOR", "")
    if executor not in ("slurm", "local") or (executor == "slurm" and not env.get("SLURM_STEP_ID")):
        return None
    job = submitit.JobEnvironment()
    if executor == "local":  # one machine: the tasks meet on loopback
        launcher, master, port = "submitit-local", "127.0.0.1", _port(env, job.raw_job_id, "")
    else:
        launcher, master = "slurm", env.get("MASTER_ADDR") or job.hostnames[0]
        port = _port(env, job.raw_job_id, env.get("SLURM_STEP_ID", ""))
    return DistInfo(
        rank=job.global_rank,
        world_size=job.num_tasks,
        local_rank=job.local_rank,
        local_world_size=job.num_tasks // max(job.num_nodes, 1),
        node_rank=job.node,
        master_addr=master,
        master_port=port,
        launcher=launcher,
        job_id=job.raw_job_id,
    )


def detect(env: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, world and rendezvous address from the environment; starts nothing (backend unset).

    ``env`` given: a pure reading of that mapping (torchrun, plain srun, single); a task submitit
    started is recognised only in this process's own environment (``env`` None)."""
    live = env is None
    env = os.environ if env is None else env
    submitit_task = None
    if all(env.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        world = _int(env, "WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE") if env.get("LOCAL_WORLD_SIZE") else world
        info = DistInfo(
            rank=_int(env, "RANK"),
            world_size=world,
            local_rank=_int(env, "LOCAL_RANK") if env.get("LOCAL_RANK") else 0,
            local_world_size=local_world,
            node_rank=_int(env, "GROUP_RANK") if env.get("GROUP_RANK") else 0,
            master_addr=env["MASTER_ADDR"],
            master_port=_port(env, "", ""),
            launcher="env",
            job_id=env.get("TORCHELASTIC_RUN_ID", ""),
        )
    elif live and (submitit_task := _submitit_task(env)) is not None:
        info = submitit_task
    elif env.get("SLURM_STEP_ID") and env.get("SLURM_PROCID"):
        job_id = env.get("SLURM_JOB_ID", "")
        step_id = env.get("SLURM_STEP_ID", "")
        world = _int(env, "SLURM_STEP_NUM_TASKS" if env.get("SLURM_STEP_NUM_TASKS") else "SLURM_NTASKS")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        if not nodelist:
            raise ValueError("Slurm step without SLURM_STEP_NODELIST / SLURM_JOB_NODELIST: cannot find the master host")
        node = _int(env, "SLURM_NODEID") if env.get("SLURM_NODEID") else 0
        per_node_spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or str(world)
        per_node = parse_tasks_per_node(per_node_spec)
        info = DistInfo(
            rank=_int(env, "SLURM_PROCID"),
            world_size=world,
            local_rank=_int(env, "SLURM_LOCALID"),
            local_world_size=per_node[node] if node < len(per_node) else per_node[-1],
            node_rank=node,
            master_addr=env.get("MASTER_ADDR") or expand_hostlist(nodelist)[0],
            master_port=_port(env, job_id, step_id),
            launcher="slurm",
            job_id=job_id,
        )
    else:
        info = DistInfo(
            rank=0,
            world_size=1,
            local_rank=0,
            local_world_size=1,
            node_rank=0,
            master_addr="127.0.0.1",
            master_port=0,
            launcher="single",
        )
    info = dataclasses.replace(info, slurm_job_id=env.get("SLURM_JOB_ID", ""))
    if not 0 <= info.rank < info.world_size:
        raise ValueError(f"{info.launcher} launch: rank {info.rank} is outside world size {info.world_size}")
    if not 0 <= info.local_rank < max(info.local_world_size, 1):
        raise ValueError(
            f"{info.launcher} launch: local rank {info.local_rank} is outside local world size {info.local_world_size}"
        )
    return info


# --- process group ---------------------------------------------------------------------------


def _pick_device(info: DistInfo, backend: str) -> str:
    if backend != "nccl":
        return "cpu"
    count = torch.cuda.device_count()
    # srun --gpus-per-task / --gpu-bind=single leaves each task ONE visible device; otherwise
    # the node's GPUs are shared by its tasks and local rank i takes device i.
    if count == 1:
        return "cuda:0"
    if info.local_rank < count:
        return f"cuda:{info.local_rank}"
    raise RuntimeError(
        f"{info.describe()}: local rank {info.local_rank} but only {count} visible GPUs "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})"
    )


def _export(info: DistInfo) -> None:
    os.environ.update(
        {
            "RANK": str(info.rank),
            "WORLD_SIZE": str(info.world_size),
            "LOCAL_RANK": str(info.local_rank),
            "LOCAL_WORLD_SIZE": str(info.local_world_size),
        }
    )
    if info.world_size > 1:  # a world of one has no rendezvous address (and children must not inherit one)
        os.environ.update({"MASTER_ADDR": info.master_addr, "MASTER_PORT": str(info.master_port)})


def init_from_env(
    backend: str | None = None, timeout_s: float = 300, collective_timeout_s: float | None = None
) -> DistInfo:
    """Create the default process group for this launch; return where this process sits.

    backend: None = nccl when CUDA is available, else gloo. timeout_s bounds the rendezvous (all
    ranks must connect within it, else RendezvousError names address, world size, rank and job).
    collective_timeout_s (default: max(timeout_s, 600)) is how long a collective may wait before
    the job is aborted. Calling it again in an initialised process returns the same info.
    """
    info = detect()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if info.launcher == "single" and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        print(
            f"r1hpc.distributed: SLURM_NTASKS={os.environ['SLURM_NTASKS']} but this process is not inside an "
            f"srun step: running as ONE process (start the script with `srun` to use every task)",
            file=sys.stderr,
        )
    device = _pick_device(info, backend)
    info = dataclasses.replace(info, backend=backend, device=device)
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() != info.world_size or dist.get_rank() != info.rank:
            raise RuntimeError(
                f"a process group already exists (rank {dist.get_rank()} of {dist.get_world_size()}) "
                f"that does not match this launch ({info.describe()})"
            )
        return info
    if backend == "nccl":
        for key, value in NCCL_DEFAULTS.items():
            os.environ.setdefault(key, value)
        torch.cuda.set_device(torch.device(device))
    collective = datetime.timedelta(seconds=collective_timeout_s or max(timeout_s, 600))
    device_id = torch.device(device) if backend == "nccl" else None
    if info.world_size == 1:
        store: dist.Store = dist.HashStore()
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=collective, device_id=device_id)
        _export(info)
        return info
    _export(info)
    try:
        # The store first, with its own timeout: rank 0's TCPStore waits for all world_size clients,
        # so a missing rank shows up here within timeout_s instead of as a hang in the first
        # collective. env:// also covers torchrun, whose agent already hosts the store.
        store, _, _ = next(
            dist.rendezvous(
                "env://", rank=info.rank, world_size=info.world_size, timeout=datetime.timedelta(seconds=timeout_s)
            )
        )
        dist.init_process_group(
            backend, store=store, rank=info.rank, world_size=info.world_size, timeout=collective, device_id=device_id
        )
    except (RuntimeError, OSError) as e:  # DistStoreError / DistNetworkError are RuntimeErrors
        raise RendezvousError(_rendezvous_message(info, timeout_s, e)) from e
    return info


def _rendezvous_message(info: DistInfo, timeout_s: float, error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "address already in use" in text.lower() or "EADDRINUSE" in text:
        hint = (
            f"port {info.master_port} on {info.master_addr} is taken (another job? a leftover process?); "
            f"set MASTER_PORT to a free port"
        )
    elif info.rank == 0:
        hint = "the master waited for the other ranks; some never connected (did every task start? same job/step?)"
    else:
        hint = "this rank could not reach the master, or the master gave up (is rank 0 running and the port reachable?)"
    return (
        f"rendezvous failed after {timeout_s:g} s: {info.describe()}; expected world size {info.world_size}. "
        f"{hint}. Cause: {type(error).__name__}: {text}"
    )


def shutdown() -> None:
    """Destroy the default process group, if any (ends NCCL communicators cleanly)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- one launcher per node -------------------------------------------------------------------


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent exits (prctl PR_SET_PDEATHSIG).

    For the ranks a job starts with a local torchrun (r1hpc.stages.sft_deepspeed, grpo_megatron):
    torchrun starts each worker in a session of its own, so killing the job's process group
    (a cancelled local job) kills the job and torchrun but leaves the ranks training on, and they
    would publish beside the rerun. On Slurm the job's cgroup is killed whole; this is for the rest.
    No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def torchrun_command(
    script_and_args: Sequence[str],
    nproc_per_node: int,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The torchrun command line for THIS node, for `srun --ntasks-per-node=1` jobs.

    Every node's task computes the same master (first node of the step) and port, and passes its
    SLURM_NODEID as the node rank: a static rendezvous, no etcd or c10d endpoint to agree on.
    Example (inside an sbatch script; see slurm/templates/train_multinode.sbatch):
        srun --ntasks-per-node=1 python -m r1hpc.distributed torchrun --nproc-per-node 4 -- train.py
    """
    env = os.environ if env is None else env
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    if not script_and_args:
        raise ValueError("torchrun_command: no script given")
    if not env.get("SLURM_STEP_ID"):
        raise ValueError("torchrun_command must run inside an srun step (SLURM_STEP_ID is not set)")
    nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
    per_node = parse_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", "1"))
    if any(n != 1 for n in per_node):
        raise ValueError(
            f"torchrun_command wants one srun task per node, got SLURM_STEP_TASKS_PER_NODE="
            f"{env.get('SLURM_STEP_TASKS_PER_NODE')!r} (use srun --ntasks-per-node=1)"
        )
    master = env.get("MASTER_ADDR") or nodes[0]
    port = _port(env, env.get("SLURM_JOB_ID", ""), env.get("SLURM_STEP_ID", ""))
    return [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={len(nodes)}",
        f"--node_rank={_int(env, 'SLURM_NODEID')}",
        f"--nproc_per_node={nproc_per_node}",
        f"--master_addr={master}",
        f"--master_port={port}",
        *script_and_args,
    ]


def format_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# --- a job body: does the process group work? ------------------------------------------------


def allreduce_check(timeout_s: float = 120) -> dict[str, Any]:
    """Join the job's process group, all-reduce the ranks, return what this rank saw.

    A preflight for a new cluster or a new launch style: every rank must return
    result == world * (world - 1) / 2. Usable as a launcher target
    (`r1hpc.distributed:allreduce_check`).
    """
    info = init_from_env(timeout_s=timeout_s)
    try:
        value = torch.tensor([float(info.rank)], device=info.device)
        dist.all_reduce(value)
        hosts = [None] * info.world_size
        dist.all_gather_object(hosts, os.uname().nodename)
    finally:
        shutdown()
    return {
        "rank": info.rank,
        "world_size": info.world_size,
        "local_rank": info.local_rank,
        "launcher": info.launcher,
        "master": f"{info.master_addr}:{info.master_port}",
        "job_id": info.job_id,
        "slurm_job_id": info.slurm_job_id,
        "result": float(value.item()),
        "hosts": hosts,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m r1hpc.distributed [check]`: every rank prints its allreduce_check() as JSON.
    `python -m r1hpc.distributed torchrun --nproc-per-node N -- SCRIPT ARGS`: exec this node's
    torchrun (run it under `srun --ntasks-per-node=1`)."""
    parser = argparse.ArgumentParser(prog="python -m r1hpc.distributed", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd")
    check = sub.add_parser("check", help="join the process group, all-reduce the ranks, print JSON")
    check.add_argument("--timeout", type=float, default=120.0)
    run = sub.add_parser("torchrun", help="exec torchrun for this node with a static rendezvous")
    run.add_argument("--nproc-per-node", type=int, required=True)
    run.add_argument("script", nargs=argparse.REMAINDER, help="-- then the script (or -m module) and its args")
    args = parser.parse_args(argv)
    if args.cmd == "torchrun":
        script = args.script[1:] if args.script[:1] == ["--"] else args.script
        command = torchrun_command(script, args.nproc_per_node)
        print(
            f"r1hpc.distributed: node {os.environ.get('SLURM_NODEID', '?')}: {format_command(command)}",
            file=sys.stderr,
            flush=True,
        )
        os.execv(command[0], command)
    timeout = args.timeout if args.cmd == "check" else 120.0
    # One write(2) per line: ranks share one output file, and print() under `python -u` issues the
    # text and its newline as two writes, which interleave between ranks.
    line = json.dumps(allreduce_check(timeout_s=timeout)) + "\n"
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), line.encode())


if __name__ == "__main__":
    main()
