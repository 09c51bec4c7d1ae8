"""gpu-hours against the real test cluster: jobs with 1, 2 and 4 GPUs, an array, a requeued job.

Each job script writes its own start/end times; the tool's GPU-seconds must equal GPUs x sacct
ElapsedRaw exactly, and GPUs x the time measured inside the job within 2 % for the one-minute job.
The short jobs (3-6 s, for the array, requeue and grouping cases) get sacct's 1-second resolution
plus launch overhead as slack instead (2 s + 2 % per attempt): a bare 2 % cannot hold for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from r1hpc.accounting import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """#!/bin/bash
f={out}/t.$SLURM_JOB_ID.${{SLURM_RESTART_COUNT:-0}}
echo "start $(date +%s.%N)" > $f
sleep {secs}
echo "end $(date +%s.%N)" >> $f
"""
# name, stage, step, GPUs, sleep s, account, partition, extra sbatch args
JOBS = [
    ("minute", "train", "4", 1, 60, "research", "long", []),  # runs beside the others on 3 GPUs
    ("one", "grpo", "0", 1, 3, "test", "debug", []),
    ("two", "train", "1", 2, 4, "research", "long", []),
    ("three", "sft", "-", 3, 3, "research", "long", []),
    ("array", "rollout", "2", 1, 3, "test", "debug", ["--array=0-1"]),
    ("requeued", "eval", "3", 1, 5, "test", "long", ["--requeue"]),
]
SLACK_S = 2.0


def _measured(out: Path, job_id_raw: str, attempt: int) -> tuple[float, float | None]:
    """(start, end) epoch seconds written by the job script; end None if it was killed."""
    lines = dict(line.split() for line in (out / f"t.{job_id_raw}.{attempt}").read_text().splitlines())
    return float(lines["start"]), float(lines["end"]) if "end" in lines else None


def test_gpu_hours_on_cluster(
    slurm, slurm_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    run = "acct" + uuid.uuid4().hex[:8]
    ids: dict[str, str] = {}
    for name, stage, step, gpus, secs, account, part, extra in JOBS:
        ids[name] = slurm.sbatch(
            SCRIPT.format(out=tmp_path, secs=secs),
            f"--gres=gpu:{gpus}",
            "-A",
            account,
            "-p",
            part,
            "-J",
            f"r1hpc:{run}:{stage}:{step}",
            f"--comment=r1hpc run={run} stage={stage} step={step}",
            "-o",
            str(tmp_path / "slurm-%j.out"),
            *extra,
            cwd=tmp_path,
            name=f"{name}.sh",
        )

    # Requeue the 'requeued' job once, 2 s into its first run; release it at once (see the cluster note).
    rq = ids["requeued"]
    deadline = time.monotonic() + 90
    while not (tmp_path / f"t.{rq}.0").exists():
        assert time.monotonic() < deadline, f"job {rq} did not start within 90 s"
        time.sleep(0.2)
    time.sleep(2)
    slurm.cmd(["scontrol", "requeue", rq])
    requeued_at = time.time()
    time.sleep(1.6)
    slurm.cmd(["scontrol", "update", f"JobId={rq}", "StartTime=now"])
    for job_id in ids.values():
        slurm.wait_for_state(job_id, {"COMPLETED"}, timeout=120)

    # What sacct says, per attempt, for our jobs.
    fields = ["JobID", "JobIDRaw", "State", "ElapsedRaw", "AllocTRES"]
    sacct = [r for job_id in ids.values() for r in slurm.sacct_rows(job_id, fields, duplicates=True)]
    out_json = tmp_path / "report.json"
    assert main(["--since", "now-1hours", "--run", run, "--json", str(out_json), "--quiet"]) == 0
    report = json.loads(out_json.read_text())
    jobs = report["jobs"]
    assert sorted((j["job_id_raw"], j["state"]) for j in jobs) == sorted(
        (r["JobIDRaw"], r["State"].split()[0]) for r in sacct
    )
    assert len(jobs) == 8  # 6 jobs, 2 array tasks in one, 2 attempts of the requeued one

    spec = {ids[n]: (stage, step, gpus, secs, acct, part) for n, stage, step, gpus, secs, acct, part, _ in JOBS}
    lines = ["job        state      GPUs  in-job s  ElapsedRaw  GPUs x in-job s  GPUs x ElapsedRaw  reported GPU-s"]
    expected_total = measured_total = 0.0
    for j in jobs:
        array_id = j["job_id"].split("_")[0]
        stage, step, gpus, secs, acct, part = spec[array_id]
        elapsed = next(
            int(r["ElapsedRaw"])
            for r in sacct
            if r["JobIDRaw"] == j["job_id_raw"] and r["State"].split()[0] == j["state"]
        )
        assert (j["run"], j["stage"], j["step"], j["account"], j["partition"]) == (run, stage, step, acct, part)
        assert j["gpus"] == gpus and f"gres/gpu={gpus}" in next(
            r["AllocTRES"] for r in sacct if r["JobIDRaw"] == j["job_id_raw"]
        )
        assert j["gpu_seconds"] == gpus * elapsed
        attempt = 0 if j["state"] == "REQUEUED" else (1 if array_id == rq else 0)
        start, end = _measured(tmp_path, j["job_id_raw"], attempt)
        if j["state"] == "REQUEUED":
            assert j["wasted"] and end is None
            end = requeued_at  # killed by the requeue: it ran until we asked for it
        else:
            assert not j["wasted"] and end is not None and end - start >= secs
        measured = end - start
        assert abs(elapsed - measured) <= SLACK_S + 0.02 * measured, (j, measured)
        if secs >= 60:
            assert abs(j["gpu_seconds"] - gpus * measured) <= 0.02 * gpus * measured, (j, measured)
        expected_total += gpus * elapsed
        measured_total += gpus * measured
        lines.append(
            f"{j['job_id']:<10} {j['state']:<10} {gpus:>4}  {measured:8.2f}  {elapsed:>10}  "
            f"{gpus * measured:15.2f}  {gpus * elapsed:17}  {j['gpu_seconds']:>14}"
        )
    t = report["totals"]
    assert t["gpu_seconds"] == expected_total
    assert abs(t["gpu_seconds"] - measured_total) <= len(jobs) * 4 * SLACK_S + 0.02 * measured_total
    wasted = [r for r in sacct if r["State"].split()[0] == "REQUEUED"]
    assert len(wasted) == 1 and t["wasted_gpu_seconds"] == int(wasted[0]["ElapsedRaw"]) > 0

    stages = {
        (r["run"], r["stage"]): r["gpu_seconds"]
        for r in next(tb for tb in report["tables"] if tb["by"] == ["run", "stage"])["rows"]
    }
    assert set(stages) == {(run, s) for _, s, *_ in JOBS}
    assert sum(stages.values()) == t["gpu_seconds"]
    accounts = {
        r["account"]: r["gpu_seconds"] for r in next(tb for tb in report["tables"] if tb["by"] == ["account"])["rows"]
    }
    assert accounts == {a: sum(j["gpu_seconds"] for j in jobs if j["account"] == a) for a in ("test", "research")}

    # The tool as a script: save the sacct dump, and read it back offline to the same figures.
    dump, j2 = tmp_path / "dump.txt", tmp_path / "script.json"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "gpu_hours.py"),
            "--since",
            "now-1hours",
            "--run",
            run,
            "--save-sacct",
            str(dump),
            "--json",
            str(j2),
            "--by",
            "run,stage,day",
        ],
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "GPU usage by run, stage, day" in res.stdout
    assert json.loads(j2.read_text())["totals"]["gpu_seconds"] == t["gpu_seconds"]
    j3 = tmp_path / "offline.json"
    assert main(["--sacct-file", str(dump), "--run", run, "--json", str(j3), "--quiet"]) == 0
    assert json.loads(j3.read_text())["totals"] == json.loads(j2.read_text())["totals"]

    with capsys.disabled():
        print("\n" + "\n".join(lines))
        print(
            f"total: expected {expected_total:.0f} GPU-s (GPUs x ElapsedRaw), measured in jobs "
            f"{measured_total:.2f}, reported {t['gpu_seconds']}; wasted {t['wasted_gpu_seconds']}"
        )
