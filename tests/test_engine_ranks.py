"""One vLLM engine over two processes of one generation task (config engine.tp=2 on vLLM's CPU
backend; r1hpc.rollout.engine_ranks), on submitit's local executor: the samples and their
log-probs against the one-process engine's and the teacher-forced HF forward, before and after an
in-place reload; and a killed rank ends the task with an error naming it instead of a hang.
The same task on the test cluster: tests/slurm/test_engine_ranks_slurm.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from tiny_policies import forward_logprobs, make_policies

from r1hpc.config import load_config
from r1hpc.fsio import read_json
from r1hpc.launch import JobFailed, Launcher, Submission
from r1hpc.rollout.base import load_generation_tokenizer

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["1 plus 2 is", "the cat sat", "17 plus 25 is", "on the mat"]
# the tolerance of tests/test_rollout.py's vLLM-vs-HF log-prob test
LOGPROB_TOL = 1e-3


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> list[Path]:
    return make_policies(tmp_path_factory.mktemp("policies"))


def submit(runs_dir: Path, executor: str, tp: int, policies: list[Path], generate_s: float = 0.0) -> Submission:
    """One rollout-kind array task running jobfns.engine_generate, submitted as r1hpc submits
    generation tasks (so with engine.tp=2 it gets two processes)."""
    cfg = load_config(
        None,
        [
            f"runs_dir={runs_dir}",
            f"name=engine{tp}",
            "grpo.generator=vllm",
            f"engine.tp={tp}",
            "launch.rollout.cpus_per_task=1",
            "launch.rollout.mem_gb=3",
            "launch.rollout.time_min=10",
        ],
    )
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    out = cfg.run_dir / "samples.json"
    kwargs = {
        "model_dirs": [str(p) for p in policies],
        "out": str(out),
        "tp": tp,
        "prompts": PROMPTS,
        "generate_s": generate_s,
    }
    return Launcher(cfg, executor).submit_array("gen", "rollout", "jobfns:engine_generate", [kwargs])


def wait_done(sub: Submission, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not sub.done():
        assert time.monotonic() < deadline, f"{sub.name} still running after {timeout_s:.0f} s"
        time.sleep(1)


def check_against(result: dict, reference: dict, policies: list[Path]) -> None:
    """The 2-process engine samples what the 1-process one does, and every sampled token's
    log-prob matches the HF forward of the policy that sampled it, before and after the reload."""
    tokenizer, _ = load_generation_tokenizer(policies[0])  # the generators' own prompt encoding
    for when, policy in (("before", policies[0]), ("after", policies[1])):
        mine, theirs = result[when], reference[when]
        assert [[s["token_ids"] for s in g] for g in mine] == [[s["token_ids"] for s in g] for g in theirs], when
        worst = 0.0
        for prompt, group, ref_group in zip(PROMPTS, mine, theirs):
            for s, r in zip(group, ref_group):
                hf = forward_logprobs(policy, tokenizer, prompt, s["token_ids"]).tolist()
                worst = max(worst, *(abs(a - b) for a, b in zip(s["logprobs"], hf)))
                worst = max(worst, *(abs(a - b) for a, b in zip(s["logprobs"], r["logprobs"])))
        assert worst < LOGPROB_TOL, f"{when} the reload: log-probs differ by {worst}"


def test_two_process_engine_equals_the_one_process_engine(tmp_path, policies):
    one = submit(tmp_path / "one", "local", 1, policies)
    wait_done(one, 600)
    reference = read_json(one.results()[0])
    two = submit(tmp_path / "two", "local", 2, policies)
    wait_done(two, 600)
    result = read_json(two.results()[0])
    assert (reference["generator"], reference["world"]) == ("VLLMGenerator", 1)
    assert (result["generator"], result["world"]) == ("EngineLeader", 2)
    # both workers re-packed their part of the tied lm_head on reload (vllm_engine.ReloadExtension)
    assert result["fixes"] == [["lm_head CPU gemm re-packed"]] and len(reference["fixes"]) == 1
    check_against(result, reference, policies)
    # the engine's CPU shared-memory segments have a name of their own, and went with it
    assert result["engine_ident"].startswith("r1hpc") and not list(Path("/dev/shm").glob(result["engine_ident"] + "*"))


def rank_pid(job_id: str, rank: int) -> int:
    """The pid of one rank of a local-executor job (its environment says which)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(
                item.split("=", 1)
                for item in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
        except OSError:
            continue
        if env.get("SUBMITIT_LOCAL_JOB_ID") == job_id and env.get("SUBMITIT_LOCAL_GLOBALID") == str(rank):
            return int(proc.name)
    raise AssertionError(f"no rank {rank} of local job {job_id}")


def generating_task(tmp_path: Path, policies: list[Path]) -> tuple[Submission, Path]:
    """A 2-process engine task that has written its samples and goes on generating for 300 s."""
    sub = submit(tmp_path, "local", 2, policies, generate_s=300)
    out = tmp_path / "engine2" / "samples.json"
    deadline = time.monotonic() + 300
    while not out.exists():
        assert not sub.jobs[0].done(), sub.jobs[0].stderr()
        assert time.monotonic() < deadline
        time.sleep(1)
    return sub, out


@pytest.mark.parametrize("killed", [1, 0], ids=["follower-killed", "leader-killed"])
def test_a_killed_rank_ends_the_task_naming_it(tmp_path, policies, killed):
    sub, out = generating_task(tmp_path, policies)
    job = sub.jobs[0]
    survivor = rank_pid(job.job_id, 1 - killed)
    os.kill(rank_pid(job.job_id, killed), signal.SIGKILL)
    killed_at = time.monotonic()
    while Path(f"/proc/{survivor}").exists() and time.monotonic() - killed_at < 60:
        time.sleep(0.5)
    assert not Path(f"/proc/{survivor}").exists(), "the surviving rank hangs in the engine's collectives"
    wait_done(sub, 60)
    with pytest.raises(JobFailed):
        sub.results()
    log = (job.paths.folder / f"{job.job_id}_{1 - killed}_log.err").read_text()
    expected = "engine rank 1 of 2 was lost" if killed == 1 else "engine rank 0 of 2 (the task's leader) was lost"
    assert expected in log, log[-3000:]
    # the survivor removed the engine's shared memory, which the killed rank could not
    assert not list(Path("/dev/shm").glob(read_json(out)["engine_ident"] + "*"))


def test_usr2_requeues_the_task_in_the_middle_of_a_generate(tmp_path, policies):
    """What Slurm sends before a time limit or a preemption: submitit requeues the task (rank 0
    leaves the engine mid-call), no rank is left behind in the engine, and the next attempt ends it."""
    sub, out = generating_task(tmp_path, policies)
    job = sub.jobs[0]
    first = {rank: rank_pid(job.job_id, rank) for rank in (0, 1)}
    os.kill(first[0], signal.SIGUSR2)
    wait_done(sub, 90)
    assert sub.results() == [str(out)]  # the second attempt found its output and ended
    assert not any(Path(f"/proc/{pid}").exists() for pid in first.values())
    log = (job.paths.folder / f"{job.job_id}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in log, log[-3000:]
