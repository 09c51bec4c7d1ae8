"""A GRPO stage as long-lived jobs (grpo.jobs=stage) on the local executor: two submissions for
the stage that start together, the same published versions as per-step jobs, resumption after losing outputs, and
waits that end with an error naming what never came."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from tiny_stage_run import clone_run

from r1hpc.config import read_run_config
from r1hpc.fsio import read_jsonl
from r1hpc.launch import wait_all
from r1hpc.lease import Lease
from r1hpc.pipeline import submit_pipeline
from r1hpc.stages.common import read_metrics
from r1hpc.stages.grpo import prepare_stage, train_loop
from r1hpc.stages.handoff import PartnerFailed, WaitTimeout, failures_recorded, reset_stage
from r1hpc.store import RunDir, list_versions, read_shard

STEPS = 3
NOT_COMPARED = ("time", "idle_")  # wall-clock figures differ between any two runs


def _run_stage(run_dir):
    subs = submit_pipeline(read_run_config(run_dir), ["r1_zero"])
    wait_all(list(subs.values()), poll_s=0.2)


def _weights(run_dir) -> dict[int, dict[str, str]]:
    return {
        v.version: {f["path"]: f["sha256"] for f in v.manifest["files"] if f["path"].endswith(".safetensors")}
        for v in list_versions(RunDir(run_dir), "r1_zero")
    }


def _metrics(run_dir) -> list[dict]:
    return [
        {k: v for k, v in row.items() if not k.startswith(NOT_COMPARED)} for row in read_metrics(run_dir, "r1_zero")
    ]


def _shard_samples(run_dir, step, shard) -> list[tuple]:
    path = RunDir(run_dir).shard_path("r1_zero", step, shard, create=False)
    return [(r["prompt_ids"], r["response_ids"], r["reward"]) for r in read_shard(path)]


def _dead_heartbeat(path) -> None:
    """The heartbeat lease a killed job leaves behind: its holder's pid is gone."""
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from r1hpc.lease import Lease; "
            "Lease(sys.argv[1], owner='r1_zero train', ttl_s=150).acquire(); os._exit(9)",
            str(path),
        ],
        check=False,
    )
    assert killed.returncode == 9 and path.exists()


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory):
    common = [f"r1_zero.steps={STEPS}", "grpo.checkpoint_every=2", "grpo.mini_batches=2"]
    per_step = clone_run(tmp_path_factory.mktemp("per_step"), ["grpo.jobs=step", *common])
    long_lived = clone_run(tmp_path_factory.mktemp("long_lived"), ["grpo.jobs=stage", *common])
    for run_dir in (per_step, long_lived):
        _run_stage(run_dir)
    return per_step, long_lived


def test_long_lived_stage_is_two_submissions_and_equals_per_step_jobs(both_modes):
    per_step, long_lived = both_modes
    jobs = [r for r in read_jsonl(long_lived / "jobs.jsonl") if r["stage"] == "r1_zero"]
    # No preparing job: the train job publishes v0000, which the rollout tasks wait for.
    assert [(r["target"].split(":")[1], r["array_size"], r["after"]) for r in jobs] == [
        ("rollout_loop", 2, []),
        ("train_loop", 0, []),
    ]
    assert list_versions(RunDir(long_lived), "r1_zero")[0].meta["init_from"].startswith("base/")
    assert len([r for r in read_jsonl(per_step / "jobs.jsonl") if r["stage"] == "r1_zero"]) == 1 + 2 * STEPS
    ours = _weights(long_lived)
    assert sorted(ours) == list(range(STEPS + 1))
    assert ours == _weights(per_step)
    assert _metrics(long_lived) == _metrics(per_step)
    for row in read_metrics(long_lived, "r1_zero"):
        assert 0 <= row["time_handoff_s"] <= row["time_step_s"]
        assert 0 <= row["idle_train_frac"] <= 1 and 0 <= row["idle_rollout_frac"] <= 1


def test_long_lived_stage_resumes_at_its_first_missing_output(both_modes):
    _, run_dir = both_modes
    run = RunDir(run_dir)
    before_weights, before_metrics = _weights(run_dir), _metrics(run_dir)
    lost_shard = _shard_samples(run_dir, STEPS - 1, 1)
    # As if both jobs were killed late in the stage: the last version, the trainer's last checkpoint
    # and one shard of the last step are gone. The train job restores the checkpoint of step 2 and
    # replays step 2 from its rollouts; the rollout task regenerates only its missing shard.
    shutil.rmtree(run.models_dir("r1_zero") / f"v{STEPS:04d}")
    (run.train_state_dir("r1_zero") / f"ckpt_{STEPS:06d}.pt").unlink()
    run.shard_path("r1_zero", STEPS - 1, 1, create=False).unlink()
    # The train job died between publishing v(STEPS - 1) and logging that step's metrics (as a
    # kill can land there): the rerun logs it from the version's meta, then the step it redoes.
    metrics = run.metrics_path("r1_zero", create=False)
    rows = [r for r in read_jsonl(metrics) if not (isinstance(r.get("step"), int) and r["step"] >= STEPS - 2)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = {s: run.shard_path("r1_zero", s, 0, create=False).stat().st_mtime_ns for s in range(STEPS)}
    # The killed attempt also left a failure marker and a dead job's heartbeat: the rerun's submitter
    # clears both before its jobs start, or they would stop at once on them.
    (run.rollouts_dir("r1_zero") / "FAILED_rollout_1.json").write_text('{"error": "killed attempt"}')
    _dead_heartbeat(run.lease_path("r1_zero", "train"))

    _run_stage(run_dir)
    assert _weights(run_dir) == before_weights
    assert _metrics(run_dir) == before_metrics
    assert _shard_samples(run_dir, STEPS - 1, 1) == lost_shard
    assert {s: run.shard_path("r1_zero", s, 0, create=False).stat().st_mtime_ns for s in range(STEPS)} == kept


def test_a_wait_names_what_never_appeared_and_stops_on_a_partner_failure(tmp_path):
    run_dir = clone_run(tmp_path, ["grpo.wait_timeout_s=1", "grpo.poll_max_s=0.05"])
    prepare_stage(str(run_dir), "r1_zero")
    started = time.time()
    with pytest.raises(WaitTimeout, match=r"train of stage r1_zero waited .* for the 2 rollout shard\(s\) of step 0"):
        train_loop(str(run_dir), "r1_zero")
    assert time.time() - started < 30
    # The train job's own failure left a marker that a rollout task's wait would stop on...
    run = RunDir(run_dir)
    assert [p.name for p in (run.rollouts_dir("r1_zero")).glob("FAILED_*")] == ["FAILED_train.json"]
    # ... and a failed rollout task stops the train job's wait at once, naming it.
    (run.rollouts_dir("r1_zero") / "FAILED_train.json").unlink()
    with pytest.raises(RuntimeError, match="boom"), failures_recorded(run, "r1_zero", "rollout_1"):
        raise RuntimeError("boom")
    with pytest.raises(PartnerFailed, match=r"rollout_1 of stage r1_zero failed \(RuntimeError: boom\)"):
        train_loop(str(run_dir), "r1_zero")
    # A rerun of the stage clears the markers (reset_stage, before its jobs start).
    reset_stage(run, "r1_zero", read_run_config(run_dir).grpo.heartbeat_timeout_s)
    assert not list(run.rollouts_dir("r1_zero").glob("FAILED_*"))


def test_a_follower_rank_stops_when_the_first_rank_failed_to_publish_v0000(tmp_path):
    """A multi-rank train job: rank 0 publishes v0000, the others wait for it; when rank 0 fails (its
    marker), they stop at once instead of waiting out grpo.wait_timeout_s (srun does not kill them)."""
    from r1hpc.stages.grpo_train import TorchBackend, train_steps

    run_dir = clone_run(tmp_path, ["grpo.wait_timeout_s=600", "grpo.poll_max_s=0.05"])
    run = RunDir(run_dir)
    with pytest.raises(RuntimeError, match="no base"), failures_recorded(run, "r1_zero", "train"):
        raise RuntimeError("no base")
    started = time.time()
    with pytest.raises(PartnerFailed, match=r"train of stage r1_zero failed \(RuntimeError: no base\)"):
        train_steps(str(run_dir), "r1_zero", range(1), TorchBackend, is_main=False)
    assert time.time() - started < 30


def test_a_rerun_clears_the_heartbeats_of_killed_jobs(tmp_path):
    """A killed train job leaves its heartbeat lease behind; without clearing it, the rerun's rollout
    tasks (started before the new train job) would take its silence for a partner that died."""
    run_dir = clone_run(tmp_path)
    run = RunDir(run_dir)
    path = run.lease_path("r1_zero", "train")
    _dead_heartbeat(path)
    live = Lease(run.lease_path("r1_zero", "rollout_0"), owner="r1_zero rollout_0", ttl_s=150).acquire()
    try:
        prepare_stage(str(run_dir), "r1_zero")
        assert not path.exists()  # the dead holder's heartbeat is gone
        assert live.path.exists()  # a live one is left alone
    finally:
        live.release()
