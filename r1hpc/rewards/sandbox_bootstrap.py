"""The sandbox's trusted bootstrap: NOT a module to import (it acts on sys.argv at top level).

r1hpc.rewards.sandbox runs this file's text as `python -I -S -c <text> key=value ... marker` in the
fresh interpreter that will become the sandboxed program (see that module's docstring).
"""
import os, sys, _signal as signal, resource, ctypes
cfg = {}
for arg in sys.argv[1:-1]:
    k, v = arg.split("=", 1)
    cfg[k] = int(v) if v.lstrip("-").isdigit() else v
libc = ctypes.CDLL(None, use_errno=True)
NS = {"netns": 0x40000000, "pidns": 0x20000000, "mountns": 0x00020000, "ipcns": 0x08000000}
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
info = {"netns": False, "pidns": False, "mountns": False, "ipcns": False, "private_tmp": False,
        "proc_remounted": False, "uid": None, "audit_hook": False, "errors": []}
def err(what):
    info["errors"].append(what + ": " + os.strerror(ctypes.get_errno()))
def mount(src, dst, fstype, flags, data):
    enc = lambda s: None if s is None else s.encode()
    return libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0
with open(cfg["prog"], "rb") as f:
    src = f.read()
work = cfg["work"]
root = os.geteuid() == 0
if cfg["namespaces"]:
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
            if os.path.isdir(d) and not mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV,
                                              "size=%dm,mode=1777" % cfg["tmpfs_mb"]):
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
status_fd = cfg["status_fd"]
pid = os.fork()
if pid == 0:
    # The program's process (PID 1 of the new PID namespace when there is one).
    if info["pidns"] and info["mountns"]:
        info["proc_remounted"] = mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    lim = cfg
    for res, soft, hard in ((resource.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 1),
                            (resource.RLIMIT_AS, lim["as_bytes"], lim["as_bytes"]),
                            (resource.RLIMIT_NPROC, lim["nproc"], lim["nproc"]),
                            (resource.RLIMIT_NOFILE, lim["nofile"], lim["nofile"]),
                            (resource.RLIMIT_FSIZE, lim["fsize"], lim["fsize"]),
                            (resource.RLIMIT_CORE, 0, 0)):
        resource.setrlimit(res, (soft, hard))
    drop_privileges()
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
        def make_hook(work, no_uid, own_pid):
            import os as _os
            from os.path import realpath as _real, join as _join
            W = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND
            refused = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto",
                       "socket.getaddrinfo", "os.exec", "os.posix_spawn", "os.spawn",
                       "os.system", "subprocess.Popen", "os.forkpty", "pty.spawn"}
            if no_uid:
                refused |= {"os.fork"}
            blocked_imports = {"ctypes", "_ctypes", "_posixsubprocess"}
            # event -> index of its dir_fd argument (None: it has none)
            fs_one = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.chmod": 2, "os.chown": 3,
                      "os.utime": 3, "os.mkfifo": 2, "os.mknod": 3, "shutil.rmtree": 1,
                      "os.truncate": None, "os.chflags": None, "os.setxattr": None,
                      "os.removexattr": None}
            def inside(p):
                if isinstance(p, int):
                    return True
                if isinstance(p, bytes):
                    p = p.decode("utf-8", "surrogateescape")
                full = _real(_join(_os.getcwd(), p))
                return full == "/dev/null" or full == work or full.startswith(work + "/")
            def deny(event):
                raise PermissionError("sandbox: %s refused" % event)
            def h(event, args):
                if event in refused or event.startswith("ctypes."):
                    deny(event)
                if event == "import":
                    if args[0].split(".")[0] in blocked_imports:
                        deny("import " + args[0])
                elif event == "open":
                    path, mode, flags = args
                    writing = (mode is not None and any(c in mode for c in "wax+")) or bool(flags & W)
                    if writing and not inside(path):
                        deny("write to %r" % (path,))
                    if no_uid and isinstance(path, (str, bytes)):
                        p = _real(path if isinstance(path, str) else path.decode("utf-8", "replace"))
                        parts = p.split("/")
                        if len(parts) > 2 and parts[1] == "proc" and parts[2] not in ("self", str(own_pid)) and parts[2].isdigit():
                            deny("reading /proc of another process")
                elif event in fs_one:
                    i = fs_one[event]  # a dir_fd makes a relative path unresolvable here
                    if not inside(args[0]) or (i is not None and args[i] is not None):
                        deny(event)
                elif event in ("os.rename", "os.link"):
                    if not (inside(args[0]) and inside(args[1])) or args[2] is not None or args[3] is not None:
                        deny(event)
                elif event == "os.symlink":
                    if not inside(args[1]) or args[2] is not None:
                        deny(event)
                elif no_uid and event in ("os.kill", "os.killpg"):
                    if args[0] != own_pid:
                        deny(event)
            return h
        sys.addaudithook(make_hook(os.path.realpath(work), uid is None, os.getpid()))
    # Forget the bootstrap's tools: ctypes stays out of reach of the program.
    for m in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[m]
    del libc, mount, drop_privileges, ctypes
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
    final = {"exit": os.waitstatus_to_exitcode(st), "cpu_s": ru.ru_utime + ru.ru_stime,
             "maxrss_kb": ru.ru_maxrss, "info": info}
    if uid is not None:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    os.write(status_fd, (repr({"final": final}) + "\n").encode())
    os._exit(0)
