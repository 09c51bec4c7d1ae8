"""Attacks on the sandbox, each run for real, in every mode this machine supports:

* ``full``: namespaces (net, pid, mount, ipc) + per-run uid + Landlock, what a root caller gets;
* ``no_ns``: root caller, ``namespaces=False`` (as when unshare is refused): uid switch + Landlock +
  rlimits + the audit hook;
* ``user``: an unprivileged caller (uid 65534 when the tests run as root): user namespace + net,
  pid, mount, ipc namespaces + Landlock + the audit hook, no uid switch;
* ``user_no_ns``: unprivileged caller, ``namespaces=False``: Landlock + the audit hook;
* ``hook_only``: unprivileged caller, ``namespaces=False, landlock=False``: only rlimits and the
  audit hook, the weakest mode (old kernels, no user namespaces);
* ``same_uid``: root caller, no namespaces, no uid switch (Landlock + hook); only the attacks that
  cannot hurt the machine if they escaped (no fork bomb, no kill -1 as root).

An attack is contained when the check says so AND the call returned within its wall limit + 1 s
AND no process of that sandbox (by uid, by the marker in its command line, or any new process of
uid 65534) is left. Unprivileged modes, when the tests run as root, run the caller itself as uid
65534: a small runner subprocess that loads r1hpc/rewards/sandbox.py and calls ``run_python``, so
that victims owned by that uid (the caller, a bystander process, a 0777 directory) are protected by
the sandbox only, not by file permissions.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from r1hpc.rewards import sandbox as sandbox_module
from r1hpc.rewards.sandbox import (
    _MARKER,
    SandboxConfig,
    SandboxLimits,
    SandboxResult,
    _remove_orphaned_dirs,
    run_python,
)

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(wall_s=1.5, memory_mb=256, max_procs=32, max_stdout_bytes=1 << 16)
ROOT = os.geteuid() == 0
NOBODY = 65534
# mode -> (config, caller is root)
MODES = {
    "full": (SandboxConfig(), True),
    "no_ns": (SandboxConfig(namespaces=False), True),
    "same_uid": (SandboxConfig(namespaces=False, switch_uid=False), True),
    "user": (SandboxConfig(), False),
    "user_no_ns": (SandboxConfig(namespaces=False), False),
    "hook_only": (SandboxConfig(namespaces=False, landlock=False), False),
}
# Modes safe for attacks that would hurt the machine if they escaped (fork bomb, kill -1): all but
# a root caller without uid switch.
SAFE_MODES = ["full", "no_ns", "user", "user_no_ns", "hook_only"]
ALL_MODES = [*SAFE_MODES, "same_uid"]
LANDLOCK_MODES = ["full", "no_ns", "same_uid", "user", "user_no_ns"]
_TALLY: dict[str, list[int]] = {}  # mode -> [attempted, contained]
_CURRENT: list[str | None] = [None]  # the running test's mode
_ABI = sandbox_module.sandbox_capabilities(SandboxConfig(namespaces=False, switch_uid=False)).get("landlock_abi", 0)

# The caller as another process: loads the sandbox module from its file (the r1hpc package
# __init__ imports the rewards' dependencies, which live in the venv under /root, unreadable by
# uid 65534) and runs one job. "@CALLER_PID@" in the program becomes the caller's pid.
_RUNNER = r"""
import importlib.util, json, os, sys, time
spec = importlib.util.spec_from_file_location("r1hpc.rewards.sandbox", sys.argv[1])
sb = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = sb
spec.loader.exec_module(sb)
job = json.loads(sys.stdin.read())
prog = job["program"].replace("@CALLER_PID@", str(os.getpid()))
t0 = time.monotonic()
res = sb.run_python(prog, job["stdin"], sb.SandboxLimits(**job["limits"]), sb.SandboxConfig(**job["config"]))
print(json.dumps({"elapsed": time.monotonic() - t0, "result": sb.result_dict(res)}))
"""
_RUNNER_PYTHON = "/usr/bin/python3" if ROOT else sys.executable


def _readable_by_others(path: str) -> bool:
    p = Path(os.path.realpath(path))
    if not p.stat().st_mode & stat.S_IROTH:
        return False
    return all(a.stat().st_mode & stat.S_IXOTH for a in p.parents)


def _runner_module() -> str:
    """The sandbox module as uid 65534 can read it: in place, or a copy (with its bootstrap) in a
    world-readable temp dir when the checkout is not (e.g. a clone under /root)."""
    module = Path(sandbox_module.__file__)
    if _readable_by_others(str(module)) and _readable_by_others(str(module.with_name("sandbox_bootstrap.py"))):
        return str(module)
    copy = Path(tempfile.mkdtemp(prefix="r1hpc-sandbox-runner-"))
    atexit.register(shutil.rmtree, copy, True)
    copy.chmod(0o755)
    for name in (module.name, "sandbox_bootstrap.py"):
        (copy / name).write_bytes(module.with_name(name).read_bytes())
        (copy / name).chmod(0o644)
    assert _readable_by_others(str(copy / module.name)), f"{copy} is not readable by other users"
    return str(copy / module.name)


_RUNNER_MODULE = _runner_module() if ROOT else sandbox_module.__file__


def _nobody_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _uid_of(int(p)) == NOBODY}


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


_NOBODY_BEFORE = _nobody_pids() if ROOT else set()


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    per_mode = ", ".join(f"{m} {a}/{c}" for m, (a, c) in _TALLY.items())
    total = [sum(v[i] for v in _TALLY.values()) for i in (0, 1)]
    line = f"sandbox attacks: {total[0]} attempted, {total[1]} contained (attempted/contained per mode: {per_mode})"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():  # shown without -s
            print("\n" + line)
    else:
        print(line)


@pytest.fixture(autouse=True)
def _count_attempt(request):
    mode = request.node.callspec.params.get("mode") if hasattr(request.node, "callspec") else None
    if request.node.name.startswith("test_modes_are_what_they_claim"):
        mode = None
    elif mode is None:
        mode = "full" if ROOT else "user"
    _check_mode_available(mode)
    if mode is not None:
        _TALLY.setdefault(mode, [0, 0])[0] += 1  # one attack per test; _contained() counts it
    _CURRENT[0] = mode
    yield


def _check_mode_available(mode: str | None) -> None:
    if mode is None:
        return
    if MODES[mode][1] and not ROOT:
        pytest.skip("this mode needs a root caller")
    if not MODES[mode][1] and ROOT:  # the unprivileged modes run their caller as uid 65534
        assert _readable_by_others(_RUNNER_PYTHON), f"uid {NOBODY} cannot run {_RUNNER_PYTHON}"


def _leftovers(uid: int | None) -> list[str]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        state = next((line for line in status.splitlines() if line.startswith("State:")), "")
        if "Z" in state.split()[1:2]:
            continue  # a zombie holds no resources
        puid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if (
            _MARKER.encode() in cmdline
            or (uid is not None and puid == uid)
            or (ROOT and puid == NOBODY and int(entry.name) not in _NOBODY_BEFORE)
        ):
            found.append(f"{entry.name}: {cmdline[:80]!r}")
    return found


def _in_caller_process(
    mode: str, program: str, stdin: str, limits: SandboxLimits, env: dict | None = None
) -> tuple[SandboxResult, float]:
    """Run ``run_python`` in a separate caller process (uid 65534 for the unprivileged modes when
    we are root), with ``env`` as that caller's whole starting environment."""
    config, root_caller = MODES[mode]
    as_nobody = ROOT and not root_caller
    job = {
        "program": program,
        "stdin": stdin,
        "limits": dataclasses.asdict(limits),
        "config": dataclasses.asdict(config),
    }
    kw = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if as_nobody else {}
    out = subprocess.run(
        [_RUNNER_PYTHON, "-I", "-c", _RUNNER, _RUNNER_MODULE],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd="/",
        env=env or {"PATH": "/usr/bin:/bin"},
        timeout=limits.wall_s + 30,
        **kw,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    d = json.loads(out.stdout)
    return SandboxResult(**d["result"]), d["elapsed"]


def _attack(
    mode: str, program: str, stdin: str = "", limits: SandboxLimits = LIMITS, env: dict | None = None
) -> SandboxResult:
    """Run one attack; asserts the time bound and that nothing of it survives."""
    config, root_caller = MODES[mode]
    if env is not None or (ROOT and not root_caller):
        res, elapsed = _in_caller_process(mode, program, stdin, limits, env)
    else:
        t0 = time.monotonic()
        res = run_python(program.replace("@CALLER_PID@", str(os.getpid())), stdin, limits, config)
        elapsed = time.monotonic() - t0
    assert elapsed <= limits.wall_s + 1.0, f"took {elapsed:.2f} s, limit {limits.wall_s} s: {res}"
    left = []
    for _ in range(20):  # processes killed by SIGKILL take a moment to disappear from /proc
        left = _leftovers(res.isolation.get("uid"))
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"processes survived the sandbox: {left}"
    return res


def _contained() -> None:
    _TALLY[_CURRENT[0]][1] += 1


safe_modes = pytest.mark.parametrize("mode", SAFE_MODES)
all_modes = pytest.mark.parametrize("mode", ALL_MODES)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_modes_are_what_they_claim(mode):
    _check_mode_available(mode)
    iso = _attack(mode, "print(1)").isolation
    ll = _ABI > 0 and MODES[mode][0].landlock
    assert iso["landlock"] is ll and iso["landlock_abi"] == _ABI, iso
    if mode == "full":
        assert iso["netns"] and iso["pidns"] and iso["private_tmp"] and iso["uid"] is not None
        assert not iso["audit_hook"] and not iso["userns"]
    elif mode == "user":
        assert iso["userns"] and iso["netns"] and iso["pidns"] and iso["mountns"] and iso["ipcns"]
        assert iso["private_tmp"] and iso["proc_remounted"] and iso["uid"] is None and iso["audit_hook"]
    else:
        assert not (iso["netns"] or iso["pidns"] or iso["userns"]) and iso["audit_hook"]
        assert (iso["uid"] is not None) == (mode == "no_ns")
    assert not iso["errors"], iso


@pytest.mark.parametrize("mode", ["user"])
def test_unprivileged_namespaces_drop_their_capabilities(mode):
    """The user namespace gives the bootstrap every capability inside it (needed for the mounts);
    the program must hold none (here with Landlock off, so /proc/self/status can be read)."""
    prog = (
        "import os\n"
        "print([l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapAmb'))])\n"
        "for f in (lambda: os.chroot('/tmp'), lambda: os.chown('.', 0, 0)):\n"
        "    try:\n        f(); print('did it')\n"
        "    except Exception as e:\n        print(type(e).__name__)\n"
    )
    MODES["user_caps"] = (SandboxConfig(landlock=False), False)
    try:
        res = _attack("user_caps", prog)
    finally:
        del MODES["user_caps"]
    assert res.isolation["userns"] and not res.isolation["landlock"], res
    assert "did it" not in res.stdout, res
    for name in ("CapEff", "CapPrm", "CapAmb"):
        assert f"{name}:\\t0000000000000000" in res.stdout, res
    _contained()


@safe_modes
def test_fork_bomb(mode):
    prog = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = _attack(mode, prog)
    assert res.status in ("timeout", "killed")
    _contained()


@all_modes
def test_memory_bomb(mode):
    res = _attack(mode, "blocks = []\nwhile True:\n    blocks.append(bytearray(8 << 20))\n")
    # Which limit trips first depends on how fast the machine fills memory: either one contains it.
    assert res.status in ("memory", "timeout"), res
    res = _attack(mode, "x = bytearray(64 << 30)\n")
    assert res.status == "memory", res
    _contained()


@all_modes
def test_infinite_loop(mode):
    res = _attack(mode, "while True:\n    pass\n")
    assert res.status == "timeout"
    _contained()


@safe_modes
def test_busy_threads_and_ignored_cpu_signal(mode):
    prog = (
        "import signal, threading\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
        "def spin():\n    while True:\n        pass\n"
        "for _ in range(16):\n    threading.Thread(target=spin, daemon=True).start()\n"
        "spin()\n"
    )
    res = _attack(mode, prog, limits=SandboxLimits(wall_s=1.5, cpu_s=1, memory_mb=512))
    # Either the wall limit kills the spinners, or the thread limit (RLIMIT_NPROC counts threads)
    # stops the program first ("can't start new thread"): contained both ways, as checked below.
    assert res.status in ("timeout", "runtime_error"), res
    _contained()


@pytest.fixture
def victim_dir():
    """A directory anyone may write in (worst case), outside the sandbox."""
    d = Path(f"/tmp/r1hpc_victim_{uuid.uuid4().hex}")
    d.mkdir()
    d.chmod(0o777)
    yield d
    for p in d.iterdir():
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    d.rmdir()


@all_modes
def test_write_outside_workdir(mode, victim_dir):
    tag = uuid.uuid4().hex
    targets = [
        f"/tmp/pwned_{tag}",
        f"/var/tmp/pwned_{tag}",
        f"/dev/shm/pwned_{tag}",
        str(victim_dir / f"pwned_{tag}"),
        str(REPO / f"pwned_{tag}"),
        str(REPO / "tests" / f"pwned_{tag}"),
    ]
    prog = (
        f"import os\nT = {targets!r}\n"
        "for t in T:\n"
        "    try:\n        open(t, 'w').write('x'); print('wrote', t)\n"
        "    except Exception as e:\n        print('open', type(e).__name__)\n"
        "    try:\n        fd = os.open(t + '_os', os.O_CREAT | os.O_WRONLY); print('os.open', t)\n"
        "    except Exception as e:\n        print('os.open', type(e).__name__)\n"
        "try:\n    import subprocess\n    subprocess.run(['/bin/sh', '-c', 'touch ' + ' '.join(x + '_sh' for x in T)])\n"
        "except Exception as e:\n    print('sh', type(e).__name__)\n"
        "os.mkdir('d'); os.rename('d', 'e'); os.rmdir('e')\n"  # ordinary file work still works
        "open('inside.txt', 'w').write('allowed'); print(open('inside.txt').read())\n"
    )
    try:
        res = _attack(mode, prog)
        assert "allowed" in res.stdout, res  # writing in the working directory still works
        made = [p for t in targets for p in (t, t + "_os", t + "_sh") if os.path.exists(p)]
        assert not made, f"files written outside the sandbox: {made}\n{res.stdout}"
    finally:
        for t in targets:
            for p in (t, t + "_os", t + "_sh"):
                if os.path.exists(p):
                    os.remove(p)
    _contained()


@all_modes
def test_dir_fd_escapes(mode, victim_dir):
    """os.open's audit event does not carry dir_fd: directory fds outside the work dir, ".." from
    a directory fd, and symlinks read through a directory fd must not lead out of the sandbox."""
    tag = uuid.uuid4().hex
    W = "os.O_WRONLY | os.O_CREAT"
    prog = (
        f"import os\nTAG = {tag!r}\nV = {str(victim_dir)!r}\nHOME = os.getcwd()\n"
        "def t(name, f, escape=True):\n"
        "    try:\n        f(); print('ESCAPED' if escape else 'done', name)\n"
        "    except Exception as e:\n        print(name, type(e).__name__, e)\n"
        f"t('dir_fd /tmp', lambda: os.open('a_' + TAG, {W}, dir_fd=os.open('/tmp', os.O_RDONLY)))\n"
        f"t('dir_fd victim', lambda: os.open('b_' + TAG, {W}, dir_fd=os.open(V, os.O_RDONLY)))\n"
        f"t('O_PATH victim', lambda: os.open('c_' + TAG, {W}, dir_fd=os.open(V, os.O_PATH)))\n"
        "t('O_DIRECTORY mkdir', lambda: os.mkdir('d_' + TAG, dir_fd=os.open(V, os.O_RDONLY | os.O_DIRECTORY)))\n"
        "open('f', 'w').write('x')\n"
        "t('rename dst_dir_fd', lambda: os.rename('f', 'e_' + TAG, dst_dir_fd=os.open(V, os.O_RDONLY)))\n"
        "t('fchdir', lambda: (os.chdir(os.open(V, os.O_RDONLY)), open('g_' + TAG, 'w')))\n"
        "t('chdir', lambda: (os.chdir(V), open('h_' + TAG, 'w')))\n"
        # ".." from a directory fd whose depth differs from the cwd's
        "os.chdir(HOME)\n"
        "os.makedirs('a/b/c/d/e/f/g/h'); wfd = os.open('.', os.O_RDONLY); os.chdir('a/b/c/d/e/f/g/h')\n"
        "up = '../' * (os.getcwd().count('/') - 8)  # from the work dir (wfd) up to /\n"
        f"t('.. from dir_fd', lambda: os.open(up + V.lstrip('/') + '/i_' + TAG, {W}, dir_fd=wfd))\n"
        f"t('.. from dir_fd to /tmp', lambda: os.open(up + 'tmp/j_' + TAG, {W}, dir_fd=wfd))\n"
        "os.chdir(wfd)\n"
        # a symlink under a directory fd, where the cwd has no such name
        "os.mkdir('s'); sfd = os.open('s', os.O_RDONLY)\n"
        # making the link is harmless in itself (Landlock judges the target); using it is not
        "t('symlink', lambda: os.symlink(V, 'l', dir_fd=sfd), False)\n"
        "t('symlink cwd', lambda: os.symlink(V, 's/l'), False)\n"
        f"t('through symlink', lambda: os.open('l/k_' + TAG, {W}, dir_fd=sfd))\n"
        "t('listdir fd', lambda: os.listdir(os.open('/', os.O_RDONLY)))\n"
        "t('read /proc via dir_fd', lambda: os.read(os.open(str(os.getppid()) + '/environ', os.O_RDONLY, dir_fd=os.open('/proc', os.O_RDONLY)), 99))\n"
        "t('read / via dir_fd', lambda: os.read(os.open('etc/passwd', os.O_RDONLY, dir_fd=os.open('/', os.O_PATH)), 99))\n"
    )
    try:
        res = _attack(mode, prog)
    finally:
        made = sorted(p.name for p in victim_dir.iterdir()) + sorted(str(p) for p in Path("/tmp").glob(f"*_{tag}"))
        for p in Path("/tmp").glob(f"*_{tag}"):  # an escape's litter (victim_dir cleans itself)
            p.rmdir() if p.is_dir() else p.unlink()
    assert not made, f"created outside the sandbox: {made}\n{res.stdout}{res.stderr_tail}"
    assert res.status == "ok" and "ESCAPED" not in res.stdout, res
    _contained()


@pytest.mark.parametrize("mode", LANDLOCK_MODES)
def test_cannot_read_outside_files(mode):
    """With Landlock the program reads only the interpreter's directories and its work dir: not the
    repository (tests, data) nor /etc. (hook_only does not restrict reading ordinary files.)"""
    if _ABI == 0:
        pytest.skip("no Landlock in this kernel")
    prog = (
        f"import os\nfor p in ({str(REPO / 'README.md')!r}, '/etc/passwd', '/proc/self/environ', '/root'):\n"
        "    try:\n        print('GOT', p, len(open(p).read()) if not os.path.isdir(p) else os.listdir(p))\n"
        "    except Exception as e:\n        print(p, type(e).__name__)\n"
    )
    res = _attack(mode, prog)
    assert res.status == "ok" and "GOT" not in res.stdout.split(), res
    _contained()


@all_modes
def test_parent_environment_is_not_visible(mode):
    """The secret is in the starting environment of the process that calls the sandbox (so it is
    in /proc/<caller>/environ), not just in os.environ."""
    secret = "s3cr3t-" + uuid.uuid4().hex
    prog = (
        "import os\nprint(dict(os.environ))\n"
        "C = '@CALLER_PID@'\n"
        "def t(name, f):\n"
        "    try:\n        print(name, f())\n"
        "    except Exception as e:\n        print(name, type(e).__name__)\n"
        "try:\n    gpp = open(f'/proc/{os.getppid()}/stat').read().split(')')[1].split()[1]\n"
        "except Exception:\n    gpp = C\n"
        "for p in [C, str(os.getppid()), gpp, 'self', '1']:\n"
        "    t(p, lambda: open(f'/proc/{p}/environ', 'rb').read())\n"
        "    t('dir_fd ' + p, lambda: os.read(os.open(f'{p}/environ', os.O_RDONLY, dir_fd=os.open('/proc', os.O_RDONLY)), 1 << 16))\n"
        "    t('dir_fd / ' + p, lambda: os.read(os.open(f'proc/{p}/environ', os.O_RDONLY, dir_fd=os.open('/', os.O_PATH)), 1 << 16))\n"
        "    t('chdir ' + p, lambda: (os.chdir('/proc'), open(f'{p}/environ', 'rb').read()))\n"
        "try:\n    procs = os.listdir('/proc')\nexcept Exception:\n    procs = []\n"
        "for p in procs:\n"
        "    try:\n        print(p, open(f'/proc/{p}/environ', 'rb').read())\n"
        "    except Exception:\n        pass\n"
    )
    res = _attack(mode, prog, env={"PATH": "/usr/bin:/bin", "R1HPC_TEST_SECRET": secret})
    assert res.status == "ok", res
    assert secret not in res.stdout + res.stderr_tail, res.stdout
    assert "R1HPC_TEST_SECRET" not in res.stdout
    _contained()


@all_modes
def test_no_connection_to_a_local_listener(mode):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    prog = (
        f"import socket, os\nPORT = {port}\n"
        "try:\n    s = socket.create_connection(('127.0.0.1', PORT), timeout=0.5); s.sendall(b'hi'); print('connected')\n"
        "except Exception as e:\n    print('socket', type(e).__name__, e)\n"
        "try:\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('127.0.0.1', PORT))\n"
        "except Exception as e:\n    print('udp', type(e).__name__)\n"
        "for cmd in (['/usr/bin/python3', '-c', f'import socket; socket.create_connection((\"127.0.0.1\", {PORT}), 0.5)'],\n"
        "            ['/bin/bash', '-c', f'echo hi > /dev/tcp/127.0.0.1/{PORT}']):\n"
        "    try:\n        import subprocess\n        print(subprocess.run(cmd, capture_output=True, timeout=1).returncode)\n"
        "    except Exception as e:\n        print('spawn', type(e).__name__)\n"
    )
    try:
        res = _attack(mode, prog)
        time.sleep(0.05)
        with pytest.raises(BlockingIOError):
            conn, addr = listener.accept()
            conn.close()
            pytest.fail(f"the sandbox connected to 127.0.0.1:{port} from {addr}: {res.stdout}")
    finally:
        listener.close()
    assert "connected" not in res.stdout.split()
    _contained()


@pytest.fixture
def bystander(request):
    """A process outside the sandbox, of the caller's uid, that must survive kill attempts."""
    mode = request.node.callspec.params["mode"]
    kw = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if ROOT and not MODES[mode][1] else {}
    p = subprocess.Popen(["sleep", "60"], **kw)
    _NOBODY_BEFORE.add(p.pid)  # not a leftover of the sandbox
    yield p
    p.kill()
    p.wait()


@safe_modes
def test_cannot_kill_the_caller(mode, bystander):
    # The caller is this test process or, for unprivileged modes under root, the runner (uid 65534,
    # like the bystander: only the sandbox stands between them and the program).
    prog = (
        "import os\n"
        f"for target in (@CALLER_PID@, {bystander.pid}, {-os.getpgid(0)}, -1, os.getppid()):\n"
        "    try:\n        os.kill(target, 9); print('sent', target)\n"
        "    except Exception as e:\n        print(target, type(e).__name__)\n"
    )
    res = _attack(mode, prog)  # a killed caller would fail _attack (no result from the runner)
    assert bystander.poll() is None, "the sandbox killed a process outside it"
    assert res.status in ("ok", "killed"), res
    _contained()


@pytest.mark.parametrize("mode", ["same_uid"])
def test_cannot_signal_outside_in_same_uid_mode(mode):
    p = subprocess.Popen(["sleep", "60"])
    try:
        prog = f"import os\ntry:\n    os.kill({p.pid}, 15)\nexcept Exception as e:\n    print(type(e).__name__)\n"
        res = _attack("same_uid", prog)
        assert p.poll() is None and "PermissionError" in res.stdout, res
    finally:
        p.kill()
        p.wait()
    _contained()


@all_modes
def test_huge_stdout(mode):
    res = _attack(mode, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert res.status == "killed" and res.stdout_truncated
    assert len(res.stdout) <= LIMITS.max_stdout_bytes
    _contained()


@all_modes
def test_cannot_delete_outside_files(mode):
    victim_dir = Path(f"/tmp/r1hpc_victim_{uuid.uuid4().hex}")
    victim_dir.mkdir()
    victim_dir.chmod(0o777)  # worst case: anyone may delete in it
    victim = victim_dir / "keep.txt"
    victim.write_text("precious")
    victim.chmod(0o666)
    prog = (
        f"import os, shutil\nV = {str(victim)!r}\n"
        "for f in (lambda: os.remove(V), lambda: shutil.rmtree(os.path.dirname(V)),\n"
        "          lambda: open(V, 'w'), lambda: os.rename(V, 'stolen'), lambda: os.truncate(V, 0),\n"
        "          lambda: os.remove('keep.txt', dir_fd=os.open(os.path.dirname(V), os.O_RDONLY))):\n"
        "    try:\n        f(); print('did it')\n"
        "    except Exception as e:\n        print(type(e).__name__)\n"
    )
    try:
        _attack(mode, prog)
        assert victim.read_text() == "precious"
    finally:
        for p in victim_dir.iterdir():
            p.unlink()
        victim_dir.rmdir()
    _contained()


@safe_modes
def test_daemonized_grandchild_does_not_survive(mode):
    tag = uuid.uuid4().hex
    prog = (
        "import os, time\n"
        "try:\n    child = os.fork()\n"
        "except PermissionError:\n    child = -1; print('fork refused')\n"
        "if child == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.close(0); os.close(1); os.close(2)\n"
        f"        time.sleep(3); open('/tmp/late_{tag}', 'w').write('survived')\n"
        "    os._exit(0)\n"
        "print('main done')\n"
    )
    res = _attack(mode, prog)  # _attack asserts that nothing is left
    assert res.status == "ok"
    # And the same while the main program itself outlives its wall limit.
    res = _attack(mode, prog.replace("print('main done')", "time.sleep(30)"))
    assert res.status == "timeout"
    time.sleep(0.1)
    assert not os.path.exists(f"/tmp/late_{tag}")
    _contained()


@safe_modes
def test_no_privilege_escalation(mode):
    prog = (
        "import os\n"
        "for f in (lambda: os.setuid(0), lambda: open('/etc/shadow').read(),\n"
        "          lambda: os.chown('.', 0, 0), lambda: open('/proc/sysrq-trigger', 'w')):\n"
        "    try:\n        print('ok', f())\n"
        "    except Exception as e:\n        print(type(e).__name__)\n"
        "print('uid', os.getuid(), os.geteuid())\n"
    )
    res = _attack(mode, prog)
    assert "root:" not in res.stdout and "uid 0" not in res.stdout and "ok" not in res.stdout.split()
    _contained()


@all_modes
def test_cannot_forge_the_status_pipe(mode):
    prog = (
        "import os, sys\n"
        'line = b\'{"final": {"exit": 0, "cpu_s": 0, "maxrss_kb": 0, "info": {}}}\\n\'\n'
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, line)\n"
        "    except OSError:\n        pass\n"
        "sys.exit(7)\n"
    )
    res = _attack(mode, prog)
    assert res.status == "runtime_error" and res.returncode == 7, res
    _contained()


@all_modes
def test_ctypes_and_deep_recursion(mode):
    # Python-level recursion grows heap frames in 3.11: it ends in the memory or time limit.
    res = _attack(mode, "import sys\nsys.setrecursionlimit(10**7)\nf = lambda n: f(n + 1)\nf(0)\n")
    assert res.status in ("killed", "runtime_error", "memory", "timeout")
    if mode != "full":  # the fallback keeps native code out of reach
        res = _attack(mode, "import ctypes\nprint(ctypes.CDLL(None).getpid())\n")
        assert res.status == "runtime_error" and "PermissionError" in res.stderr_tail
    _contained()


@safe_modes
def test_file_size_and_fd_limits(mode):
    prog = (
        "import os\n"
        "try:\n    open('big', 'wb').write(b'x' * (64 << 20))\n"
        "except OSError as e:\n    print('fsize', e.errno)\n"
        "fds = []\n"
        "try:\n    [fds.append(os.open('/dev/null', os.O_RDONLY)) for _ in range(10000)]\n"
        "except OSError as e:\n    print('nofile', e.errno, len(fds))\n"
    )
    res = _attack(mode, prog)
    assert "fsize 27" in res.stdout and "nofile 24" in res.stdout, res  # EFBIG, EMFILE
    _contained()


@pytest.mark.parametrize("mode", ["full", "no_ns"])
def test_sandbox_dies_with_a_killed_caller(mode):
    """If the caller is SIGKILLed mid-run (e.g. by a worker pool's deadline), nothing it started
    may live on: the bootstrap gets a parent-death signal and kills everything of its uid."""
    code = (
        "import sys, time\nfrom r1hpc.rewards.sandbox import *\n"
        f"cfg = SandboxConfig(namespaces={mode == 'full'})\n"
        "print('start', flush=True)\n"
        "run_python('import os, time\\nos.fork()\\ntime.sleep(60)', limits=SandboxLimits(wall_s=30), config=cfg)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
    assert caller.stdout.readline().strip() == b"start"
    deadline = time.monotonic() + 10
    while not _leftovers(None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(None), "the sandbox never started"
    time.sleep(0.3)  # let the program fork
    caller.kill()
    caller.wait()
    caller.stdout.close()
    left = []
    for _ in range(40):
        left = _leftovers(None)
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"sandbox processes outlived their caller: {left}"
    # Its run directory is left behind (nobody ran the cleanup); the next caller removes it.
    orphans = [p for p in Path(tempfile.gettempdir()).glob(f"r1hpc_sbx_{caller.pid}_*")]
    assert orphans
    _remove_orphaned_dirs.cache_clear()
    run_python("print(1)")
    assert not any(p.exists() for p in orphans)
    _contained()
