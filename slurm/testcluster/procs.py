"""Starting, probing and stopping daemon processes for the test cluster."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from layout import ClusterError, Paths


def pid_alive(pid: int) -> bool:
    """True when pid runs and is not a zombie (PID 1 here may never reap orphans, so kill -0 is not enough)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def daemon_pid(p: Paths, daemon: str) -> int | None:
    """PID from the daemon's pidfile if that process is alive and is that daemon (guards against reused PIDs)."""
    try:
        pid = int(p.pidfile(daemon).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if pid_alive(pid) and comm == daemon[:15] else None


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session, stdin /dev/null, output appended to `log`, no other fds inherited.

    A daemon holding the caller's stdout/stderr would keep `$(...)`, capture_output or a CI log reader waiting
    until it exits; its own session keeps a terminal's Ctrl-C away from it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            start_new_session=True,
        )


def run_quiet(argv: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def must(argv: list[str], env: dict[str, str], what: str, timeout: float = 60) -> str:
    res = run_quiet(argv, env, timeout)
    if res.returncode != 0:
        raise ClusterError(
            f"{what} failed: `{' '.join(argv)}` exited {res.returncode}:\n{res.stdout}{res.stderr}".rstrip()
        )
    return res.stdout


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"--- {path}: (missing)"
    return f"--- last {len(text)} lines of {path}:\n" + "\n".join(text)


def wait_until(
    check: Callable[[], bool],
    what: str,
    p: Paths,
    daemon: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    forks: bool = False,
) -> None:
    """Poll `check()` every 0.1 s; on timeout, or once the spawned `proc` died, raise with the log tails.

    forks=True: the daemon backgrounds itself, so `proc` exiting with status 0 is expected.
    """
    deadline = time.monotonic() + timeout
    problem = f"not ready after {timeout:.0f} s"
    while time.monotonic() < deadline:
        if check():
            return
        rc = proc.poll() if proc else None
        if rc is not None and (rc != 0 or not forks):
            problem = f"exited with status {rc} while starting"
            break
        time.sleep(0.1)
    logs = "\n".join(tail(f) for f in p.logs(daemon))
    raise ClusterError(f"{daemon} {problem} (check: {what}).\n{logs}")


def ok(argv: list[str], env: dict[str, str]) -> bool:
    try:
        return run_quiet(argv, env, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ping_ok(env: dict[str, str]) -> bool:
    try:
        res = run_quiet(["scontrol", "ping"], env, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0 and "is UP" in res.stdout
