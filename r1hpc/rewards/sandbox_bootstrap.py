"""The sandbox's trusted bootstrap: NOT a module to import (it acts on sys.argv at top level).

r1hpc.rewards.sandbox runs this file's text as `python -I -S -c <text> key=value ... marker` in the
fresh interpreter that will become the sandboxed program (see that module's docstring).
"""

import _signal as signal
import ctypes
import os
import resource
import sys

cfg = {}
for arg in sys.argv[1:-1]:
    k, v = arg.split("=", 1)
    cfg[k] = int(v) if v.lstrip("-").isdigit() else v
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
NS = {"netns": 0x40000000, "pidns": 0x20000000, "mountns": 0x00020000, "ipcns": 0x08000000}
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
info = {
    "userns": False,
    "netns": False,
    "pidns": False,
    "mountns": False,
    "ipcns": False,
    "private_tmp": False,
    "proc_remounted": False,
    "uid": None,
    "landlock": False,
    "landlock_abi": 0,
    "audit_hook": False,
    "errors": [],
}


def err(what):
    info["errors"].append(what + ": " + os.strerror(ctypes.get_errno()))


def mount(src, dst, fstype, flags, data):
    enc = lambda s: None if s is None else s.encode()
    return libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def write_file(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


with open(cfg["prog"], "rb") as f:
    src = f.read()
work = cfg["work"]
root = os.geteuid() == 0
if cfg["namespaces"] and not root:
    # Unprivileged caller: a user namespace first (unshare of the others needs CAP_SYS_ADMIN, which
    # only a namespace of our own gives). Our uid/gid map to themselves, so the program keeps the
    # caller's identity (files it may create look normal); the capabilities this namespace grants
    # (needed for the mounts below) are dropped again before the program runs (drop_privileges).
    my_uid, my_gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER) == 0:
        try:
            write_file("/proc/self/setgroups", "deny")  # required before an unprivileged gid_map
            write_file("/proc/self/uid_map", "%d %d 1" % (my_uid, my_uid))
            write_file("/proc/self/gid_map", "%d %d 1" % (my_gid, my_gid))
            info["userns"] = True
        except OSError as e:
            info["errors"].append("userns id maps: " + e.strerror)
    else:
        err("unshare userns")
if cfg["namespaces"] and (root or info["userns"]):
    for name, flag in NS.items():
        if libc.unshare(flag) == 0:
            info[name] = True
        else:
            err("unshare " + name)
if info["mountns"]:
    # Nothing mounted here may propagate back to the host's mount table.
    if mount(None, "/", None, MS_REC | MS_PRIVATE, None):
        ok = True
        for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
            if os.path.isdir(d) and not mount(
                "tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % cfg["tmpfs_mb"]
            ):
                ok = False
                err("tmpfs " + d)
        if ok:
            info["private_tmp"] = True
            work = "/tmp/sandbox"
            os.mkdir(work, 0o700)
    else:
        err("make / private")
uid = None
if cfg["switch_uid"] and root:
    uid = cfg["uid_base"] + os.getpid()
    os.chown(work, uid, uid)
    info["uid"] = uid
info["work"] = work
hook = not (info["netns"] and info["pidns"] and info["private_tmp"] and uid is not None)
info["audit_hook"] = hook


def drop_privileges():
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if info["userns"]:
        # capset(2) with empty effective/permitted/inheritable sets (this also empties the
        # ambient set); with no_new_privs nothing can give them back, not even execve.
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        if libc.capset(hdr, (ctypes.c_uint32 * 6)()) != 0:
            err("drop capabilities")
            os._exit(70)  # never run the program with namespace capabilities


# Landlock (kernel-enforced, inherited by every descendant, survives execve). x86_64 syscall
# numbers; access-right bits from include/uapi/linux/landlock.h.
LL_CREATE, LL_ADD_RULE, LL_RESTRICT = 444, 445, 446
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1, 2, 4, 8
LL_MAKE_CHAR, LL_MAKE_BLOCK, LL_TRUNCATE, LL_IOCTL_DEV = 1 << 6, 1 << 11, 1 << 14, 1 << 15
LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV
abi = libc.syscall(LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # _VERSION flag
if abi > 0:
    info["landlock_abi"] = abi
elif cfg["landlock"]:
    err("landlock unavailable, not applied")


def landlock():
    """Restrict this process and its descendants: read+execute beneath the interpreter's
    directories, read+write beneath the work dir, read+write /dev/null, nothing else on the file
    system; no TCP bind/connect (ABI >= 4); no signals or abstract unix sockets outside the
    sandbox (ABI >= 6). Rights an older ABI lacks are masked off (best effort, as the kernel docs
    show), so each kernel enforces everything it knows."""
    fs = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        fs |= 1 << 13  # REFER (rename/link across directories)
    if abi >= 3:
        fs |= LL_TRUNCATE
    if abi >= 5:
        fs |= LL_IOCTL_DEV
    net = 3 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP handled, and no rule allows any
    scoped = 3 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    # struct landlock_ruleset_attr grew with the ABI; pass the size this kernel knows.
    attr = (ctypes.c_uint64 * 3)(fs, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    rfd = libc.syscall(LL_CREATE, attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rfd < 0:
        return err("landlock_create_ruleset")
    read = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR
    read_dirs = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        getattr(sys, "_stdlib_dir", None) or sys.prefix,
        "/usr",
        "/lib",
        "/lib64",
        "/bin",
    }
    rules = [(d, read) for d in sorted(read_dirs)]
    rules += [
        (work, fs & ~(LL_MAKE_CHAR | LL_MAKE_BLOCK | LL_IOCTL_DEV)),
        ("/dev/null", LL_READ_FILE | LL_WRITE_FILE | LL_TRUNCATE),
    ]
    # struct landlock_path_beneath_attr { __u64 allowed_access; __s32 parent_fd; } __packed
    beneath = (ctypes.c_char * 12)()
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # e.g. no /lib64 here
            try:
                access &= fs
                if os.fstat(fd).st_mode & 0o170000 != 0o040000:
                    access &= LL_FILE_RIGHTS  # a file takes only file rights (else EINVAL)
                beneath[:] = access.to_bytes(8, "little") + fd.to_bytes(4, "little")
                if libc.syscall(LL_ADD_RULE, rfd, 1, beneath, 0) != 0:  # LANDLOCK_RULE_PATH_BENEATH
                    return err("landlock_add_rule " + path)
            finally:
                os.close(fd)
        if libc.syscall(LL_RESTRICT, rfd, 0) != 0:
            return err("landlock_restrict_self")
        info["landlock"] = True
    finally:
        os.close(rfd)


status_fd = cfg["status_fd"]
pid = os.fork()
if pid == 0:
    # The program's process (PID 1 of the new PID namespace when there is one).
    if info["pidns"] and info["mountns"]:
        info["proc_remounted"] = mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    lim = cfg
    for res, soft, hard in (
        (resource.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 1),
        (resource.RLIMIT_AS, lim["as_bytes"], lim["as_bytes"]),
        (resource.RLIMIT_NPROC, lim["nproc"], lim["nproc"]),
        (resource.RLIMIT_NOFILE, lim["nofile"], lim["nofile"]),
        (resource.RLIMIT_FSIZE, lim["fsize"], lim["fsize"]),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(res, (soft, hard))
    drop_privileges()
    if cfg["landlock"] and abi > 0:
        landlock()  # last step before the program: after namespaces, mounts and the uid switch
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG (after setuid, which clears it)
    os.chdir(work)
    os.write(status_fd, (repr({"child": info}) + "\n").encode())
    try:  # compiled here, under the limits and the uid, not in the caller
        code = compile(src, "solution.py", "exec")
    except Exception as e:
        os.write(status_fd, (repr({"compile_error": "%s: %s" % (type(e).__name__, e)}) + "\n").encode())
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os.close(status_fd)
    if hook:

        def make_hook(work, no_uid, no_fork, own_pid):
            import os as _os
            from os.path import isdir as _isdir
            from os.path import join as _join
            from os.path import normpath as _norm
            from os.path import realpath as _real

            W = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND
            DIR_FLAGS = _os.O_PATH | _os.O_DIRECTORY
            NO_DIR_FD = (None, -1, -100)  # not given (the event reports -1), or AT_FDCWD
            refused = {
                "socket.__new__",
                "socket.connect",
                "socket.bind",
                "socket.sendto",
                "socket.getaddrinfo",
                "os.exec",
                "os.posix_spawn",
                "os.spawn",
                "os.system",
                "subprocess.Popen",
                "os.forkpty",
                "pty.spawn",
                # A symlink could later redirect a dir_fd-relative path out of the work
                # dir where this hook cannot see it (see "open" below).
                "os.symlink",
            }
            if no_fork:
                refused |= {"os.fork"}
            blocked_imports = {"ctypes", "_ctypes", "_posixsubprocess"}
            # event -> index of its dir_fd argument (None: it has none)
            fs_one = {
                "os.remove": 1,
                "os.rmdir": 1,
                "os.mkdir": 2,
                "os.chmod": 2,
                "os.chown": 3,
                "os.utime": 3,
                "os.mkfifo": 2,
                "os.mknod": 3,
                "shutil.rmtree": 1,
                "os.truncate": None,
                "os.chflags": None,
                "os.setxattr": None,
                "os.removexattr": None,
                "os.chdir": None,
            }

            def deny(event):
                raise PermissionError("sandbox: %s refused" % event)

            def as_str(p, event):
                # The os module reports the path after os.fspath; anything else is not a path
                # this hook can judge.
                if isinstance(p, bytes):
                    return p.decode("utf-8", "surrogateescape")
                if isinstance(p, (str, int)):
                    return p
                deny(event + " of a %s" % type(p).__name__)

            def full(p):
                return _real(_join(_os.getcwd(), p))

            def inside(p):
                if isinstance(p, int):
                    return True  # an fd: only fds opened under this hook's rules exist
                f = full(p)
                return f == "/dev/null" or f == work or f.startswith(work + "/")

            def h(event, args):
                if event in refused or event.startswith("ctypes."):
                    deny(event)
                if event == "import":
                    if args[0].split(".")[0] in blocked_imports:
                        deny("import " + args[0])
                elif event == "open":
                    # os.open's event does not carry its dir_fd: a relative path may be relative
                    # to any directory fd. So (a) no directory fd outside the work dir can be
                    # obtained at all, (b) a relative path may not climb out of its directory
                    # with "..", and (c) no symlinks can be made (refused above), and the cwd
                    # stays inside the work dir (os.chdir below): then every relative path,
                    # whatever directory it is relative to, resolves inside the work dir.
                    path, mode, flags = args
                    path = as_str(path, event)
                    if isinstance(path, int):
                        return
                    if not path.startswith("/") and _norm(path).startswith(".."):
                        deny("relative path out of its directory %r" % (path,))
                    writing = (mode is not None and any(c in mode for c in "wax+")) or bool(flags & W)
                    if writing and not inside(path):
                        deny("write to %r" % (path,))
                    if (flags & DIR_FLAGS or _isdir(full(path))) and not inside(path):
                        deny("directory fd of %r" % (path,))
                    if no_uid:
                        parts = full(path).split("/")
                        if (
                            len(parts) > 2
                            and parts[1] == "proc"
                            and parts[2] not in ("self", str(own_pid))
                            and parts[2].isdigit()
                        ):
                            deny("reading /proc of another process")
                elif event in ("os.listdir", "os.scandir"):
                    if isinstance(args[0], int):
                        deny(event + " of an fd")
                elif event in fs_one:
                    i = fs_one[event]  # a dir_fd makes a relative path unresolvable here
                    if not inside(as_str(args[0], event)) or (i is not None and args[i] not in NO_DIR_FD):
                        deny(event)
                elif event in ("os.rename", "os.link"):
                    if (
                        not (inside(as_str(args[0], event)) and inside(as_str(args[1], event)))
                        or args[2] not in NO_DIR_FD
                        or args[3] not in NO_DIR_FD
                    ):
                        deny(event)
                elif no_uid and event in ("os.kill", "os.killpg"):
                    if args[0] != own_pid:
                        deny(event)

            return h

        # Without the uid switch RLIMIT_NPROC would count all of the caller's processes and
        # nothing would sweep daemons, so fork is refused, unless a user + PID namespace make
        # both per-sandbox (NPROC is counted per user namespace; everything dies with PID 1).
        no_fork = uid is None and not (info["userns"] and info["pidns"])
        sys.addaudithook(make_hook(os.path.realpath(work), uid is None, no_fork, os.getpid()))
    # Forget the bootstrap's tools: ctypes stays out of reach of the program.
    for m in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[m]
    del libc, mount, drop_privileges, landlock, ctypes
    main = type(sys)("__main__")
    main.__file__ = "solution.py"
    sys.modules["__main__"] = main
    sys.argv = ["solution.py"]
    del src, cfg, info
    exec(code, main.__dict__)
else:
    # The supervisor: becomes the sandbox uid too, so that killing "everything I may signal" is
    # exactly the sandbox's leftovers (daemons that called setsid included).
    ppid = cfg["caller_pid"]

    def sweep_and_exit(*_):
        if uid is not None:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        else:
            try:
                os.killpg(0, signal.SIGKILL)
            except OSError:
                pass
        os._exit(3)

    drop_privileges()
    signal.signal(signal.SIGTERM, sweep_and_exit)
    signal.signal(signal.SIGALRM, sweep_and_exit)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # caller dies -> SIGTERM -> sweep
    if os.getppid() != ppid:
        sweep_and_exit()
    signal.alarm(cfg["backstop_s"])  # the caller normally kills us long before this
    _, st, ru = os.wait4(pid, 0)
    signal.alarm(0)
    final = {
        "exit": os.waitstatus_to_exitcode(st),
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "maxrss_kb": ru.ru_maxrss,
        "info": info,
    }
    if uid is not None:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    os.write(status_fd, (repr({"final": final}) + "\n").encode())
    os._exit(0)
