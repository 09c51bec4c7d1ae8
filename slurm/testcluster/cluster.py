#!/usr/bin/env python3
"""Single-node Slurm test cluster (slurmctld + slurmd + slurmdbd/MariaDB accounting, 4 fake GPUs).

Stdlib only, Python >= 3.11, run as root. Everything lives in one base dir (default /tmp/r1hpc-testcluster,
env R1HPC_TESTCLUSTER_DIR overrides); configs are rendered from the *.in templates next to this file.

    python3 slurm/testcluster/cluster.py install          # apt-get the Debian packages if missing
    python3 slurm/testcluster/cluster.py start            # idempotent; prints `export SLURM_CONF=...`
    python3 slurm/testcluster/cluster.py status           # exit 0 only when all 5 daemons run and answer
    python3 slurm/testcluster/cluster.py stop             # scancel all, then stop the daemons
    eval "$(python3 slurm/testcluster/cluster.py env)"    # SLURM_CONF for this shell
    python3 slurm/testcluster/cluster.py run -- .venv/bin/python -m pytest tests/slurm
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from layout import DB_PASSWORD, HERE, ClusterError, Paths, base_dir, hostname, prepare_dirs, render_configs
from procs import daemon_pid, must, ok, pid_alive, ping_ok, run_quiet, spawn, wait_until

CLUSTER = "testcluster"
DB_PORT = 13306
ACCOUNTS = ("test", "research")  # root is added to both; DefaultAccount is the first
PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
BINARIES = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def client_env(p: Paths) -> dict[str, str]:
    env = dict(os.environ)
    env["SLURM_CONF"] = str(p.slurm_conf)
    env["PATH"] = env.get("PATH", "") + ":" + SBIN_PATH
    return env


# ---------------------------------------------------------------- start


def start_munge(p: Paths, env: dict[str, str]) -> None:
    m = p.base / "munge"
    as_munge = ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups"]
    proc = None
    if not daemon_pid(p, "munged"):
        key = m / "munge.key"
        if not key.exists() or key.stat().st_size == 0:
            must([*as_munge, "mungekey", "-c", "-k", str(key)], env, "creating the munge key")
        proc = spawn(
            [
                *as_munge,
                "munged",
                f"--socket={p.munge_sock}",
                f"--key-file={key}",
                f"--pid-file={p.pidfile('munged')}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
            m / "munged.out",
            env,
        )
    wait_until(
        lambda: ok(["munge", "-n", f"--socket={p.munge_sock}"], env), "munge -n", p, "munged", 30, proc, forks=True
    )


def _sql(p: Paths, env: dict[str, str], sql: str) -> list[str]:
    out = must(
        ["mariadb", "--no-defaults", "-S", str(p.mysql_sock), "-u", "root", "-N", "-B", "-e", sql], env, "MariaDB query"
    )
    return out.splitlines()


def start_mariadb(p: Paths, env: dict[str, str]) -> None:
    d = p.base / "mysql"
    proc = None
    if not daemon_pid(p, "mariadbd"):
        if not (d / "data" / "mysql").is_dir():
            must(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    "--user=mysql",
                    f"--datadir={d / 'data'}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                env,
                "mariadb-install-db",
                180,
            )
        proc = spawn(
            [
                "mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={d / 'data'}",
                f"--socket={p.mysql_sock}",
                f"--port={DB_PORT}",
                "--bind-address=127.0.0.1",
                f"--pid-file={p.pidfile('mariadbd')}",
                f"--log-error={d / 'mariadbd.err'}",
                # 1024M: slurmdbd warns about the 128M default; RSS stays ~125 MB.
                "--innodb-buffer-pool-size=1024M",
                "--innodb-lock-wait-timeout=900",
            ],
            d / "mariadbd.out",
            env,
        )
    wait_until(
        lambda: ok(["mariadb", "--no-defaults", "-S", str(p.mysql_sock), "-u", "root", "-e", "select 1"], env),
        "mariadb select 1",
        p,
        "mariadbd",
        90,
        proc,
    )
    _sql(
        p,
        env,
        "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
        f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';"
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';",
    )


def start_slurmdbd(p: Paths, env: dict[str, str]) -> None:
    proc = None
    if not daemon_pid(p, "slurmdbd"):
        proc = spawn(["slurmdbd", "-D"], p.logs("slurmdbd")[1], env)
    wait_until(lambda: ok(["sacctmgr", "-n", "list", "cluster"], env), "sacctmgr list cluster", p, "slurmdbd", 60, proc)


def ensure_accounts(env: dict[str, str]) -> None:
    """Cluster, accounts test + research, and root in both (default test). The cluster must exist first."""

    def lines(*args: str) -> set[str]:
        return set(must(["sacctmgr", "-n", "-P", *args], env, "sacctmgr list").split())

    if CLUSTER not in lines("list", "cluster", "format=cluster"):
        must(["sacctmgr", "-i", "add", "cluster", CLUSTER], env, "adding the cluster")
    have = lines("list", "account", "format=account")
    for acct in ACCOUNTS:
        if acct not in have:
            must(
                ["sacctmgr", "-i", "add", "account", acct, f"Description={acct}", f"Organization={acct}"],
                env,
                f"adding account {acct}",
            )
    have = lines("list", "assoc", "user=root", f"cluster={CLUSTER}", "format=account")
    for acct in ACCOUNTS:
        if acct not in have:
            must(
                ["sacctmgr", "-i", "add", "user", "root", f"Account={acct}", f"DefaultAccount={ACCOUNTS[0]}"],
                env,
                f"adding root to account {acct}",
            )


def start_slurmctld(p: Paths, env: dict[str, str]) -> None:
    proc = None
    if not daemon_pid(p, "slurmctld"):
        proc = spawn(["slurmctld", "-D", "-f", str(p.slurm_conf)], p.logs("slurmctld")[1], env)
    wait_until(lambda: ping_ok(env), "scontrol ping", p, "slurmctld", 60, proc)


def node_state(env: dict[str, str]) -> str:
    res = run_quiet(["sinfo", "-h", "-N", "-n", hostname(), "-o", "%T"], env, timeout=10)
    return res.stdout.split()[0] if res.returncode == 0 and res.stdout.split() else ""


def start_slurmd(p: Paths, env: dict[str, str]) -> None:
    proc = None
    if not daemon_pid(p, "slurmd"):
        proc = spawn(["slurmd", "-D", "-f", str(p.slurm_conf), "-N", hostname()], p.logs("slurmd")[1], env)
    host = hostname()
    resumed = False

    def ready() -> bool:
        nonlocal resumed
        state = node_state(env)
        # A saved DRAIN/INVAL/DOWN state survives restarts; clear it once slurmd has registered.
        if not resumed and state.startswith(("drain", "down", "inval")) and not state.endswith("*"):
            print(f"node {host} is {state}; resuming it", file=sys.stderr)
            run_quiet(["scontrol", "update", f"NodeName={host}", "State=RESUME"], env)
            resumed = True
        return state in ("idle", "mixed", "allocated", "completing")

    wait_until(ready, f"node {host} idle in sinfo", p, "slurmd", 60, proc)


def start(p: Paths) -> bool:
    """Bring up whatever is not running. Returns True when at least one daemon had to be started."""
    if os.geteuid() != 0:
        raise ClusterError("must run as root (daemons drop to the munge/mysql/slurm users themselves)")
    missing = [b for b in BINARIES if not _which(b)]
    if missing:
        raise ClusterError(f"missing {', '.join(missing)}; run `python3 {HERE / 'cluster.py'} install` first")
    was_up = {d: daemon_pid(p, d) is not None for d in BINARIES_ORDER}
    prepare_dirs(p)
    changed = render_configs(p)
    if changed and any(was_up[d] for d in ("slurmdbd", "slurmctld", "slurmd")):
        print(f"warning: {', '.join(changed)} changed while daemons run; `stop` then `start` to apply", file=sys.stderr)
    env = client_env(p)
    steps = [
        ("munged", start_munge),
        ("mariadbd", start_mariadb),
        ("slurmdbd", start_slurmdbd),
        ("accounts", lambda p, env: ensure_accounts(env)),
        ("slurmctld", start_slurmctld),
        ("slurmd", start_slurmd),
    ]
    for name, step in steps:
        t0 = time.monotonic()
        step(p, env)
        note = "already running" if was_up.get(name) else "ready"
        print(f"  {name:9s} {note} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return not all(was_up.values())


BINARIES_ORDER = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


def _which(binary: str) -> bool:
    return any(Path(d, binary).is_file() for d in SBIN_PATH.split(":"))


# ---------------------------------------------------------------- stop


def cancel_all(p: Paths, env: dict[str, str], timeout: float = 60) -> None:
    if not daemon_pid(p, "slurmctld") or not ping_ok(env):
        return
    jobs = run_quiet(["squeue", "-h", "-o", "%A"], env).stdout.split()
    if jobs:
        run_quiet(["scancel", *jobs], env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = run_quiet(["squeue", "-h", "-o", "%A"], env)
        if res.returncode == 0 and not res.stdout.strip():
            return
        time.sleep(0.2)
    print(f"warning: queue not empty {timeout:.0f} s after scancel; stopping anyway", file=sys.stderr)


def terminate(p: Paths, daemons: tuple[str, ...], timeout: float) -> None:
    """SIGTERM each running daemon, wait for all to exit, SIGKILL the ones still alive after `timeout`."""
    pids = {d: pid for d in daemons if (pid := daemon_pid(p, d))}
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for d, pid in pids.items():
        if pid_alive(pid):
            print(f"warning: {d} (pid {pid}) ignored SIGTERM for {timeout:.0f} s; killing it", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)


def stop(p: Paths) -> None:
    env = client_env(p)
    cancel_all(p, env)
    terminate(p, ("slurmd", "slurmctld"), 30)
    terminate(p, ("slurmdbd",), 30)
    terminate(p, ("mariadbd", "munged"), 60)


# ---------------------------------------------------------------- status / run


def status(p: Paths, quiet: bool = False) -> bool:
    up = True
    for d in BINARIES_ORDER:
        pid = daemon_pid(p, d)
        up &= pid is not None
        if not quiet:
            print(f"{d:10s} {'running, pid ' + str(pid) if pid else 'stopped'}")
    answers = up and ping_ok(client_env(p))
    if not quiet:
        print(f"{'scontrol':10s} {'ping ok' if answers else 'no answer'}")
        print(f"base dir   {p.base}")
    return answers


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(p: Paths, cmd: list[str]) -> int:
    if not cmd:
        raise ClusterError("run needs a command: cluster.py run -- CMD ARGS...")
    started = False
    # SIGTERM (e.g. from CI) should also stop what we started: turn it into an exception.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if not status(p, quiet=True):
            t0 = time.monotonic()
            started = True  # before start(): an interrupted or failed start is cleaned up too
            start(p)
            print(f"test cluster started in {time.monotonic() - t0:.1f} s ({p.base})", file=sys.stderr)
        env = client_env(p)
        env["R1HPC_TESTCLUSTER_DIR"] = str(p.base)
        try:
            child = subprocess.Popen(cmd, env=env)
        except OSError as err:
            raise ClusterError(f"cannot run {cmd[0]!r}: {err}") from err
        try:
            rc = child.wait()
        except KeyboardInterrupt:
            # The child got the terminal's SIGINT too; a SIGTERM only reached us, so pass it on.
            child.send_signal(signal.SIGINT)
            child.wait()
            raise
        return rc if rc >= 0 else 128 - rc
    except KeyboardInterrupt:
        return 130
    finally:
        if started:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C or TERM must not skip the stop
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            t0 = time.monotonic()
            stop(p)
            print(f"test cluster stopped in {time.monotonic() - t0:.1f} s", file=sys.stderr)


def install() -> None:
    missing = [b for b in BINARIES if not _which(b)]
    if not missing:
        print("all packages present")
        return
    print(f"missing {', '.join(missing)}; installing {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "start", "stop", "status", "env"):
        sub.add_parser(name)
    run_p = sub.add_parser("run", help="start if needed, run CMD with SLURM_CONF, stop if we started it")
    run_p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    p = Paths(base_dir())
    try:
        if args.command == "install":
            install()
        elif args.command == "start":
            t0 = time.monotonic()
            start(p)
            print(f"test cluster up in {time.monotonic() - t0:.1f} s; logs in {p.base}/slurm/log", file=sys.stderr)
            print(f"export SLURM_CONF={p.slurm_conf}")
        elif args.command == "stop":
            t0 = time.monotonic()
            stop(p)
            print(f"test cluster stopped in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        elif args.command == "status":
            return 0 if status(p) else 1
        elif args.command == "env":
            print(f"export SLURM_CONF={p.slurm_conf}")
        elif args.command == "run":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return run(p, cmd)
    except (ClusterError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        print(f"cluster.py {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
