"""Crash-safe file primitives for a run directory on a shared filesystem (NFS, Lustre, GPFS).

Every job of a run talks to the others only through files, so each write here is either
invisible or complete, and a job killed at any instruction leaves nothing a reader could
mistake for output. `r1hpc.store` builds the run-directory protocol on top of these.

Filesystem semantics ASSUMED (true of local POSIX filesystems, NFSv3/v4, Lustre and GPFS):
  * rename(2) within one directory is atomic: a reader opening the name sees the old file or the
    new one, never a mix; rename of a directory onto an existing NON-EMPTY directory fails
    (ENOTEMPTY/EEXIST) and changes nothing. That failure is what makes "exactly one publisher
    of a model version wins" (store.publish_model).
    (On Linux it succeeds onto an EMPTY directory: version directories are never empty.)
  * open(O_CREAT|O_EXCL) and link(2) fail with EEXIST when the name exists, atomically, across
    nodes (NFSv3+ does O_EXCL on the server; Lustre and GPFS too). A retransmitted NFS link() may
    report EEXIST although it succeeded: `link_no_replace` checks the inode for that case.
    Without hard links (EPERM/ENOTSUP) first-writer-wins degrades to check-then-rename: each
    file still appears whole, but two racing writers may both "win" (the last one stays).
  * close-to-open consistency (NFS): data fsync'ed or closed by a writer is seen by a reader that
    opens the file afterwards. Readers here always open by name and read the file whole; they
    never trust a cached directory listing alone (store.latest_model also reads `latest`).
  * fsync(fd) makes the data durable on the server; fsync of the directory makes a rename or a
    create durable (on NFS the server commits metadata ops synchronously; where a filesystem
    refuses to fsync a directory, EINVAL/ENOTSUP is ignored).
  * node clocks agree within `max_skew_s` (default 30 s; NTP/chrony keeps clusters within ms).
    Only lease expiry depends on clocks; nothing else compares times across nodes.

NOT assumed: flock/fcntl locks across nodes (not coherent on many NFS/Lustre mounts), atomic
O_APPEND from several nodes (NFS does not provide it: append_jsonl files have ONE writer),
ordering between writes to different files without fsync, and that directory listings are
fresh (NFS caches them for up to acdirmax seconds).

Leases (`r1hpc.lease.Lease`) guard against wasted duplicate work, not against corruption:
correctness comes from the atomic commit (rename / link) of each output, so even two holders of
one lease (possible only after a holder stalls longer than its ttl) cannot publish a torn output.

Tested: process death (SIGKILL at random points, tests/test_store_crash.py). Not testable here:
node or server crashes, where the fsync ordering above is what keeps outputs whole.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("r1hpc.store")


class StoreError(RuntimeError):
    """A run-directory file is missing, incomplete or corrupt, or a write is not allowed."""


# ---------------------------------------------------------------- identity of this process


def _ns_tag() -> str:
    """8 hex chars identifying this kernel boot + pid namespace (pids are comparable only inside it)."""
    parts = []
    for p in ("/proc/sys/kernel/random/boot_id",):
        try:
            parts.append(Path(p).read_text().strip())
        except OSError:
            parts.append("no-boot-id")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("no-pidns")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


_HOST = socket.gethostname()
_NS = _ns_tag()


def process_identity() -> dict[str, Any]:
    """Who is writing: host, pid, boot/pid-namespace tag and the Slurm job (if any)."""
    env = os.environ
    return {
        "host": _HOST,
        "ns": _NS,
        "pid": os.getpid(),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
    }


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder_is_dead(host: Any, ns: Any, pid: Any) -> bool:
    """True only when the process certainly died: same host, same boot and pid namespace, pid gone.

    A reused pid reads as alive, which only delays recovery (to the ttl), never breaks safety.
    """
    return host == _HOST and ns == _NS and isinstance(pid, int) and not pid_alive(pid)


# ---------------------------------------------------------------- atomic whole-file writes

# Temp names start with "." (readers and listings skip them) and end with who wrote them, so a
# cleaner can tell a dead writer's debris from a live writer's work in progress.
_TEMP_RE = re.compile(r"\.tmp-(?P<host>.+)-(?P<ns>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}$")


def temp_name(final_name: str) -> str:
    """A unique hidden sibling name for building `final_name` before the atomic rename."""
    return f".{final_name}.tmp-{_HOST}-{_NS}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make creates/renames inside directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems cannot fsync a directory; their metadata ops are sync
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """mkdir -p, fsyncing the parent of every directory created so the new name is durable."""
    p = Path(path)
    if p.is_dir():
        return p
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
        fsync_dir(d.parent)
    if not p.is_dir():
        raise StoreError(f"{p} exists but is not a directory")
    return p


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a single write may be short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# link() errors meaning "this filesystem has no hard links"
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


def link_no_replace(src: Path, dst: Path) -> bool:
    """Hard-link src to dst unless dst exists. True if our link is now at dst."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        # A retransmitted NFS LINK whose first attempt succeeded answers EEXIST: check the inode.
        try:
            return os.path.samefile(src, dst)
        except FileNotFoundError:
            return False


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> bool:
    """Write `data` to `path` so readers see the old file, no file, or all of `data`.

    Temp file in the same directory, write, fsync, rename (or link when replace=False), fsync the
    directory. replace=False never overwrites an existing `path` (first writer wins); returns
    False in that case. Returns True when our data is at `path`.
    """
    path = Path(path)
    parent = ensure_dir(path.parent)
    tmp = parent / temp_name(path.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)  # close reports deferred NFS write errors: let them raise
        if replace:
            os.replace(tmp, path)
            created = True
        else:
            try:
                created = link_no_replace(tmp, path)
                os.unlink(tmp)
            except OSError as e:
                if e.errno not in NO_HARD_LINKS:
                    raise
                created = not path.exists()  # no hard links: check, then rename (see above)
                if created:
                    os.replace(tmp, path)
                else:
                    os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(parent)
    return created


def atomic_write_text(path: str | os.PathLike[str], text: str, *, replace: bool = True) -> bool:
    """atomic_write_bytes of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), replace=replace)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, replace: bool = True) -> bool:
    """atomic_write_bytes of strict JSON (no NaN/Infinity), indented, keys sorted."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"cannot write {path}: value is not strict JSON ({e})") from e
    return atomic_write_text(path, text + "\n", replace=replace)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; a missing or corrupt file raises StoreError naming it."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as e:
        raise StoreError(f"{p}: missing") from e
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{p}: corrupt JSON ({e})") from e


def remove_tree(path: Path) -> None:
    """Delete a directory so that it vanishes atomically: rename to a hidden trash name first.

    Deleting in place would let a concurrent rename publish a half-deleted tree; after the
    rename nobody can reach the tree by its old name.
    """
    trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def clean_temp(directory: str | os.PathLike[str], stale_after_s: float = 86400.0) -> int:
    """Remove debris left by killed writers in `directory` (not recursive). Returns the count.

    A temp entry is removed when its writer is certainly dead (same host/boot/pid namespace and
    the pid is gone) or it was last modified more than `stale_after_s` ago; trash is always
    removed, set-aside stale leases once a minute old (nobody uses them after that).
    """
    d = Path(directory)
    removed = 0
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return 0
    now = time.time()
    for e in entries:
        if not e.name.startswith("."):
            continue
        m = _TEMP_RE.search(e.name)
        if m:
            try:
                old = now - e.stat(follow_symlinks=False).st_mtime > stale_after_s
            except FileNotFoundError:
                continue
            if not (old or holder_is_dead(m["host"], m["ns"], int(m["pid"]))):
                continue
        elif ".stale-" in e.name:  # a lease taker may be reading it for a moment after the rename
            try:
                if now - e.stat(follow_symlinks=False).st_ctime < 60:  # ctime: time of the rename
                    continue
            except FileNotFoundError:
                continue
        elif not e.name.startswith(".trash-"):
            continue
        p = Path(e.path)
        if e.is_dir(follow_symlinks=False):
            if e.name.startswith(".trash-"):
                shutil.rmtree(p, ignore_errors=True)
            else:
                remove_tree(p)
        else:
            try:
                p.unlink()
            except FileNotFoundError:
                continue
        removed += 1
    return removed


# ---------------------------------------------------------------- single-writer JSON lines


def _repair_torn_tail(fd: int, path: Path, size: int) -> None:
    """Truncate an incomplete final line (no newline) so the next record starts on a new line."""
    pos = size
    chunk = 65536
    while pos > 0:
        start = max(0, pos - chunk)
        buf = os.pread(fd, pos - start, start)
        i = buf.rfind(b"\n")
        if i >= 0:
            keep = start + i + 1
            break
        pos = start
    else:
        keep = 0
    log.warning("%s: dropping torn final line (%d bytes without newline, left by a killed writer)", path, size - keep)
    os.ftruncate(fd, keep)


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON object as one line, fsync'ed. ONE writer per file (jobs.jsonl, metrics).

    A record counts only once its newline is on disk; a torn final line left by a killed writer
    is cut off before appending (safe only because nobody else writes the file).
    NaN/Infinity are written as Python's json does (readable by read_jsonl).
    """
    p = Path(path)
    if not isinstance(record, dict):
        raise StoreError(f"append_jsonl {p}: record must be a dict, got {type(record).__name__}")
    try:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise StoreError(f"append_jsonl {p}: record is not JSON-serialisable ({e})") from e
    data = (line + "\n").encode("utf-8")  # json.dumps escapes newlines inside strings
    ensure_dir(p.parent)
    created = not p.exists()
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            _repair_torn_tail(fd, p, size)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(p.parent)


def read_jsonl(path: str | os.PathLike[str], *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """All records of a JSON-lines file.

    An incomplete final line (no trailing newline: a writer killed mid-append) is skipped with a
    warning; any bad line before it raises StoreError naming the file and line number.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as e:
        if missing_ok:
            return []
        raise StoreError(f"{p}: missing") from e
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail:
        log.warning(
            "%s:%d: ignoring incomplete final line (%d bytes, no newline; a killed writer)",
            p,
            len(lines) + 1,
            len(tail),
        )
    out: list[dict[str, Any]] = []
    for n, raw in enumerate(lines, 1):
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(
                f"{p}:{n}: corrupt line, expected one JSON object ({e}); only an incomplete final line is tolerated"
            ) from e
        if not isinstance(obj, dict):
            raise StoreError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
        out.append(obj)
    return out
