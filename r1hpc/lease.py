"""Expiring exclusive leases on a shared filesystem, without flock (see `Lease`).

Relies on the filesystem semantics listed in `r1hpc.fsio`: O_CREAT|O_EXCL and link() fail
atomically on an existing name across nodes, rename is atomic, and node clocks agree within
`max_skew_s`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1hpc.fsio import (
    NO_HARD_LINKS,
    StoreError,
    clean_temp,
    ensure_dir,
    holder_is_dead,
    link_no_replace,
    log,
    process_identity,
    temp_name,
    write_all,
)

# A taker holds a lease's break lock for milliseconds (a read, a rename, a compare): one older than
# this belongs to a taker that was killed inside it.
BREAK_LOCK_S = 10.0


def _check(info: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


class LeaseHeldError(StoreError):
    """The lease is held by another live owner."""


class LeaseLostError(StoreError):
    """Our lease was taken over (we stalled past its expiry) or removed."""


class Lease:
    """An expiring exclusive claim on `path`, safe across nodes without flock.

    Acquire = write the owner (label, host, pid, Slurm job, random token) and `expires_at` to a
    private O_CREAT|O_EXCL temp file, fsync, and hard-link it to the lease name: exactly one
    creator wins, and the lease is never visible without its content (see `_create`; without
    hard links, O_CREAT|O_EXCL on the lease name itself). The file stays open
    and `renew()` rewrites it IN PLACE through that descriptor, so a renewal can never land in
    somebody else's lease file. Release renames the file aside, checks the token, deletes it.

    A lease is stale when `now > expires_at + max_skew_s`, or at once when its holder is
    certainly dead (same host, boot and pid namespace, pid gone). Unreadable content (a read torn
    by an in-place renewal, caught by a checksum; or, on the O_EXCL fallback, a creator between
    create and write) counts as held until mtime + ttl_s + max_skew_s.

    Stale takeover: takers that judged lease L stale serialise on a break lock (`.L.break`,
    O_CREAT|O_EXCL); the others go back to trying to create L. Under the lock the taker reads L
    again and goes on only if it still holds the bytes it judged stale: without that, a second
    taker that judged the same stale L could remove the fresh lease the first had just created,
    and two owners would both have won (seen: 2 of 8 racers on an expired lease). It renames L
    aside (atomic) and compares the moved bytes once more: a stale owner still alive may have
    renewed in place in between, and is then put back with link() (fails only if a new lease was
    created meanwhile; that owner learns at its next renew(): LeaseLostError). A break lock left
    by a taker killed inside it (held for milliseconds) is removed once BREAK_LOCK_S old.

    Holders must renew well before expiry (every ttl_s/3); a holder paused longer than ttl_s
    may lose the lease and learns it at renew(). Outputs are committed atomically anyway.
    """

    _SIZE = 1024  # lease files are padded to a fixed size so in-place renewal never truncates

    def __init__(
        self,
        path: str | os.PathLike[str],
        owner: str = "",
        ttl_s: float = 600.0,
        *,
        max_skew_s: float = 30.0,
        wait_s: float = 0.0,
        poll_s: float = 0.2,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"Lease {path}: ttl_s must be > 0, got {ttl_s}")
        self.path = Path(path)
        self.owner = owner
        self.ttl_s = float(ttl_s)
        self.max_skew_s = float(max_skew_s)
        self.wait_s = float(wait_s)
        self.poll_s = float(poll_s)
        self.token = ""
        self._fd: int | None = None
        self.expires_at = 0.0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _content(self) -> bytes:
        info = {
            "owner": self.owner,
            **process_identity(),
            "token": self.token,
            "ttl_s": self.ttl_s,
            "expires_at": self.expires_at,
        }
        # The checksum lets a reader detect a read torn by a concurrent in-place renewal.
        info["check"] = _check(info)
        raw = json.dumps(info, sort_keys=True).encode()
        size = max(self._SIZE, -(-(len(raw) + 1) // self._SIZE) * self._SIZE)
        return raw + b" " * (size - len(raw) - 1) + b"\n"

    def _read(self) -> tuple[bytes, float] | None:
        """(raw bytes, mtime) of the lease file at `path`, or None if there is none."""
        try:
            with open(self.path, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        """The lease content, or None if empty, partial or torn."""
        try:
            info = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(info, dict) or "expires_at" not in info:
            return None
        check = info.pop("check", None)
        return info if check == _check(info) else None

    def holder(self) -> dict[str, Any] | None:
        """The current lease file's content (None if absent or still being written)."""
        got = self._read()
        return self._parse(got[0]) if got else None

    def _is_stale(self, raw: bytes, mtime: float) -> bool:
        info = self._parse(raw)
        now = time.time()
        if info is None:
            return now > mtime + self.ttl_s + self.max_skew_s
        if holder_is_dead(info.get("host"), info.get("ns"), info.get("pid")):
            return True
        return now > float(info["expires_at"]) + self.max_skew_s

    def _create(self) -> bool:
        """Create the lease file with our content in place from its first instant.

        The content goes into a private temp file (O_EXCL), which is then hard-linked to the
        lease name: link() fails atomically if the name exists, like O_EXCL, but the lease is
        never seen empty. (With a bare O_EXCL create, a holder killed before its write would
        leave an anonymous lease that others must wait out for ttl_s.) Filesystems without
        hard links fall back to O_CREAT|O_EXCL on the lease name itself.
        """
        parent = ensure_dir(self.path.parent)
        self.token = uuid.uuid4().hex
        self.expires_at = time.time() + self.ttl_s
        content = self._content()
        tmp = parent / temp_name(self.path.name)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        won = False
        try:
            write_all(fd, content)
            os.fsync(fd)
            try:
                won = link_no_replace(tmp, self.path)
            except OSError as e:
                if e.errno not in NO_HARD_LINKS:
                    raise
                os.close(fd)
                fd = self._create_excl(content)
                won = fd >= 0
        finally:
            tmp.unlink(missing_ok=True)
            if not won and fd >= 0:
                os.close(fd)
        # No directory fsync: a lease lost to a server crash only risks duplicate work.
        if won:
            self._fd = fd
        return won

    def _create_excl(self, content: bytes) -> int:
        """O_CREAT|O_EXCL on the lease name, then write: the fd, or -1 if it exists."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return -1
        try:
            write_all(fd, content)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        return fd

    def _aside(self) -> Path:
        return self.path.with_name(f".{self.path.name}.stale-{uuid.uuid4().hex[:8]}")

    def _move_aside(self) -> tuple[Path, bytes | None] | None:
        """Rename the lease file aside (atomic: only one mover gets it); its new path and the bytes
        it holds (None if a cleaner removed it since), or None when there was no lease file."""
        aside = self._aside()
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return None
        try:
            return aside, aside.read_bytes()
        except FileNotFoundError:
            return aside, None

    def _break_lock(self) -> Path:
        return self.path.with_name(f".{self.path.name}.break")

    def _break(self, judged: bytes) -> None:
        """Remove the lease file if it still holds exactly the bytes we judged stale (class
        docstring: one taker at a time, under the break lock)."""
        lock = self._break_lock()
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another taker is at it; ours goes back to creating
            with contextlib.suppress(FileNotFoundError):
                if time.time() > lock.stat().st_mtime + BREAK_LOCK_S + self.max_skew_s:
                    log.warning("lease %s: removing the break lock of a taker that died in it", self.path)
                    lock.unlink(missing_ok=True)
            return
        try:
            got = self._read()
            if got is None or got[0] != judged:
                return  # taken over or released meanwhile: nothing stale left to remove
            got_aside = self._move_aside()
            if got_aside is None:
                return
            aside, moved = got_aside
            if moved != judged:  # renewed in place since: put it back if the name is free
                log.warning("lease %s changed while being taken over; restoring it", self.path)
                self._restore(aside)
                return
            stale = judged.decode("utf-8", "replace").strip()[:300]
            log.warning("lease %s: took over stale lease %s", self.path, stale)
            aside.unlink(missing_ok=True)
        finally:
            lock.unlink(missing_ok=True)

    def _restore(self, aside: Path) -> None:
        """Put a lease we moved aside by mistake back, unless a newer lease took the name (its
        owner and the moved one then learn at renew(): LeaseLostError for the loser)."""
        try:
            os.link(aside, self.path)
        except (FileExistsError, FileNotFoundError):
            pass
        except OSError as e:
            if e.errno not in NO_HARD_LINKS:
                raise
            if not self.path.exists():  # no hard links: rename back (may replace in a tiny window)
                os.rename(aside, self.path)
        aside.unlink(missing_ok=True)

    def break_if_stale(self) -> bool:
        """Remove the lease file if it is stale (its holder is dead or it expired); True if removed
        (or absent). For cleaning up after holders that were killed, before anyone waits on them."""
        got = self._read()
        if got is None:
            return True
        if not self._is_stale(*got):
            return False
        self._break(got[0])
        return not self.path.exists()

    def try_acquire(self) -> bool:
        """Acquire now if free or stale; False if a live owner holds it."""
        if self.held:
            raise StoreError(f"lease {self.path} is already held by this Lease object")
        clean_temp(self.path.parent)  # temp files of holders killed while creating
        for _ in range(5):
            if self._create():
                return True
            got = self._read()
            if got is None:
                continue  # released between our create and our read
            if not self._is_stale(*got):
                return False
            self._break(got[0])
        return False

    def acquire(self, wait_s: float | None = None) -> Lease:
        """Acquire, polling up to `wait_s` seconds; LeaseHeldError naming the holder otherwise."""
        deadline = time.monotonic() + (self.wait_s if wait_s is None else wait_s)
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                info = self.holder()
                if info is None:
                    raise LeaseHeldError(
                        f"lease {self.path} is held but its file is empty or unreadable (being "
                        f"written, or its creator died while writing); it is taken over once "
                        f"{self.ttl_s + self.max_skew_s:.0f} s past its mtime"
                    )
                left = float(info.get("expires_at", 0)) - time.time()
                raise LeaseHeldError(
                    f"lease {self.path} is held by {info.get('owner')!r} on host "
                    f"{info.get('host')} pid {info.get('pid')} slurm job "
                    f"{info.get('slurm_job_id')}, expiring in {left:.0f} s"
                )
            time.sleep(self.poll_s)
        return self

    def renew(self) -> None:
        """Push expiry to now + ttl_s. LeaseLostError if the file at `path` is no longer ours."""
        if self._fd is None:
            raise LeaseLostError(f"lease {self.path} is not held")
        got = self._read()
        info = self._parse(got[0]) if got else None
        if not info or info.get("token") != self.token:
            self._close()
            raise LeaseLostError(
                f"lease {self.path} was taken over or removed (now held by {info and info.get('owner')!r})"
            )
        self.expires_at = time.time() + self.ttl_s
        try:
            os.pwrite(self._fd, self._content(), 0)
            os.fsync(self._fd)
        except OSError as e:  # ESTALE on NFS: the file was removed by a taker
            self._close()
            raise LeaseLostError(f"lease {self.path}: renewal failed ({e})") from e

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        """Give the lease up; never removes a lease that another owner holds now."""
        if self._fd is None:
            return
        self._close()
        got_aside = self._move_aside()
        if got_aside is None or got_aside[1] is None:  # gone, or a cleaner removed it: ours or gone anyway
            return
        aside, moved = got_aside
        info = self._parse(moved)
        if not info or info.get("token") != self.token:
            log.warning("lease %s was taken over before release; leaving the new owner's", self.path)
            self._restore(aside)
            return
        aside.unlink(missing_ok=True)

    @contextlib.contextmanager
    def kept_renewed(self) -> Iterator[Lease]:
        """Hold this (acquired) lease for as long as the block runs, however long: a daemon thread
        renews it every ttl_s/3 (a LeaseLostError there is logged, and renewing stops); released
        at exit."""
        if not self.held:
            raise StoreError(f"lease {self.path}: kept_renewed() needs an acquired lease")
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except LeaseLostError as e:
                    log.warning("%s", e)
                    return

        threading.Thread(target=renew, name=f"lease-renew {self.path.name}", daemon=True).start()
        try:
            yield self
        finally:
            stop.set()
            self.release()

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
