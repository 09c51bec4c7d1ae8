"""A training loop that gets the stop signal saves at the next step boundary and is requeued.

Runs through submitit's real local executor, which sends USR2 `signal_delay_s` before the job's
time limit and restarts a job that asks to be requeued, exactly as its Slurm executor does.
"""

from __future__ import annotations

import submitit
import torch
from test_train_sft import PAD, PROMPTS, SETTINGS, TARGETS, tiny_model

from r1hpc.fsio import read_jsonl
from r1hpc.launch import StageTask
from r1hpc.train.sft import train_sft


def test_sft_saves_on_the_stop_signal_and_the_requeued_job_finishes_identically(tmp_path):
    executor = submitit.LocalExecutor(folder=tmp_path / "logs", max_num_timeout=5)
    # 1-minute limit, USR2 45 s before it: each attempt is stopped 15 s in; the 18 steps take
    # ~14 s after ~4 s of imports, so the first attempt is stopped mid-way. The imports must end
    # before the signal: one that lands in them (a loaded machine) goes to submitit's handler,
    # whose exit inside an extension's import aborts the process instead of requeueing it.
    executor.update_parameters(timeout_min=1, signal_delay_s=45)
    state = tmp_path / "state"
    job = executor.submit(
        StageTask("jobfns:slow_tiny_sft", save_grace_s=20),
        state_dir=str(state),
        out=str(tmp_path / "final.pt"),
        step_s=0.8,
    )
    last_pid = job.result()

    steps = read_jsonl(state / "steps.jsonl")
    pids = list(dict.fromkeys(s["pid"] for s in steps))
    assert len(pids) >= 2 and pids[-1] == last_pid, steps  # stopped at least once, then finished
    # Every step ran exactly once over all attempts: each stop saved the step it had just done
    # (periodic saves are off, so without that save a requeued attempt would start over).
    assert [s["step"] for s in steps] == list(range(1, 19)), steps
    assert "saving at the next step boundary" in job.stderr()

    undisturbed = tiny_model()
    train_sft(undisturbed, PROMPTS, TARGETS, SETTINGS, PAD, seed=1, state_dir=tmp_path / "ref", progress=False)
    final = torch.load(tmp_path / "final.pt")
    for name, value in undisturbed.state_dict().items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=0, msg=name)
