"""The run directory protocol (r1hpc.store, r1hpc.fsio, r1hpc.lease) on the local filesystem."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from r1hpc.fsio import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_temp,
    read_jsonl,
    temp_name,
)
from r1hpc.lease import BREAK_LOCK_S, Lease, LeaseHeldError, LeaseLostError
from r1hpc.store import (
    ModelVersion,
    RunDir,
    StoreError,
    done_info,
    is_done,
    latest_model,
    list_versions,
    mark_done,
    prune_versions,
    publish_model,
    publish_shard,
    read_shard,
    read_step_shards,
    shard_is_complete,
)

CTX = mp.get_context("fork")


def _src(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    d = tmp_path / "src" / name
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def _hidden(d: Path) -> list[str]:
    return [n for n in os.listdir(d) if n.startswith(".") and ".lease" not in n]


# ---------------------------------------------------------------- atomic files


def test_atomic_writes_leave_only_the_final_file(tmp_path: Path) -> None:
    p = tmp_path / "a" / "b.bin"
    assert atomic_write_bytes(p, b"one") and p.read_bytes() == b"one"
    assert atomic_write_bytes(p, b"two") and p.read_bytes() == b"two"
    assert not atomic_write_bytes(p, b"three", replace=False)  # first writer wins
    assert p.read_bytes() == b"two"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "t.txt").read_text("utf-8") == "héllo"
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2], "b": 1}
    assert _hidden(tmp_path) == [] and _hidden(tmp_path / "a") == []


def test_atomic_write_json_rejects_non_json_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"bad\.json.*not strict JSON"):
        atomic_write_json(tmp_path / "bad.json", {"x": float("nan")})
    with pytest.raises(StoreError, match=r"bad\.json"):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and _hidden(tmp_path) == []


def test_clean_temp_removes_only_dead_writers_debris(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    mine = tmp_path / temp_name("x.bin")  # our pid: alive, must stay
    mine.write_bytes(b"live")
    theirs = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{dead_pid}-")
    theirs.write_bytes(b"dead")
    (tmp_path / ".trash-v0001-abcd1234").mkdir()
    assert clean_temp(tmp_path) == 2
    assert mine.exists() and not theirs.exists()


# ---------------------------------------------------------------- JSON lines


def test_jsonl_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "m" / "metrics.jsonl"
    for i in range(3):
        append_jsonl(p, {"step": i, "text": "line\nbreak", "loss": float("nan") if i == 2 else i})
    recs = read_jsonl(p)
    assert [r["step"] for r in recs] == [0, 1, 2] and recs[0]["text"] == "line\nbreak"
    assert p.read_bytes().count(b"\n") == 3


def test_jsonl_torn_final_line_is_skipped_then_repaired(tmp_path: Path, caplog) -> None:
    p = tmp_path / "jobs.jsonl"
    append_jsonl(p, {"job": 1})
    with open(p, "ab") as f:
        f.write(b'{"job": 2, "sta')  # a writer killed mid-append
    with caplog.at_level(logging.WARNING, "r1hpc.store"):
        assert read_jsonl(p) == [{"job": 1}]
    assert "jobs.jsonl:2: ignoring incomplete final line" in caplog.text
    append_jsonl(p, {"job": 3})
    assert read_jsonl(p) == [{"job": 1}, {"job": 3}]
    assert "dropping torn final line" in caplog.text


def test_jsonl_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(StoreError, match=r"x\.jsonl:2: corrupt line"):
        read_jsonl(p)
    p.write_bytes(b'{"a": 1}\n[1, 2]\n')
    with pytest.raises(StoreError, match=r"x\.jsonl:2: expected a JSON object, got list"):
        read_jsonl(p)
    with pytest.raises(StoreError, match=r"nope\.jsonl: missing"):
        read_jsonl(tmp_path / "nope.jsonl")
    assert read_jsonl(tmp_path / "nope.jsonl", missing_ok=True) == []
    with pytest.raises(StoreError, match="must be a dict"):
        append_jsonl(p, [1])  # type: ignore[arg-type]


# ---------------------------------------------------------------- layout


def test_rundir_layout(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "r")
    assert run.shard_path("r1_zero", 7, 3) == run.root / "rollouts/r1_zero/step_0007/shard_003.jsonl"
    assert (run.root / "rollouts/r1_zero/step_0007").is_dir()
    assert run.models_dir("sft", create=False) == run.root / "models/sft"
    assert not (run.root / "models/sft").exists()
    assert run.metrics_path("sft") == run.root / "metrics/sft.jsonl"
    assert run.train_state_dir("sft").is_dir() and run.logs_dir().is_dir() and run.data_dir().is_dir()
    assert run.config_path.name == "config.yaml" and run.jobs_path.name == "jobs.jsonl"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="invalid stage name"):
            run.models_dir(bad)
    with pytest.raises(ValueError, match="invalid step -1"):
        run.step_dir("sft", -1)


# ---------------------------------------------------------------- model versions


def test_publish_and_read_latest(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    src = _src(tmp_path, "a", {"model.safetensors": b"w" * 1000, "tok/vocab.json": b"{}"})
    mv = publish_model(run, "base", src, meta={"step": 0})
    assert mv.name == "v0001" and mv.path == run.root / "models/base/v0001"
    assert (mv.path / "tok/vocab.json").read_bytes() == b"{}"
    man = json.loads((mv.path / "MANIFEST.json").read_text())
    assert {f["path"]: f["size"] for f in man["files"]} == {"model.safetensors": 1000, "tok/vocab.json": 2}
    assert man["meta"] == {"step": 0} and man["version"] == 1
    assert (run.models_dir("base") / "latest").read_text() == "v0001\n"
    got = latest_model(run, "base", verify="sha256")
    assert got == mv and got.meta == {"step": 0}
    src2 = _src(tmp_path, "b", {"model.safetensors": b"x" * 1000})
    assert publish_model(run, "base", src2).version == 2
    assert [v.version for v in list_versions(run, "base")] == [1, 2]
    assert latest_model(run, "base").version == 2
    assert _hidden(run.models_dir("base")) == []


def test_republish_is_idempotent_and_versions_immutable(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    src = _src(tmp_path, "a", {"w.bin": os.urandom(5000)})
    mv = publish_model(run, "sft", src, version=4, meta={"k": 1})
    mtime = (mv.path / "MANIFEST.json").stat().st_mtime_ns
    again = publish_model(run, "sft", src, version=4, meta={"k": 1})  # requeued job
    assert again == mv and (mv.path / "MANIFEST.json").stat().st_mtime_ns == mtime
    assert publish_model(run, "sft", src, meta={"k": 1}) == mv  # version=None, same content
    other = _src(tmp_path, "b", {"w.bin": os.urandom(5000)})
    with pytest.raises(StoreError, match=r"v0004 already exists with different content"):
        publish_model(run, "sft", other, version=4, meta={"k": 1})
    with pytest.raises(StoreError, match="different content"):
        publish_model(run, "sft", src, version=4, meta={"k": 2})  # meta is part of the content
    assert publish_model(run, "sft", other).version == 5
    assert [v.version for v in list_versions(run, "sft")] == [4, 5]


def test_latest_never_moves_backward(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    publish_model(run, "rl", _src(tmp_path, "a", {"w": b"a"}), version=5)
    publish_model(run, "rl", _src(tmp_path, "b", {"w": b"b"}), version=3)  # late, older
    assert (run.models_dir("rl") / "latest").read_text() == "v0005\n"
    assert latest_model(run, "rl").version == 5
    publish_model(run, "rl", _src(tmp_path, "a", {"w": b"a"}), version=5)
    assert (run.models_dir("rl") / "latest").read_text() == "v0005\n"


def test_latest_found_when_pointer_lags_or_is_bad(tmp_path: Path, caplog) -> None:
    run = RunDir(tmp_path / "run")
    publish_model(run, "rl", _src(tmp_path, "a", {"w": b"a"}))
    publish_model(run, "rl", _src(tmp_path, "b", {"w": b"b"}))
    ptr = run.models_dir("rl") / "latest"
    ptr.write_text("v0001\n")  # writer died between rename and pointer update
    assert latest_model(run, "rl").version == 2
    ptr.write_text("v0009\n")  # points at a version that is gone
    with caplog.at_level(logging.WARNING, "r1hpc.store"):
        assert latest_model(run, "rl").version == 2
    assert "v0009 failed size verification" in caplog.text
    ptr.write_text("garbage")
    assert latest_model(run, "rl").version == 2


def test_fallback_when_newest_is_corrupt(tmp_path: Path, caplog) -> None:
    run = RunDir(tmp_path / "run")
    good = publish_model(run, "rl", _src(tmp_path, "a", {"w.bin": b"a" * 4096}))
    bad = publish_model(run, "rl", _src(tmp_path, "b", {"w.bin": b"b" * 4096}))
    data = bytearray((bad.path / "w.bin").read_bytes())
    data[100] ^= 0xFF  # same size: only sha256 sees it
    (bad.path / "w.bin").write_bytes(bytes(data))
    assert latest_model(run, "rl", verify="size") == bad
    with caplog.at_level(logging.WARNING, "r1hpc.store"):
        assert latest_model(run, "rl", verify="sha256") == good
    assert "v0002/w.bin sha256" in caplog.text and "falling back" in caplog.text
    (bad.path / "w.bin").write_bytes(b"short")  # truncated: size sees it
    assert latest_model(run, "rl", verify="size") == good
    (good.path / "w.bin").unlink()
    with pytest.raises(StoreError) as e:
        latest_model(run, "rl")
    msg = str(e.value)
    assert str(run.models_dir("rl")) in msg and "v0002 (" in msg and "v0001 (" in msg
    assert "w.bin missing" in msg and "has 5 bytes, manifest says 4096" in msg


def test_exact_version_load_refuses_a_damaged_version(tmp_path: Path) -> None:
    """A GRPO step must use exactly v(N): no fallback, a clear error naming the damage."""
    run = RunDir(tmp_path / "run")
    v = publish_model(run, "rl", _src(tmp_path, "a", {"w.bin": b"a" * 4096}))
    assert v.checked() == v and v.checked("sha256") == v
    data = bytearray((v.path / "w.bin").read_bytes())
    data[7] ^= 0xFF
    (v.path / "w.bin").write_bytes(bytes(data))
    assert v.checked() == v  # same size
    with pytest.raises(StoreError, match=r"v0001 fails verification \(sha256\): .*w.bin sha256"):
        v.checked("sha256")
    (v.path / "w.bin").write_bytes(b"short")
    with pytest.raises(
        StoreError, match=r"v0001 fails verification \(size\): .*has 5 bytes, manifest says 4096.*rerun"
    ):
        v.checked()


def test_unfinished_publish_is_invisible(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    publish_model(run, "rl", _src(tmp_path, "a", {"w": b"a"}))
    stage = run.models_dir("rl")
    tmp = stage / temp_name("v0002")  # a writer still copying (or killed): no rename yet
    tmp.mkdir()
    (tmp / "w").write_bytes(b"partial")
    assert latest_model(run, "rl").version == 1 and [v.version for v in list_versions(run, "rl")] == [1]
    (stage / "v0003").mkdir()  # a version dir without MANIFEST (not made by us)
    assert latest_model(run, "rl").version == 1
    with pytest.raises(StoreError, match="v0003 exists but is not a valid version"):
        publish_model(run, "rl", _src(tmp_path, "c", {"w": b"c"}), version=3)
    assert publish_model(run, "rl", _src(tmp_path, "c", {"w": b"c"})).version == 4


def test_model_errors_are_clear(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(StoreError, match=r"no model published for stage 'base': .*models/base"):
        latest_model(run, "base")
    with pytest.raises(StoreError, match="source .*nowhere is not a directory"):
        publish_model(run, "base", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="holds no files"):
        publish_model(run, "base", tmp_path / "empty")
    with pytest.raises(StoreError, match="meta is not strict JSON"):
        publish_model(run, "base", _src(tmp_path, "a", {"w": b"a"}), meta={"x": {1, 2}})
    with pytest.raises(ValueError, match="verify must be"):
        latest_model(run, "base", verify="md5")  # type: ignore[arg-type]
    run.models_dir("base")
    with pytest.raises(StoreError, match="no model version published in"):
        latest_model(run, "base")


def test_prune_keeps_newest_and_pointer(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    for i in range(1, 6):
        publish_model(run, "rl", _src(tmp_path, str(i), {"w": bytes([i])}), version=i)
    (run.models_dir("rl") / "latest").write_text("v0002\n")
    assert prune_versions(run, "rl", keep=2) == [1, 3]
    assert [v.version for v in list_versions(run, "rl")] == [2, 4, 5]
    with pytest.raises(ValueError, match="keep must be"):
        prune_versions(run, "rl", keep=0)


def _publish_same_version(args: tuple[str, str, int, object]) -> tuple[str, object]:
    root, src, version, barrier = args
    barrier.wait()  # type: ignore[attr-defined]
    try:
        mv = publish_model(RunDir(root), "rl", src, version=version)
        return "ok", mv.manifest["created_by"]["pid"]
    except StoreError as e:
        return "err", str(e)


def test_concurrent_publishers_exactly_one_wins(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    n = 6
    # Different content, same version, separate processes: one winner, the rest a clear error.
    srcs = [str(_src(tmp_path, f"p{i}", {"w.bin": os.urandom(200_000) + bytes([i])})) for i in range(n)]
    barrier = CTX.Barrier(n)
    procs_out = CTX.Queue()

    def work(i: int) -> None:
        procs_out.put((i, _publish_same_version((str(run.root), srcs[i], 7, barrier))))

    procs = [CTX.Process(target=work, args=(i,)) for i in range(n)]
    for p in procs:
        p.start()
    results = dict(procs_out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join()
    winners = [i for i, (status, _) in results.items() if status == "ok"]
    assert len(winners) == 1, results
    for i, (status, msg) in results.items():
        if i != winners[0]:
            assert status == "err" and "v0007 already exists with different content" in msg
    mv = latest_model(run, "rl", verify="sha256")
    assert mv.version == 7 and (mv.path / "w.bin").read_bytes() == Path(srcs[winners[0]], "w.bin").read_bytes()
    assert mv.manifest["created_by"]["pid"] == results[winners[0]][1]
    assert _hidden(run.models_dir("rl")) == []

    # Same content, threads: every caller gets the one winner's version back.
    same = _src(tmp_path, "same", {"w.bin": os.urandom(300_000)})
    got: list[ModelVersion] = []
    tb = threading.Barrier(n)

    def tpub() -> None:
        tb.wait()
        got.append(publish_model(run, "rl2", same, version=1))

    threads = [threading.Thread(target=tpub) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == n and all(g == got[0] for g in got)
    assert _hidden(run.models_dir("rl2")) == []

    # version=None with different content: each publisher gets its own version.
    got.clear()
    tb = threading.Barrier(n)
    outs = [_src(tmp_path, f"auto{i}", {"w": bytes([i]) * 10}) for i in range(n)]

    def tauto(i: int) -> None:
        tb.wait()
        got.append(publish_model(run, "rl3", outs[i]))

    threads = [threading.Thread(target=tauto, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(g.version for g in got) == list(range(1, n + 1))
    assert (run.models_dir("rl3") / "latest").read_text() == f"v{n:04d}\n"


def test_latest_pointer_monotonic_under_concurrent_publishers(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    stage = run.models_dir("rl")
    order = [5, 2, 8, 1, 7, 3, 6, 4]
    srcs = {v: _src(tmp_path, f"m{v}", {"w": bytes([v]) * 1000}) for v in order}
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(int((stage / "latest").read_text()[1:]))
            except FileNotFoundError:
                pass

    tb = threading.Barrier(len(order))
    threads = [
        threading.Thread(target=lambda v=v: (tb.wait(), publish_model(run, "rl", srcs[v], version=v))) for v in order
    ]
    w = threading.Thread(target=watch)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    w.join()
    assert seen == sorted(seen) and (stage / "latest").read_text() == "v0008\n"


# ---------------------------------------------------------------- rollout shards


def test_shards_publish_read_and_idempotent(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    for s in range(3):
        publish_shard(run, "rl", 2, s, [{"shard": s, "i": i, "text": "é\n"} for i in range(4)])
    recs = read_step_shards(run, "rl", 2, 3)
    assert [(r["shard"], r["i"]) for r in recs] == [(s, i) for s in range(3) for i in range(4)]
    path = run.shard_path("rl", 2, 1)
    before = path.read_bytes()
    publish_shard(run, "rl", 2, 1, [{"other": True}])  # a requeued task: not rewritten
    assert path.read_bytes() == before
    publish_shard(run, "rl", 3, 0, [])
    assert read_step_shards(run, "rl", 3, 1) == [] and shard_is_complete(run, "rl", 3, 0)
    assert _hidden(run.step_dir("rl", 2)) == []


def test_shard_text_with_unicode_line_separators_reads_back(tmp_path: Path) -> None:
    # Sampled text holds any character the tokenizer can emit; a random tiny policy wrote U+2028
    # into a rollout shard, which str.splitlines() cut in two, failing the train job on every retry.
    breaks = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\r"
    run = RunDir(tmp_path / "run")
    records = [{"i": i, "text": f"a{ch}b"} for i, ch in enumerate(breaks)]
    publish_shard(run, "rl", 0, 0, records)
    assert read_step_shards(run, "rl", 0, 1) == records
    assert shard_is_complete(run, "rl", 0, 0)


def test_shard_truncation_and_missing_are_named(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    for s in range(4):
        publish_shard(run, "rl", 1, s, [{"i": i, "pad": "x" * 50} for i in range(5)])
    p1, p2 = run.shard_path("rl", 1, 1), run.shard_path("rl", 1, 2)
    data = p1.read_bytes()
    p1.write_bytes(data[: len(data) // 2])  # truncated at a random point
    lines = p2.read_bytes().split(b"\n")
    p2.write_bytes(b"\n".join(lines[:2] + lines[3:]))  # a whole record line lost
    run.shard_path("rl", 1, 3).unlink()
    assert not shard_is_complete(run, "rl", 1, 1) and not shard_is_complete(run, "rl", 1, 2)
    with pytest.raises(StoreError) as e:
        read_step_shards(run, "rl", 1, 4)
    msg = str(e.value)
    assert "shard_001.jsonl" in msg and "shard_002.jsonl: content sha256" in msg
    assert "shard_003.jsonl missing" in msg and "shard_000" not in msg
    publish_shard(run, "rl", 1, 3, [{"i": 0}])
    with pytest.raises(StoreError, match=r"beyond num_shards=2: shard_002.jsonl, shard_003.jsonl"):
        read_step_shards(run, "rl", 1, 2)
    publish_shard(run, "rl", 1, 1, [{"i": "fresh"}])  # corrupt shard gets replaced
    assert read_shard(p1) == [{"i": "fresh"}]
    (run.step_dir("rl", 9) / "shard_000.jsonl").write_bytes(run.shard_path("rl", 1, 0).read_bytes())
    with pytest.raises(StoreError, match="footer says step=1, expected 9"):
        read_step_shards(run, "rl", 9, 1)
    with pytest.raises(ValueError, match="record 1 is a list"):
        publish_shard(run, "rl", 5, 0, [{"a": 1}, [2]])  # type: ignore[list-item]


# ---------------------------------------------------------------- completion markers


def test_done_markers(tmp_path: Path, caplog) -> None:
    run = RunDir(tmp_path / "run")
    assert not is_done(run, "eval", "task_3") and done_info(run, "eval", "task_3") is None
    mark_done(run, "eval", "task_3", {"pass@1": 0.5})
    assert is_done(run, "eval", "task_3") and done_info(run, "eval", "task_3") == {"pass@1": 0.5}
    run.done_path("eval", "task_4").write_text('{"stage": "ev')  # corrupt (not by us)
    with caplog.at_level(logging.WARNING, "r1hpc.store"):
        assert not is_done(run, "eval", "task_4")
    assert "task_4.json: corrupt JSON" in caplog.text


# ---------------------------------------------------------------- leases


def test_lease_exclusive_and_release(tmp_path: Path) -> None:
    p = tmp_path / "leases" / "x.lease"
    with Lease(p, owner="trainer step 3", ttl_s=60) as a:
        assert a.held and a.holder()["owner"] == "trainer step 3"
        b = Lease(p, owner="duplicate", ttl_s=60)
        assert not b.try_acquire()
        with pytest.raises(LeaseHeldError, match=r"x\.lease is held by 'trainer step 3' on host .* pid "):
            b.acquire(wait_s=0.1)
        expires = a.holder()["expires_at"]
        time.sleep(0.01)
        a.renew()
        assert a.holder()["expires_at"] > expires
    assert not p.exists()
    with Lease(p, ttl_s=60):  # free again
        pass
    assert os.listdir(p.parent) == []


def test_lease_expiry_takeover_and_lost_owner(tmp_path: Path, caplog) -> None:
    p = tmp_path / "x.lease"
    a = Lease(p, owner="a", ttl_s=0.2, max_skew_s=0.0).acquire()
    b = Lease(p, owner="b", ttl_s=60, max_skew_s=0.0)
    assert not b.try_acquire()
    time.sleep(0.3)  # a stalls past its expiry
    with caplog.at_level(logging.WARNING, "r1hpc.store"):
        assert b.try_acquire()
    assert "took over stale lease" in caplog.text
    with pytest.raises(LeaseLostError, match="taken over"):
        a.renew()
    a.release()  # must not remove b's lease
    assert b.holder()["owner"] == "b"
    b.release()
    assert not p.exists()


def test_kept_renewed_lease_outlives_its_ttl_then_is_released(tmp_path: Path) -> None:
    p = tmp_path / "x.lease"
    a = Lease(p, owner="a", ttl_s=0.3, max_skew_s=0.0).acquire()
    b = Lease(p, owner="b", ttl_s=60, max_skew_s=0.0)
    with a.kept_renewed():
        time.sleep(1.0)  # three ttls: held only because the thread renews it
        assert not b.try_acquire() and b.holder()["owner"] == "a"
    assert not p.exists()  # released at exit
    assert b.try_acquire()
    b.release()
    with pytest.raises(StoreError, match="needs an acquired lease"):
        with Lease(p).kept_renewed():
            pass


def test_lease_of_dead_process_is_taken_at_once(tmp_path: Path) -> None:
    p = tmp_path / "x.lease"
    code = (
        "import sys; from r1hpc.lease import Lease; "
        f"Lease({str(p)!r}, owner='killed', ttl_s=3600).acquire(); import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert json.loads(p.read_text())["owner"] == "killed"
    with Lease(p, owner="rerun", ttl_s=60) as lease:
        assert lease.holder()["owner"] == "rerun"


def test_lease_being_written_counts_as_held_until_old(tmp_path: Path) -> None:
    p = tmp_path / "x.lease"
    p.write_bytes(b"")  # a creator between O_EXCL and its write
    assert not Lease(p, ttl_s=1, max_skew_s=0).try_acquire()
    old = time.time() - 10
    os.utime(p, (old, old))
    assert Lease(p, ttl_s=1, max_skew_s=0).try_acquire()


def test_lease_torn_by_renewal_is_detected_and_held(tmp_path: Path) -> None:
    p = tmp_path / "x.lease"
    Lease(p, owner="a", ttl_s=60, max_skew_s=0).acquire()
    info = json.loads(p.read_text())
    torn = p.read_text().replace(repr(info["expires_at"]), repr(info["expires_at"] - 100))
    assert torn != p.read_text()
    p.write_text(torn)  # a read that mixed old and new bytes: still valid JSON, wrong expiry
    assert Lease(p).holder() is None
    assert not Lease(p, ttl_s=1, max_skew_s=0).try_acquire()  # held until mtime + ttl


def _race_for_lease(path: str, barrier, out) -> None:  # type: ignore[no-untyped-def]
    lease = Lease(path, owner=str(os.getpid()), ttl_s=60, max_skew_s=0.0)
    barrier.wait()
    won = lease.try_acquire()
    out.put(won)
    if won:
        time.sleep(0.5)  # hold it while the others try; then exit without release
        lease._close()


@pytest.mark.parametrize("stale_first", [False, True])
def test_lease_race_has_one_winner(tmp_path: Path, stale_first: bool) -> None:
    p = tmp_path / "x.lease"
    if stale_first:  # all racers try to take over the same expired lease
        Lease(p, owner="old", ttl_s=0.05, max_skew_s=0.0).acquire()._close()
        time.sleep(0.1)
    n = 8
    barrier, out = CTX.Barrier(n), CTX.Queue()
    procs = [CTX.Process(target=_race_for_lease, args=(str(p), barrier, out)) for _ in range(n)]
    for pr in procs:
        pr.start()
    wins = [out.get(timeout=30) for _ in procs]
    for pr in procs:
        pr.join()
    assert sum(wins) == 1, wins
    assert [n for n in os.listdir(tmp_path) if ".stale-" in n or ".tmp-" in n] == []


def test_a_break_lock_holds_off_takers_and_one_left_by_a_killed_taker_is_cleared(tmp_path: Path) -> None:
    """Takers of a stale lease go one at a time (the break lock): while one is at it, others do not
    touch the lease; a lock left by a taker killed inside it is removed once BREAK_LOCK_S old."""
    p = tmp_path / "x.lease"
    Lease(p, owner="old", ttl_s=0.05, max_skew_s=0.0).acquire()._close()
    time.sleep(0.1)
    lock = tmp_path / ".x.lease.break"
    lock.touch()
    assert not Lease(p, ttl_s=60, max_skew_s=0.0).try_acquire()
    assert json.loads(p.read_text())["owner"] == "old"  # left alone while the lock is fresh
    old = time.time() - BREAK_LOCK_S - 1
    os.utime(lock, (old, old))
    taker = Lease(p, owner="new", ttl_s=60, max_skew_s=0.0)
    assert taker.try_acquire() and json.loads(p.read_text())["owner"] == "new"
    assert sorted(os.listdir(tmp_path)) == ["x.lease"]
    taker.release()


def test_without_hard_links_lease_and_first_writer_fall_back(tmp_path: Path, monkeypatch) -> None:
    def no_link(src, dst):  # type: ignore[no-untyped-def]
        raise PermissionError(1, "Operation not permitted")  # EPERM: no hard links here

    monkeypatch.setattr(os, "link", no_link)
    p = tmp_path / "x.lease"
    with Lease(p, owner="a", ttl_s=60) as a:
        assert a.holder()["owner"] == "a"
        assert not Lease(p, owner="b", ttl_s=60).try_acquire()
        a.renew()
    assert os.listdir(tmp_path) == []
    s = tmp_path / "shard.jsonl"
    assert atomic_write_bytes(s, b"first", replace=False)
    assert not atomic_write_bytes(s, b"second", replace=False) and s.read_bytes() == b"first"
    assert sorted(os.listdir(tmp_path)) == ["shard.jsonl"]
