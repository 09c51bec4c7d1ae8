"""Preflight: before a long run, check that the cluster gives jobs what the config assumes.

A small job array (of `launch.<kind>` resources) where each task reports its node, the CPUs and
GPUs it was given, the code revision it runs, and the free space of the run directory, and
writes that report into the run directory; the submitting side then reads every report back
through the shared filesystem. It catches the usual first-day failures: run directory not shared
between nodes, GPUs not visible to jobs, a different checkout on the compute nodes, a full disk.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from r1hpc.config import Config, code_revision
from r1hpc.fsio import atomic_write_json
from r1hpc.launch import Launcher

__all__ = ["node_report", "run_preflight", "check_reports"]


def _visible_gpus() -> int:
    """GPUs the job may use: Slurm's CUDA_VISIBLE_DEVICES, cross-checked with torch if it sees CUDA."""
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:
        pass
    return len(listed)


def node_report(report_dir: str, task: int) -> dict[str, Any]:
    """Array-task body: describe this job's environment and publish it as `task_NNN.json`."""
    usage = shutil.disk_usage(report_dir)
    report = {
        "task": task,
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        "cpus": len(os.sched_getaffinity(0)),
        "gpus": _visible_gpus(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "code_revision": code_revision(),
        "free_gb": round(usage.free / 2**30, 2),
        "time": time.time(),
    }
    atomic_write_json(Path(report_dir) / f"task_{task:03d}.json", report)
    return report


def check_reports(
    report_dir: Path, returned: list[dict[str, Any]], expect_gpus: int, expect_revision: str, min_free_gb: float = 1.0
) -> list[str]:
    """Compare what each task wrote to the shared directory with what it returned; list problems."""
    problems = []
    for rep in returned:
        path = report_dir / f"task_{rep['task']:03d}.json"
        if not path.exists():
            problems.append(
                f"task {rep['task']} on {rep['host']}: {path} not visible here: "
                f"is {report_dir.parent} on a shared filesystem?"
            )
            continue
        seen = json.loads(path.read_text())
        if seen != rep:
            problems.append(
                f"task {rep['task']} on {rep['host']}: {path} differs from what the job wrote (stale cache?)"
            )
        if rep["gpus"] != expect_gpus:
            problems.append(
                f"task {rep['task']} on {rep['host']}: {rep['gpus']} GPUs visible, config asks for {expect_gpus}"
            )
        if rep["code_revision"] != expect_revision:
            problems.append(
                f"task {rep['task']} on {rep['host']}: runs code {rep['code_revision']}, "
                f"submitted from {expect_revision}"
            )
        if rep["free_gb"] < min_free_gb:
            problems.append(f"task {rep['task']} on {rep['host']}: only {rep['free_gb']} GB free in the run directory")
    return problems


def run_preflight(cfg: Config, tasks: int = 2, kind: str = "rollout") -> int:
    """Submit the preflight array, wait, print one line per task and every problem; 0 if none."""
    report_dir = cfg.run_dir / "preflight" / time.strftime("%Y%m%d-%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)
    launcher = Launcher(cfg)
    sub = launcher.submit_array(
        "preflight",
        kind,
        "r1hpc.preflight:node_report",
        [{"report_dir": str(report_dir), "task": i} for i in range(tasks)],
    )
    print(f"preflight: submitted {sub.name} as job {sub.job_id} ({tasks} tasks, {launcher.executor} executor)")
    returned = sub.results()
    for rep in returned:
        print(
            f"  task {rep['task']}: host={rep['host']} job={rep['slurm_job_id'] or '-'} cpus={rep['cpus']} "
            f"gpus={rep['gpus']} free={rep['free_gb']}GB code={rep['code_revision'][:12]}"
        )
    expect_gpus = getattr(cfg.launch, kind).gpus_per_node if launcher.executor == "slurm" else returned[0]["gpus"]
    problems = check_reports(report_dir, returned, expect_gpus, code_revision())
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    print("preflight: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 0 if not problems else 1
