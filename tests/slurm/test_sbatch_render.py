"""render_sbatch (our own template: submitit has no public renderer) against the script submitit's
SlurmExecutor really wrote for the same job (`<folder>/<job id>_submission.sh`)."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from r1hpc.config import load_config
from r1hpc.launch import Launcher, render_sbatch


@pytest.mark.parametrize("array_size,distributed", [(0, True), (2, False)])
def test_rendered_script_is_what_submitit_submits(tmp_path, slurm_env, monkeypatch, array_size, distributed):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            "name=rs",
            "launch.executor=slurm",
            "launch.account=research",
            "launch.train.cpus_per_task=1",
            "launch.train.mem_gb=1.5",
            "launch.train.tasks_per_node=2",
            "launch.train.array_parallelism=1",
            "launch.extra_sbatch={begin: now+1hour}",
        ],
    )
    launcher = Launcher(cfg)
    if array_size:  # --begin in an hour: the script is written at submission, the jobs need not run
        sub = launcher.submit_array("s", "train", "jobfns:square", [{"x": i} for i in range(array_size)], step=3)
    else:
        sub = launcher.submit("s", "train", "jobfns:square", {"x": 1}, step=3, distributed=True)
    try:
        # an array's script sits under the array's id (its tasks' Job.paths name task folders)
        written = (cfg.run_dir / "logs" / sub.job_id / f"{sub.job_id}_submission.sh").read_text()
    finally:
        subprocess.run(["scancel", sub.job_id], env=slurm_env, check=False, capture_output=True)
    expected = render_sbatch(cfg, kind="train", stage="s", step=3, array_size=array_size, distributed=distributed)
    # the one intended difference: the interpreter is shown as `python`, not this venv's path
    assert written.replace(f"{shlex.quote(sys.executable)} -u -m", "python -u -m") == expected
