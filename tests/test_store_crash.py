"""Crash test of the run directory protocol: SIGKILL a writer at random points, many times,
while a reader verifies everything it can see.

The writer publishes model versions (files of a few hundred KB to a few MB), the rollout
shards of a step, a completion marker, and prunes old versions. After every kill the same
writer is rerun to completion: it must succeed (idempotent resume). A reader process loops over
latest_model(verify="sha256") and read_step_shards on completed steps for the whole test and
compares what it reads with the bytes the writer was meant to write.

Standalone, to quote the figure:  .venv/bin/python tests/test_store_crash.py [--kills 200]
Under pytest the figure is printed, attached as a junit property, and written as JSON to
$R1HPC_STORE_CRASH_REPORT when that is set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from r1hpc.lease import Lease
from r1hpc.store import (
    RunDir,
    StoreError,
    is_done,
    latest_model,
    mark_done,
    prune_versions,
    publish_model,
    publish_shard,
    read_shard,
    read_step_shards,
)

MODEL, ROLLOUT, SHARDS, KEEP, PER_RUN = "policy", "rollout", 4, 4, 1


def model_files(v: int) -> dict[str, bytes]:
    """The exact bytes of model version v (deterministic, so reruns republish the same)."""
    rng = random.Random(v)
    return {
        "model.safetensors": rng.randbytes(rng.randint(300_000, 3_000_000)),
        "tokenizer/tokenizer.json": rng.randbytes(rng.randint(20_000, 200_000)),
        "config.json": json.dumps({"version": v}).encode(),
    }


def shard_records(step: int, shard: int) -> list[dict[str, Any]]:
    rng = random.Random(step * 1000 + shard)
    return [
        {"step": step, "shard": shard, "i": i, "reward": rng.random(), "text": "x" * rng.randint(10, 2000)}
        for i in range(16)
    ]


# ---------------------------------------------------------------- the two processes


def writer(root: Path, first: int, last: int) -> None:
    """Publish versions/steps first..last, skipping what is already marked done."""
    run = RunDir(root)
    for v in range(first, last + 1):
        if is_done(run, ROLLOUT, f"step_{v:04d}"):
            continue
        src = root / "scratch" / f"src_{v}"
        shutil.rmtree(src, ignore_errors=True)  # a killed run may have left it half written
        for rel, data in model_files(v).items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        with Lease(run.lease_path(MODEL, f"v{v:04d}"), owner=f"crash writer v{v}", ttl_s=60):
            publish_model(run, MODEL, src, version=v, meta={"v": v})
        for s in range(SHARDS):
            publish_shard(run, ROLLOUT, v, s, shard_records(v, s))
        mark_done(run, ROLLOUT, f"step_{v:04d}", {"shards": SHARDS})
        prune_versions(run, MODEL, keep=KEEP)
        shutil.rmtree(src)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.msgs: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.msgs.append(record.getMessage())


def reader(root: Path, stop: Path, out: Path) -> None:
    """Read and verify until `stop` exists; write the counts to `out`."""
    run = RunDir(root)
    warn = _Warnings()
    logging.getLogger("r1hpc.store").addHandler(warn)
    expected: dict[int, dict[str, str]] = {}
    c = {"model_reads": 0, "step_reads": 0, "shard_reads": 0, "corruptions": 0, "pruned_while_reading": 0}
    problems: list[str] = []
    best_version, best_pointer = 0, 0

    def corrupt(msg: str) -> None:
        c["corruptions"] += 1
        problems.append(msg[:500])

    while not stop.exists():
        warn.msgs.clear()
        try:
            mv = latest_model(run, MODEL, verify="sha256")
        except StoreError as e:
            mv = None
            if "no model" not in str(e):
                warn.msgs.append(str(e))
        # A verification failure of a version that is still there = a partial/corrupt version
        # was visible. One whose directory is gone was pruned by the writer while we hashed it.
        for msg in warn.msgs:
            names = [n for n in msg.replace("/", " ").replace("(", " ").split() if n.startswith("v0")]
            if names and all(not (run.models_dir(MODEL, create=False) / n[:5]).exists() for n in names):
                c["pruned_while_reading"] += 1
            else:
                corrupt(f"model: {msg}")
        if mv is not None:
            want = expected.setdefault(
                mv.version, {k: hashlib.sha256(b).hexdigest() for k, b in model_files(mv.version).items()}
            )
            got = {f["path"]: f["sha256"] for f in mv.manifest["files"]}
            if got != want:
                corrupt(f"model v{mv.version}: manifest does not describe the intended bytes")
            if mv.version < best_version:
                corrupt(f"latest_model went backward: v{mv.version} after v{best_version}")
            best_version = max(best_version, mv.version)
            c["model_reads"] += 1
        try:
            ptr = int((run.models_dir(MODEL, create=False) / "latest").read_text().strip()[1:])
            if ptr < best_pointer:
                corrupt(f"latest pointer moved backward: {ptr} after {best_pointer}")
            best_pointer = max(best_pointer, ptr)
        except (FileNotFoundError, ValueError):
            pass
        # Any shard file visible, even of a step still being written, must be complete.
        step_dirs = (
            sorted(os.listdir(run.rollouts_dir(ROLLOUT, create=False)))
            if run.rollouts_dir(ROLLOUT, create=False).is_dir()
            else []
        )
        for sd in step_dirs[-2:]:
            for name in sorted(os.listdir(run.rollouts_dir(ROLLOUT, create=False) / sd)):
                if m := re.match(r"^shard_(\d{3})\.jsonl$", name):
                    step, shard = int(sd[5:]), int(m.group(1))
                    try:
                        recs = read_shard(run.shard_path(ROLLOUT, step, shard, create=False), ROLLOUT, step, shard)
                    except StoreError as e:
                        corrupt(f"visible shard: {e}")
                        continue
                    if recs != shard_records(step, shard):
                        corrupt(f"shard {name} of step {step}: records differ from what was written")
                    c["shard_reads"] += 1
        done_dir = run.root / "done" / ROLLOUT
        names = os.listdir(done_dir) if done_dir.is_dir() else []
        steps = sorted(int(m.group(1)) for n in names if (m := re.match(r"^step_(\d{4})\.json$", n)))
        for step in steps[-1:] + random.sample(steps, min(1, len(steps))):
            try:
                recs = read_step_shards(run, ROLLOUT, step, SHARDS)
            except StoreError as e:
                corrupt(f"step {step}: {e}")
                continue
            if recs != [r for s in range(SHARDS) for r in shard_records(step, s)]:
                corrupt(f"step {step}: records differ from what was written")
            c["step_reads"] += 1
    out.write_text(json.dumps({**c, "problems": problems[:20]}))


# ---------------------------------------------------------------- the driver


def _fork_writer(root: Path, first: int, last: int, err: Path) -> int:
    """Fork a writer (no interpreter start-up, so kills land in the work); returns its pid."""
    pid = os.fork()
    if pid == 0:  # child: never return into the parent's code (pytest)
        code = 1
        logging.getLogger("r1hpc.store").setLevel(logging.ERROR)  # expected takeover notes
        try:
            writer(root, first, last)
            code = 0
        except BaseException:
            err.write_text(traceback.format_exc())
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _debris(root: Path) -> set[str]:
    """Temp entries killed writers left (evidence a kill landed mid-write)."""
    return {os.path.join(d, x) for d, dirs, files in os.walk(root) for x in dirs + files if ".tmp-" in x}


def run_crash_test(root: Path, kills: int = 200, seed: int = 0, max_s: float = 300.0) -> dict[str, Any]:
    """Kill the writer `kills` times (or until max_s); returns the figures."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    stop, out = root / "reader.stop", root / "reader.json"
    rd = subprocess.Popen(
        [sys.executable, __file__, "reader", str(root), str(stop), str(out)], stderr=subprocess.PIPE, text=True
    )
    t0 = time.monotonic()
    err = root / "writer_error.txt"
    # Calibrate: one uninterrupted writer run sets the initial range of kill delays.
    tc = time.monotonic()
    assert _wait(_fork_writer(root, 1, PER_RUN, err)) == 0, err.read_text()
    work_s = time.monotonic() - tc
    f: dict[str, Any] = {
        "trials": 0,
        "kills": 0,
        "finished_before_kill": 0,
        "kills_leaving_debris": 0,
        "reruns_ok": 0,
        "rerun_failures": [],
    }
    v = PER_RUN + 1
    while f["kills"] < kills and time.monotonic() - t0 < max_s:
        f["trials"] += 1
        before = _debris(root)
        pid = _fork_writer(root, v, v + PER_RUN - 1, err)
        time.sleep(rng.uniform(0, work_s))
        os.kill(pid, signal.SIGKILL)  # a no-op on a finished (zombie) child
        code = _wait(pid)
        # Keep the delay range near the writer's run time (machine load varies): most trials
        # kill, and the kill points spread over the whole run.
        if code == -signal.SIGKILL:
            f["kills"] += 1
            work_s *= 1.03
        else:
            assert code == 0, err.read_text()
            f["finished_before_kill"] += 1
            work_s *= 0.9
        f["kills_leaving_debris"] += bool(_debris(root) - before)
        if _wait(_fork_writer(root, v, v + PER_RUN - 1, err)) == 0:
            f["reruns_ok"] += 1
        else:
            f["rerun_failures"].append(err.read_text()[-2000:])
        v += PER_RUN
    stop.touch()
    assert rd.wait(timeout=60) == 0, rd.stderr.read() if rd.stderr else ""
    f.update(json.loads(out.read_text()))
    f["versions_published"] = v - 1
    f["final_latest"] = latest_model(RunDir(root), MODEL, verify="sha256").version
    f["seconds"] = round(time.monotonic() - t0, 1)
    f["final_kill_window_s"] = round(work_s, 3)
    return f


def summary(f: dict[str, Any]) -> str:
    return (
        f"store crash test: {f['trials']} trials, {f['kills']} SIGKILLs "
        f"({f['kills_leaving_debris']} mid-write), {f['reruns_ok']} reruns ok, "
        f"{f['model_reads']} sha256-verified model reads + {f['step_reads']} step reads "
        f"+ {f['shard_reads']} in-progress shard reads, "
        f"{f['corruptions']} corruptions seen, {f['pruned_while_reading']} reads raced a prune, "
        f"{f['seconds']} s"
    )


@pytest.mark.slow
def test_sigkill_never_exposes_partial_output(tmp_path: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    f = run_crash_test(tmp_path / "run", kills=200)
    print("\n" + summary(f))
    record_property("store_crash", json.dumps(f))
    if os.environ.get("R1HPC_STORE_CRASH_REPORT"):
        Path(os.environ["R1HPC_STORE_CRASH_REPORT"]).write_text(json.dumps(f, indent=2))
    assert f["corruptions"] == 0, f["problems"]
    assert f["rerun_failures"] == [] and f["reruns_ok"] == f["trials"]
    assert f["kills"] >= 200 and f["kills_leaving_debris"] > 0
    assert min(f["model_reads"], f["step_reads"], f["shard_reads"]) > 50  # the reader ran alongside
    assert f["final_latest"] == f["versions_published"]


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "writer":
        writer(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "reader":
        reader(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        ap = argparse.ArgumentParser(description="SIGKILL crash test of r1hpc.store")
        ap.add_argument("--kills", type=int, default=200)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--dir", type=Path, default=None, help="run dir (default: a temp dir)")
        a = ap.parse_args()
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            res = run_crash_test(a.dir or Path(d) / "run", kills=a.kills, seed=a.seed)
        print(summary(res))
        print(json.dumps(res))
