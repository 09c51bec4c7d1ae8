"""slurm/templates/stage.sbatch on the test cluster: the plain-sbatch way to run r1hpc job functions.

An array whose tasks get their index through `r1hpc exec --array-arg`, and a job waiting on it
with afterok. The template's time-limit path (its USR2 trap requeues the job, which resumes from
its checkpoint) is checked by test_launch_slurm.py's time-limit test, beside submitit's own path,
so that both share the minute they must wait (submit_over_time_limit / check_requeued_and_resumed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from r1hpc.fsio import read_json, read_jsonl

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "slurm" / "templates" / "stage.sbatch"
R1HPC = str(Path(sys.executable).with_name("r1hpc"))


def _sbatch(env: dict[str, str], cwd: Path, options: list[str], command: list[str]) -> str:
    res = subprocess.run(
        ["sbatch", "--parsable", *options, str(TEMPLATE), *command],
        env={**env, "R1HPC": R1HPC, "PYTHONPATH": str(REPO / "tests")},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, f"sbatch failed: {res.stdout}{res.stderr}"
    return res.stdout.strip().split(";")[0]


def test_stage_template_array_then_dependent_job(tmp_path, slurm, slurm_env):
    common = ["--gpus-per-node=0", "--cpus-per-task=1", "--mem=1G", f"--output={tmp_path}/%A_%a.out"]
    array = _sbatch(
        slurm_env,
        tmp_path,
        [*common, "--array=0-1"],
        ["--array-arg", "task", "r1hpc.preflight:node_report", f"report_dir={tmp_path}"],
    )
    after = _sbatch(
        slurm_env,
        tmp_path,
        [*common, f"--dependency=afterok:{array}"],
        ["r1hpc.preflight:node_report", f"report_dir={tmp_path}", "task=9"],
    )
    slurm.wait_for_state(after, {"COMPLETED"}, timeout=120)
    reports = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("task_*.json")}
    assert sorted(reports) == ["task_000.json", "task_001.json", "task_009.json"]
    assert [reports[f"task_00{i}.json"]["slurm_array_task_id"] for i in (0, 1)] == ["0", "1"]
    assert reports["task_009.json"]["slurm_job_id"] == after


def submit_over_time_limit(slurm_env: dict[str, str], state_dir: Path) -> str:
    """A job through the template: 10 steps of 4 s under a 1-minute limit with USR2 30 s before it
    (Slurm may send it earlier), checkpointing after each step into state_dir."""
    return _sbatch(
        slurm_env,
        state_dir,
        [
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--mem=1G",
            "--time=1",
            "--signal=B:USR2@30",
            f"--output={state_dir}/%j.out",
            "--open-mode=append",
        ],
        ["jobfns:resumable_count", f"state_dir={state_dir}", "n=10", "step_s=4.0"],
    )


def check_requeued_and_resumed(slurm, job: str, state_dir: Path) -> None:
    """The trap requeued the job and the next attempt continued from the checkpoint: every step
    done exactly once, by more than one attempt."""
    slurm.wait_for_state(job, {"COMPLETED"}, timeout=240)
    attempts = read_jsonl(state_dir / "attempts.jsonl")
    assert sorted(a["step"] for a in attempts) == list(range(10)), attempts
    assert max(a["attempt"] for a in attempts) >= 1, attempts
    assert read_json(state_dir / "counter.json") == {"done": list(range(10))}
    assert "time limit near: requeueing" in (state_dir / f"{job}.out").read_text()
    rows = slurm.sacct_rows(job, ["State"], duplicates=True)
    assert "REQUEUED" in {r["State"] for r in rows}, rows
