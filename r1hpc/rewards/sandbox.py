"""Run one untrusted Python program on one input, isolated from the caller.

The program never runs in the calling process. ``run_python`` starts a fresh interpreter
(``python -I -S``: isolated mode, no site-packages, so only the standard library is importable)
whose first code is a small trusted bootstrap (``_BOOTSTRAP`` below). The bootstrap, still privileged,
builds the sandbox and only then runs the program in a forked child:

* namespaces: ``unshare`` of a network namespace (only a downed loopback: no network, not even
  127.0.0.1, and abstract unix sockets are private), a PID namespace (the program is PID 1 there;
  when it exits the kernel kills every process it left behind, daemons included), a mount
  namespace with private tmpfs on /tmp, /var/tmp, /dev/shm, /run/lock (the world-writable places)
  and a fresh /proc showing only the sandbox's processes, an IPC namespace. A root caller creates
  them directly; an unprivileged caller (an ordinary Slurm user) first unshares a user namespace
  mapping its own uid/gid to themselves, which gives the bootstrap the capabilities for the others
  and the mounts; those capabilities are dropped (capset to empty sets) before the program runs,
  and RLIMIT_NPROC then counts only the sandbox's processes (it is counted per user namespace);
* a per-run uid (root caller only: ``UID_BASE + pid of the bootstrap``, unique among live
  sandboxes, no passwd entry) with no groups and ``PR_SET_NO_NEW_PRIVS`` (setuid binaries do not
  elevate). This is what makes ``RLIMIT_NPROC`` count (the kernel does not enforce it for root) and
  only this sandbox's processes count against it; it also stops the program from signalling or
  reading /proc of the caller (other uid) and from writing root-owned files such as the repository;
* Landlock, whenever the kernel has it (``SandboxConfig(landlock=False)`` turns it off), applied
  last, after the namespaces and the uid switch: read+execute only beneath the interpreter's
  directories (its prefixes and stdlib, /usr, /lib, /lib64, /bin), read+write only beneath the
  work dir and /dev/null, nothing else (so not the repository, /etc, /proc, the caller's home);
  with ABI >= 4 no TCP bind/connect, with ABI >= 6 no signals and no abstract unix sockets to
  processes outside the sandbox. Rights a kernel's ABI lacks are masked off; the ABI in force is
  reported as ``landlock_abi``. Landlock does not cover UDP or connecting to named unix sockets;
  the network namespace or the audit hook does;
* rlimits in the child: CPU seconds (SIGXCPU, SIGKILL one second later), address space, processes
  + threads, open files, file size, no core dumps;
* a wall-time limit enforced by the caller, which SIGKILLs the whole session and then every process
  of the sandbox uid; the bootstrap also kills everything of its uid when the program ends, and has
  its own deadline and a parent-death signal, in case the caller itself is killed;
* empty environment (PATH and LANG only), stdin from the test input (a file), stdout and stderr read
  incrementally: stdout is capped (over the cap the run is killed), stderr keeps only its tail.

Fallback (``SandboxConfig(namespaces=False)``, when ``unshare`` fails with EPERM, or an
unprivileged caller): an audit hook (``sys.addaudithook``) is installed before the program runs. It
refuses socket creation, starting other programs (exec, spawn, system, subprocess,
``_posixsubprocess``), ctypes, symlinks, writing, deleting or renaming anything outside the working
directory (and /dev/null), and changing directory out of it. ``os.open``'s audit event does not
carry its ``dir_fd``, so the hook makes every relative path resolve inside the work dir whatever
directory it is relative to: no directory fd outside the work dir can be obtained (a directory
path, ``O_PATH`` or ``O_DIRECTORY``), a relative path may not climb out with "..", no symlinks,
and every other ``dir_fd`` argument (mkdir, remove, rename, link, chmod, chown, utime, listdir or
scandir of an fd) is refused (so ``shutil.rmtree`` fails there). Without the uid switch (not root)
it also refuses kill of other processes, reading /proc of other processes and, unless a user + PID
namespace are in force, fork. Be clear about what this is: audit hooks are not a security
boundary; they stop the ordinary Python APIs, not native code or interpreter bugs. The uid switch
and Landlock are the real boundaries in that mode; with neither (hook-only: an old kernel and no
root) reading files the caller may read is not restricted beyond /proc of other processes.
``sandbox_capabilities()`` runs a probe and reports what is in force on this machine.

Result statuses: ok, timeout (wall or CPU limit), memory (``MemoryError``), runtime_error (non-zero
exit), killed (a signal not from a limit, or stdout over its cap; ``detail`` says which).
"""

from __future__ import annotations

import ast
import json
import math
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

STATUSES = ("ok", "timeout", "memory", "runtime_error", "killed")
UID_BASE = 1_500_000_000  # + bootstrap pid (< 2**22): far from real users, below 2**32 - 1
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_MARKER = "r1hpc-sandbox"  # in every sandbox process's command line; tests look for leftovers

# The trusted bootstrap. It runs as ``python -I -S -c _BOOTSTRAP key=value ... marker``; the keys
# are built by ``run_python``. Status lines (Python literals, read with ast.literal_eval) go to the
# inherited pipe ``cfg["status_fd"]``. It imports only cheap modules (json or signal would pull in
# re/enum and double the start-up time).
_BOOTSTRAP = (Path(__file__).with_name("sandbox_bootstrap.py")).read_text()


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. ``cpu_s`` defaults to ``ceil(wall_s)``."""

    wall_s: float = 5.0
    cpu_s: int | None = None
    memory_mb: int = 1024  # RLIMIT_AS of the program's process
    max_procs: int = 32  # RLIMIT_NPROC: processes + threads of the sandbox uid
    max_open_files: int = 64
    max_file_mb: int = 16
    max_stdout_bytes: int = 1 << 20
    stderr_tail_bytes: int = 8192
    tmpfs_mb: int = 64  # size of each private tmpfs (namespaces mode)

    def __post_init__(self) -> None:
        if not self.wall_s > 0:
            raise ValueError(f"SandboxLimits.wall_s must be > 0, got {self.wall_s!r}")
        for name in (
            "memory_mb",
            "max_procs",
            "max_open_files",
            "max_file_mb",
            "max_stdout_bytes",
            "stderr_tail_bytes",
            "tmpfs_mb",
        ):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive int, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SandboxConfig:
    """How to isolate. ``namespaces=False`` forces the audit-hook fallback (as when unshare is
    refused); ``switch_uid=False`` keeps the caller's uid (as when not root); ``landlock=False``
    skips Landlock (as on a kernel without it). ``python``: the
    interpreter for the program; by default the first of this interpreter and /usr/bin/python3
    that the sandbox uid can read (a pyenv under /root cannot be read by another uid)."""

    namespaces: bool = True
    switch_uid: bool = True
    landlock: bool = True
    python: str | None = None


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    stdout: str
    stderr_tail: str
    wall_s: float
    returncode: int | None  # exit code (negative: killed by that signal); None if never reported
    cpu_s: float | None
    detail: str  # why, for anything but "ok"
    stdout_truncated: bool = False
    isolation: dict = field(default_factory=dict)  # what was in force for this run


def _world_usable(path: str) -> bool:
    """True if a process of another uid (no shared group) can run this interpreter and read its
    standard library: every ancestor directory must be world-searchable."""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        prefix_lib = real.parent.parent / "lib"
        for p in [*real.parents, prefix_lib]:
            if p.exists() and not p.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


@cache
def _pick_python(switch_uid: bool) -> str:
    candidates = [sys.executable, "/usr/bin/python3"]
    if not (switch_uid and os.geteuid() == 0):
        return sys.executable
    for c in candidates:
        if c and os.path.exists(c) and _world_usable(c):
            return c
    raise RuntimeError(
        f"sandbox: no Python interpreter usable by an unprivileged uid among {candidates}; "
        "pass SandboxConfig(python=...) or SandboxConfig(switch_uid=False)"
    )


def _processes_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is ``uid``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as f:
                zombie = False
                for line in f:
                    if line.startswith(b"State:"):
                        zombie = line.split()[1] in (b"Z", b"X")
                    elif line.startswith(b"Uid:"):
                        if int(line.split()[1]) == uid and not zombie:
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _kill_everything(pgid: int, uid: int | None) -> None:
    """SIGKILL the sandbox session, then every process of its uid until none is left (a fork
    bomb may still be forking while we kill; RLIMIT_NPROC bounds how many it can have)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None:
        return
    for _ in range(50):
        pids = _processes_of_uid(uid)
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


_DIR_PREFIX = "r1hpc_sbx_"


@cache
def _remove_orphaned_dirs() -> int:
    """Remove run directories left by callers that were killed mid-run (once per process).
    A directory is named after its caller's pid; it is removed only if that process is gone,
    so a live run's directory is never touched (pid reuse can only delay a removal)."""
    removed = 0
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        parts = name[len(_DIR_PREFIX) :].split("_", 1)
        if not name.startswith(_DIR_PREFIX) or len(parts) != 2 or not parts[0].isdigit():
            continue
        try:
            os.kill(int(parts[0]), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        removed += 1
    return removed


def run_python(
    program: str, stdin: str = "", limits: SandboxLimits | None = None, config: SandboxConfig | None = None
) -> SandboxResult:
    """Run ``program`` (Python source) with ``stdin`` as its standard input, in the sandbox.
    Returns within ``limits.wall_s`` plus the time to kill and clean up."""
    limits = limits or SandboxLimits()
    config = config or SandboxConfig()
    python = config.python or _pick_python(config.switch_uid)
    cpu_s = limits.cpu_s if limits.cpu_s is not None else max(1, math.ceil(limits.wall_s))
    t0 = time.monotonic()
    _remove_orphaned_dirs()
    root = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}_")
    proc: subprocess.Popen | None = None
    uid: int | None = None
    abnormal = True
    try:
        os.chmod(root, 0o711)  # the sandbox uid must traverse it to reach work/ in fallback mode
        prog_path = os.path.join(root, "prog.py")
        with open(os.open(prog_path, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as f:
            f.write(program)
        in_path = os.path.join(root, "input.txt")
        with open(in_path, "w", encoding="utf-8") as f:
            f.write(stdin)
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        status_r, status_w = os.pipe()
        cfg = {
            "prog": prog_path,
            "work": work,
            "namespaces": int(config.namespaces),
            "switch_uid": int(config.switch_uid),
            "landlock": int(config.landlock),
            "uid_base": UID_BASE,
            "status_fd": status_w,
            "tmpfs_mb": limits.tmpfs_mb,
            "caller_pid": os.getpid(),
            "backstop_s": int(math.ceil(limits.wall_s)) + 5,
            "cpu_s": cpu_s,
            "as_bytes": limits.memory_mb << 20,
            "nproc": limits.max_procs,
            "nofile": limits.max_open_files,
            "fsize": limits.max_file_mb << 20,
        }
        try:
            with open(in_path, "rb") as stdin_f:
                proc = subprocess.Popen(
                    [python, "-I", "-S", "-c", _BOOTSTRAP, *(f"{k}={v}" for k, v in cfg.items()), _MARKER],
                    stdin=stdin_f,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=root,
                    env=dict(_ENV),
                    start_new_session=True,
                    pass_fds=(status_w,),
                )
        finally:
            os.close(status_w)
        if config.switch_uid and os.geteuid() == 0:
            uid = UID_BASE + proc.pid
        out, err, status_lines, why = _collect(proc, status_r, t0 + limits.wall_s, limits)
        if why is not None:
            _kill_everything(proc.pid, uid)
        abnormal = False  # killed above if needed; the finally block need not sweep again
        proc.wait()
        return _classify(proc, out, err, status_lines, why, limits, cpu_s, time.monotonic() - t0)
    finally:
        if proc is not None:
            if proc.poll() is None or abnormal:
                _kill_everything(proc.pid, uid)
                proc.wait()
            elif uid is None:
                # No uid to sweep by (the bootstrap did it otherwise): kill what is left in the
                # session. The pgid cannot be reused while a member is alive, which is the case
                # that matters.
                _kill_everything(proc.pid, None)
            for s in (proc.stdout, proc.stderr):
                if s is not None:
                    s.close()
        shutil.rmtree(root, ignore_errors=True)


def _collect(
    proc: subprocess.Popen, status_r: int, deadline: float, limits: SandboxLimits
) -> tuple[bytearray, bytearray, bytearray, str | None]:
    """Read stdout/stderr/status until all are closed, the deadline passes, or stdout overflows.
    Returns (stdout, stderr tail, status lines, reason to kill or None)."""
    out, err, status = bytearray(), bytearray(), bytearray()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, out)
    sel.register(proc.stderr.fileno(), selectors.EVENT_READ, err)
    sel.register(status_r, selectors.EVENT_READ, status)
    exited_at: float | None = None
    why: str | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                why = "timeout"
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                why = "pipes held open after the supervisor exited"
                break
            wait = deadline - now if exited_at is None else 0.05
            for key, _ in sel.select(min(wait, 0.25)):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    continue
                buf = key.data
                buf += data
                if buf is out and len(out) > limits.max_stdout_bytes:
                    del out[limits.max_stdout_bytes :]
                    why = "stdout"
                    return out, err, status, why
                if buf is err and len(err) > 2 * limits.stderr_tail_bytes:
                    del err[: -limits.stderr_tail_bytes]
    finally:
        sel.close()
        os.close(status_r)
    return out, err, status, why


def _classify(
    proc: subprocess.Popen,
    out: bytearray,
    err: bytearray,
    status_lines: bytearray,
    why: str | None,
    limits: SandboxLimits,
    cpu_s: int,
    wall: float,
) -> SandboxResult:
    final, child, compile_error = None, {}, None
    for line in status_lines.decode("utf-8", "replace").splitlines():
        msg = ast.literal_eval(line) if line.strip() else {}
        final = msg.get("final", final)
        child = msg.get("child", child)
        compile_error = msg.get("compile_error", compile_error)
    isolation = dict(child or (final or {}).get("info", {}))
    err_text = bytes(err[-limits.stderr_tail_bytes :]).decode("utf-8", "replace")
    res = SandboxResult(
        status="ok",
        stdout=bytes(out).decode("utf-8", "replace"),
        stderr_tail=err_text,
        wall_s=wall,
        returncode=None,
        cpu_s=None,
        detail="",
        stdout_truncated=why == "stdout",
        isolation=isolation,
    )
    if final is not None:
        res.returncode, res.cpu_s = final["exit"], final["cpu_s"]
    if why == "timeout":
        res.status, res.detail = "timeout", f"wall time limit {limits.wall_s} s"
    elif why == "stdout":
        res.status, res.detail = "killed", f"stdout over {limits.max_stdout_bytes} bytes"
    elif why is not None or final is None:
        res.status = "killed"
        res.detail = why or f"supervisor ended with {proc.returncode} before reporting"
    elif res.returncode == 0:
        res.status = "ok"
    elif res.returncode < 0:
        sig = -res.returncode
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and (res.cpu_s or 0) >= cpu_s - 0.05):
            res.status, res.detail = "timeout", f"cpu time limit {cpu_s} s"
        elif "MemoryError" in err_text:
            res.status, res.detail = "memory", f"memory limit {limits.memory_mb} MiB"
        else:
            res.status, res.detail = "killed", f"signal {signal.Signals(sig).name}"
    elif compile_error is not None:
        res.status, res.detail = "runtime_error", "compile error: " + compile_error
    else:
        last = err_text.strip().splitlines()[-1] if err_text.strip() else ""
        if last.startswith("MemoryError"):
            res.status, res.detail = "memory", f"memory limit {limits.memory_mb} MiB"
        else:
            res.status, res.detail = "runtime_error", last or f"exit code {res.returncode}"
    return res


_PROBE = r"""
import os, socket, json
try:
    s = socket.socket(); s.settimeout(0.5); s.connect(("127.0.0.1", 9)); net = "connected"
except PermissionError as e:
    net = "refused: " + str(e)  # by the audit hook, or EACCES from Landlock
except OSError as e:
    net = "error: " + (e.strerror or str(e))
try:
    ifaces = [n for _, n in socket.if_nameindex()]
except OSError:
    ifaces = None
try:
    nproc = sum(1 for p in os.listdir("/proc") if p.isdigit())
except OSError:
    nproc = None  # /proc not readable (Landlock)
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "net": net, "ifaces": ifaces,
                  "nproc_in_proc": nproc}))
"""


@cache
def _capabilities(namespaces: bool, switch_uid: bool, landlock: bool) -> str:
    cfg = SandboxConfig(namespaces=namespaces, switch_uid=switch_uid, landlock=landlock)
    res = run_python(_PROBE, limits=SandboxLimits(wall_s=10), config=cfg)
    probe = json.loads(res.stdout) if res.status == "ok" else {"error": res.detail, "stderr": res.stderr_tail}
    caps = {
        "root": os.geteuid() == 0,
        "python": cfg.python or _pick_python(switch_uid),
        "uid_switch": res.isolation.get("uid") is not None,
        **res.isolation,
        "probe": probe,
    }
    return json.dumps(caps)


def sandbox_capabilities(config: SandboxConfig | None = None) -> dict:
    """What isolation is in force here, measured by running a probe in the sandbox (cached):
    which namespaces were created (``userns`` for an unprivileged caller), the uid, ``landlock``
    (applied or not) and ``landlock_abi`` (0: the kernel has none; ``errors`` then says the run went
    on without it), whether the audit-hook fallback is on, and what the
    probe saw (its pid, uid, network interfaces, whether a TCP connect to 127.0.0.1 failed)."""
    config = config or SandboxConfig()
    return json.loads(_capabilities(config.namespaces, config.switch_uid, config.landlock))


def result_dict(res: SandboxResult) -> dict:
    """The result as a plain dict (for JSON logs)."""
    return asdict(res)
