"""The run directory protocol: how the jobs of one run hand work to each other through files.

    runs/<name>/
      config.yaml  jobs.jsonl  data/  logs/  metrics/<stage>.jsonl
      models/<stage>/v0007/        published policy + MANIFEST.json (written last)
      models/<stage>/latest        "v0007": newest complete version; only moves forward
      train_state/<stage>/         trainer-native checkpoints
      rollouts/<stage>/step_0007/shard_003.jsonl   records + a self-verifying footer line
      done/<stage>/<key>.json      completion markers (a job finding one does nothing)
      leases/<stage>/<key>.lease   who is producing an output right now

Rules: every output appears by one atomic rename (or link) after its bytes are fsync'ed;
a model version is readable only once its MANIFEST (size + sha256 of every file) is inside;
readers verify and fall back; republishing the same output is a no-op, so a requeued or
duplicated array task is harmless. The filesystem semantics this relies on are listed in
`r1hpc.fsio`. Layout paths come from `RunDir`; the functions take a RunDir first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from r1hpc.fsio import (
    StoreError,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_temp,
    ensure_dir,
    fsync_dir,
    log,
    process_identity,
    read_json,
    read_jsonl,
    remove_tree,
    temp_name,
    write_all,
)
from r1hpc.lease import Lease, LeaseHeldError, LeaseLostError

__all__ = [
    "StoreError",
    "LeaseHeldError",
    "LeaseLostError",
    "Lease",
    "RunDir",
    "ModelVersion",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "append_jsonl",
    "read_jsonl",
    "publish_model",
    "version_published",
    "model_version",
    "latest_model",
    "list_versions",
    "verify_version",
    "prune_versions",
    "publish_shard",
    "shard_is_complete",
    "read_shard",
    "read_step_shards",
    "mark_done",
    "is_done",
    "done_info",
]

MANIFEST = "MANIFEST.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_CHUNK = 1 << 20


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise ValueError(
            f"invalid {kind} name {value!r}: expected letters, digits, '_', '-', '.' (starting with a letter or digit)"
        )
    return value


def _check_index(kind: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid {kind} {value!r}: expected an int >= 0")
    return value


def version_name(version: int) -> str:
    """7 -> 'v0007'."""
    return f"v{_check_index('version', version):04d}"


class RunDir:
    """Paths of one run's directory. Methods that return a directory create it on demand
    (pass create=False to only compute the path, as readers do)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def _d(self, create: bool, *parts: str) -> Path:
        d = self.root.joinpath(*parts)
        return ensure_dir(d) if create else d

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def jobs_path(self) -> Path:
        return self.root / "jobs.jsonl"

    def models_dir(self, stage: str, create: bool = True) -> Path:
        return self._d(create, "models", _check_name("stage", stage))

    def train_state_dir(self, stage: str, create: bool = True) -> Path:
        return self._d(create, "train_state", _check_name("stage", stage))

    def rollouts_dir(self, stage: str, create: bool = True) -> Path:
        return self._d(create, "rollouts", _check_name("stage", stage))

    def step_dir(self, stage: str, step: int, create: bool = True) -> Path:
        return self._d(create, "rollouts", _check_name("stage", stage), f"step_{_check_index('step', step):04d}")

    def shard_path(self, stage: str, step: int, shard: int, create: bool = True) -> Path:
        return self.step_dir(stage, step, create) / f"shard_{_check_index('shard', shard):03d}.jsonl"

    def data_dir(self, create: bool = True) -> Path:
        return self._d(create, "data")

    def metrics_path(self, stage: str, create: bool = True) -> Path:
        return self._d(create, "metrics") / f"{_check_name('stage', stage)}.jsonl"

    def logs_dir(self, create: bool = True) -> Path:
        return self._d(create, "logs")

    def done_path(self, stage: str, key: str, create: bool = True) -> Path:
        return self._d(create, "done", _check_name("stage", stage)) / f"{_check_name('key', key)}.json"

    def lease_path(self, stage: str, key: str, create: bool = True) -> Path:
        return self._d(create, "leases", _check_name("stage", stage)) / f"{_check_name('key', key)}.lease"


# ---------------------------------------------------------------- versioned models


@dataclass(frozen=True)
class ModelVersion:
    """A published, verified model version: `path` is models/<stage>/vNNNN."""

    path: Path
    version: int
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return version_name(self.version)

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.get("meta", {})

    def checked(self, verify: Literal["size", "sha256"] = "size") -> ModelVersion:
        """This version after checking its files against the MANIFEST; StoreError naming each
        problem otherwise. For loads of one exact version (a GRPO step's policy), where falling
        back to an older version, as latest_model does, would train the wrong policy."""
        _, problems = verify_version(self.path, verify)
        if problems:
            raise StoreError(
                f"{self.path} fails verification ({verify}): "
                + "; ".join(problems[:5])
                + ". It was damaged after publishing; remove the directory and rerun the "
                "job that published it (its output is recomputed, identically)"
            )
        return self


def _source_files(src: Path) -> list[str]:
    """Relative POSIX paths of the regular files under src (a top-level MANIFEST.json, e.g. from
    republishing another stage's version, is skipped: the new version gets its own)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(src).as_posix()
            if rel == MANIFEST:
                continue
            if not p.is_file():
                raise StoreError(f"publish_model: {p} is not a regular file")
            out.append(rel)
    if not out:
        raise StoreError(f"publish_model: source directory {src} holds no files")
    return out


def _sha256_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _copy_into(src: Path, files: list[str], dst: Path, expected: dict[str, dict[str, Any]]) -> None:
    """Copy files into dst (fsync'ed, dirs too), hashing what is written; the hashes must equal
    `expected` (taken before), else the source changed while we published."""
    dirs = {dst}
    for rel in files:
        out = dst / rel
        if out.parent not in dirs:
            ensure_dir(out.parent)
            dirs.add(out.parent)
        h = hashlib.sha256()
        size = 0
        with open(src / rel, "rb") as f:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    write_all(fd, chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
        if expected[rel] != {"path": rel, "size": size, "sha256": h.hexdigest()}:
            raise StoreError(f"publish_model: {src / rel} changed while it was being published")
    for d in dirs:
        fsync_dir(d)


def _same_content(manifest: dict[str, Any], files: list[dict[str, Any]], meta: dict[str, Any]) -> bool:
    return manifest.get("files") == files and manifest.get("meta", {}) == meta


def verify_version(path: Path, verify: Literal["size", "sha256"] = "size") -> tuple[dict[str, Any] | None, list[str]]:
    """Check a version dir against its MANIFEST. Returns (manifest or None, problems)."""
    if verify not in ("size", "sha256"):
        raise ValueError(f"verify must be 'size' or 'sha256', got {verify!r}")
    if not path.is_dir():
        return None, [f"{path} missing"]
    try:
        manifest = read_json(path / MANIFEST)
    except StoreError as e:
        return None, [str(e)]
    m = _VERSION_RE.match(path.name)
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("files"), list)
        or (m and manifest.get("version") != int(m.group(1)))
    ):
        return None, [f"{path / MANIFEST}: not a manifest of version {path.name}"]
    problems = []
    for entry in manifest["files"]:
        f = path / entry["path"]
        try:
            if verify == "sha256":
                size, digest = _sha256_file(f)
            else:
                size, digest = f.stat().st_size, entry["sha256"]
        except FileNotFoundError:
            problems.append(f"{f} missing")
            continue
        if size != entry["size"]:
            problems.append(f"{f} has {size} bytes, manifest says {entry['size']}")
        elif digest != entry["sha256"]:
            problems.append(f"{f} sha256 {digest[:12]}.. != manifest {entry['sha256'][:12]}..")
    return manifest, problems


def _version_numbers(stage_dir: Path) -> list[int]:
    """Numbers of the vNNNN directories present (complete by construction: they appear by rename)."""
    try:
        names = os.listdir(stage_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _VERSION_RE.match(n)))


def _read_pointer(stage_dir: Path) -> int | None:
    try:
        text = (stage_dir / "latest").read_text().strip()
    except FileNotFoundError:
        return None
    m = _VERSION_RE.match(text)
    if not m:
        log.warning("%s: corrupt pointer %r (expected like 'v0007'); ignoring it", stage_dir / "latest", text[:40])
        return None
    return int(m.group(1))


def _advance_latest(stage_dir: Path, version: int) -> None:
    """Move `latest` to `version` if that is newer. Serialised by a short lease so two writers
    cannot interleave read-compare-write and move it backward. If the lease stays busy, the
    pointer is left lagging (readers also scan the directory) rather than failing the publish."""
    try:
        with Lease(stage_dir / ".latest.lease", owner="latest pointer", ttl_s=30.0, wait_s=90.0, poll_s=0.02):
            current = _read_pointer(stage_dir)
            if current is None or version > current:
                atomic_write_text(stage_dir / "latest", version_name(version) + "\n")
    except LeaseHeldError as e:
        log.warning("%s/latest not advanced to %s: %s", stage_dir, version_name(version), e)


def _existing_manifest(target: Path) -> dict[str, Any] | None:
    if not target.exists():
        return None
    manifest, problems = verify_version(target, "size")
    if manifest is None or problems:
        raise StoreError(
            f"{target} exists but is not a valid version ({'; '.join(problems)}); "
            f"inspect and remove it by hand, or publish under another version"
        )
    return manifest


def publish_model(
    run: RunDir,
    stage: str,
    src_dir: str | os.PathLike[str],
    version: int | None = None,
    meta: dict[str, Any] | None = None,
) -> ModelVersion:
    """Publish the files of src_dir as models/<stage>/vNNNN and advance `latest`.

    version=None takes the next free number, unless the newest version already holds exactly
    these files and meta (then it is returned: republishing is a no-op). An explicit version that
    exists with equal content is returned as is; with other content, StoreError. Of concurrent
    publishers of one version exactly one wins the directory rename; the others get the winner
    back when its content is equal, StoreError otherwise (version=None moves on to the next).
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise StoreError(f"publish_model: source {src} is not a directory")
    meta = dict(meta or {})
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"publish_model {stage}: meta is not strict JSON ({e})") from e
    rels = _source_files(src)
    files = []
    for rel in rels:
        size, digest = _sha256_file(src / rel)
        files.append({"path": rel, "size": size, "sha256": digest})
    expected = {f["path"]: f for f in files}
    stage_dir = run.models_dir(stage)
    clean_temp(stage_dir)  # temp trees of writers killed mid-publish (never a live writer's)
    auto = version is None
    if auto:
        nums = _version_numbers(stage_dir)
        if nums:
            try:
                manifest = _existing_manifest(stage_dir / version_name(nums[-1]))
            except StoreError:  # a broken newest version: publish after it
                manifest = None
            if manifest is not None and _same_content(manifest, files, meta):
                _advance_latest(stage_dir, nums[-1])
                return ModelVersion(stage_dir / version_name(nums[-1]), nums[-1], manifest)
        version = (nums[-1] + 1) if nums else 1
    while True:
        name = version_name(version)
        target = stage_dir / name
        try:
            existing = _existing_manifest(target)
        except StoreError:
            if not auto:
                raise
            version += 1
            continue
        if existing is None:
            manifest = {
                "format": 1,
                "stage": stage,
                "version": version,
                "files": files,
                "meta": meta,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "created_by": process_identity(),
            }
            tmp = stage_dir / temp_name(name)
            try:
                ensure_dir(tmp)
                _copy_into(src, rels, tmp, expected)
                atomic_write_json(tmp / MANIFEST, manifest)  # LAST: makes the tree a version
                try:
                    # Fails, changing nothing, if another publisher's non-empty dir is there.
                    os.rename(tmp, target)
                    won = True
                except OSError as e:
                    if not target.exists():  # not a lost race: a real error
                        raise StoreError(f"publish_model: cannot rename {tmp} to {target}: {e}") from e
                    won = False
                if won:
                    fsync_dir(stage_dir)
                    _advance_latest(stage_dir, version)
                    return ModelVersion(target, version, manifest)
                existing = _existing_manifest(target)  # lost the race to another publisher
            finally:
                if tmp.exists():
                    remove_tree(tmp)
        if _same_content(existing, files, meta):
            _advance_latest(stage_dir, version)
            return ModelVersion(target, version, existing)
        if auto:
            version += 1
            continue
        raise StoreError(
            f"{target} already exists with different content (versions are immutable; publish under a new version)"
        )


def version_published(run: RunDir, stage: str, version: int) -> bool:
    """True once models/<stage>/vNNNN is published (its MANIFEST is written last, then the tree is
    renamed into place): one stat, for jobs polling for a version."""
    return (run.models_dir(stage, create=False) / version_name(version) / MANIFEST).is_file()


def model_version(run: RunDir, stage: str, version: int) -> ModelVersion | None:
    """models/<stage>/vNNNN if published (its MANIFEST parses; files unchecked), else None: one
    version's read for a job that needs it every step (list_versions reads every MANIFEST)."""
    path = run.models_dir(stage, create=False) / version_name(version)
    try:
        return ModelVersion(path, version, read_json(path / MANIFEST))
    except StoreError:
        return None


def list_versions(run: RunDir, stage: str) -> list[ModelVersion]:
    """Versions present in models/<stage>, oldest first, whose MANIFEST parses (files unchecked)."""
    stage_dir = run.models_dir(stage, create=False)
    out = []
    for v in _version_numbers(stage_dir):
        try:
            manifest = read_json(stage_dir / version_name(v) / MANIFEST)
        except StoreError as e:
            log.warning("list_versions: skipping %s", e)
            continue
        out.append(ModelVersion(stage_dir / version_name(v), v, manifest))
    return out


def latest_model(run: RunDir, stage: str, verify: Literal["size", "sha256"] = "size") -> ModelVersion:
    """The newest version of `stage` that passes verification.

    Candidates are the `latest` pointer and every vNNNN present (the pointer may lag when a
    writer died between its rename and the pointer update; a directory listing may lag on NFS).
    A version failing verification is skipped with a warning naming what failed.
    """
    if verify not in ("size", "sha256"):
        raise ValueError(f"verify must be 'size' or 'sha256', got {verify!r}")
    stage_dir = run.models_dir(stage, create=False)
    if not stage_dir.is_dir():
        raise StoreError(f"no model published for stage {stage!r}: {stage_dir} does not exist")
    nums = set(_version_numbers(stage_dir))
    pointer = _read_pointer(stage_dir)
    if pointer is not None:
        nums.add(pointer)
    if not nums:
        raise StoreError(f"no model version published in {stage_dir}")
    tried = []
    for v in sorted(nums, reverse=True):
        path = stage_dir / version_name(v)
        manifest, problems = verify_version(path, verify)
        if manifest is not None and not problems:
            return ModelVersion(path, v, manifest)
        log.warning(
            "model %s failed %s verification, falling back to an older version: %s",
            path,
            verify,
            "; ".join(problems[:3]),
        )
        tried.append(f"{version_name(v)} ({'; '.join(problems[:3])})")
    raise StoreError(f"no valid model version in {stage_dir}; tried: " + ", ".join(tried))


def prune_versions(run: RunDir, stage: str, keep: int) -> list[int]:
    """Delete all but the newest `keep` versions (never the one `latest` names) and the debris
    of killed writers. Only for versions no job still reads. Returns the removed numbers."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"prune_versions: keep must be an int >= 1, got {keep!r}")
    stage_dir = run.models_dir(stage, create=False)
    clean_temp(stage_dir)
    nums = _version_numbers(stage_dir)
    pointer = _read_pointer(stage_dir)
    removed = [v for v in nums[:-keep] if v != pointer]
    for v in removed:
        remove_tree(stage_dir / version_name(v))
    return removed


# ---------------------------------------------------------------- rollout shards

_FOOTER = "__shard_footer__"


def _encode_shard(records: list[dict[str, Any]], stage: str, step: int, shard: int) -> bytes:
    lines = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"shard {stage}/{step}/{shard}: record {i} is a {type(r).__name__}, expected a dict")
        try:
            lines.append(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
        except (TypeError, ValueError) as e:
            raise ValueError(f"shard {stage}/{step}/{shard}: record {i} is not JSON ({e})") from e
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    footer = {
        _FOOTER: {
            "format": 1,
            "stage": stage,
            "step": step,
            "shard": shard,
            "records": len(records),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    }
    return body + json.dumps(footer, sort_keys=True).encode() + b"\n"


def read_shard(
    path: str | os.PathLike[str], stage: str | None = None, step: int | None = None, shard: int | None = None
) -> list[dict[str, Any]]:
    """Records of one complete shard file; StoreError naming the file if missing or not intact
    (footer missing, record count or sha256 mismatch, or written for another stage/step/shard)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as e:
        raise StoreError(f"shard {p} missing") from e
    if not data.endswith(b"\n"):
        raise StoreError(f"shard {p} is truncated (no final newline)")
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    body, last = data[:cut], data[cut:]
    try:
        footer = json.loads(last)[_FOOTER]
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(f"shard {p} has no valid footer line (incomplete or not a shard)") from e
    if hashlib.sha256(body).hexdigest() != footer.get("sha256"):
        raise StoreError(f"shard {p}: content sha256 does not match its footer (corrupt)")
    for k, want in (("stage", stage), ("step", step), ("shard", shard)):
        if want is not None and footer.get(k) != want:
            raise StoreError(f"shard {p}: footer says {k}={footer.get(k)!r}, expected {want!r}")
    # Split the bytes on b"\n" only: str.splitlines() also breaks at U+2028, U+2029, U+0085 and
    # other characters that json.dumps(ensure_ascii=False) leaves raw inside generated text.
    records = []
    for n, line in enumerate(body.split(b"\n")[:-1], 1):
        try:
            records.append(json.loads(line))
        except ValueError as e:  # intact by its sha256, so written so by a writer of another format
            raise StoreError(f"{p}:{n}: not a JSON record ({e})") from e
    if len(records) != footer.get("records"):
        raise StoreError(f"shard {p}: {len(records)} records, footer says {footer.get('records')}")
    return records


def shard_is_complete(run: RunDir, stage: str, step: int, shard: int) -> bool:
    """True if the shard file exists and verifies against its footer."""
    try:
        read_shard(run.shard_path(stage, step, shard, create=False), stage, step, shard)
        return True
    except StoreError:
        return False


def publish_shard(run: RunDir, stage: str, step: int, shard: int, records: list[dict[str, Any]]) -> Path:
    """Publish one array task's records atomically. A shard already complete is left untouched
    (first writer wins: a requeued task's regenerated samples are dropped); a corrupt one is
    replaced."""
    path = run.shard_path(stage, step, shard)
    if shard_is_complete(run, stage, step, shard):
        return path
    data = _encode_shard(records, stage, step, shard)
    if atomic_write_bytes(path, data, replace=False):
        return path
    if not shard_is_complete(run, stage, step, shard):  # not another writer's complete shard
        log.warning("replacing corrupt shard %s", path)
        atomic_write_bytes(path, data, replace=True)
    return path


def read_step_shards(run: RunDir, stage: str, step: int, num_shards: int) -> list[dict[str, Any]]:
    """All records of shards 0..num_shards-1 of a step, in shard order. StoreError listing every
    missing or corrupt shard file (and any unexpected extra shard) if the step is not complete."""
    _check_index("num_shards", num_shards)
    step_dir = run.step_dir(stage, step, create=False)
    records, bad = [], []
    for i in range(num_shards):
        try:
            records.extend(read_shard(run.shard_path(stage, step, i, create=False), stage, step, i))
        except StoreError as e:
            bad.append(str(e))
    extra = sorted(
        n
        for n in (os.listdir(step_dir) if step_dir.is_dir() else [])
        if (m := re.match(r"^shard_(\d+)\.jsonl$", n)) and int(m.group(1)) >= num_shards
    )
    if extra:
        bad.append(f"{step_dir} holds shards beyond num_shards={num_shards}: {', '.join(extra)}")
    if bad:
        raise StoreError(f"step {step} of {stage} is not complete: " + "; ".join(bad))
    return records


# ---------------------------------------------------------------- completion markers


def mark_done(run: RunDir, stage: str, key: str, info: dict[str, Any] | None = None) -> Path:
    """Record that output `key` of `stage` is complete (atomically; overwriting is harmless)."""
    path = run.done_path(stage, key)
    atomic_write_json(
        path,
        {
            "stage": stage,
            "key": key,
            "info": info or {},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "by": process_identity(),
        },
    )
    return path


def done_info(run: RunDir, stage: str, key: str) -> dict[str, Any] | None:
    """The marker's content, or None if not done (a corrupt marker counts as not done)."""
    path = run.done_path(stage, key, create=False)
    if not path.exists():
        return None
    try:
        marker = read_json(path)
    except StoreError as e:
        log.warning("ignoring corrupt completion marker (the work will be redone): %s", e)
        return None
    return marker.get("info", {}) if isinstance(marker, dict) else None


def is_done(run: RunDir, stage: str, key: str) -> bool:
    """True if mark_done(run, stage, key, ...) completed."""
    return done_info(run, stage, key) is not None
