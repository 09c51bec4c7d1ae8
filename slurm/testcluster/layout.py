"""Where the test cluster keeps its files, and its configs rendered from the *.in templates."""

from __future__ import annotations

import os
import pwd
import socket
import string
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BASE = "/tmp/r1hpc-testcluster"
DB_PASSWORD = "slurmtestpw"


class ClusterError(RuntimeError):
    """A step failed; the message says which and what its log says."""


@dataclass(frozen=True)
class Paths:
    base: Path

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def munge_sock(self) -> Path:
        return self.base / "munge" / "munge.sock"

    @property
    def mysql_sock(self) -> Path:
        return self.base / "mysql" / "mysqld.sock"

    def pidfile(self, daemon: str) -> Path:
        return {
            "munged": self.base / "munge" / "munged.pid",
            "mariadbd": self.base / "mysql" / "mariadbd.pid",
        }.get(daemon, self.base / "slurm" / "run" / f"{daemon}.pid")

    def logs(self, daemon: str) -> list[Path]:
        """The files a daemon writes to, most useful first."""
        if daemon == "munged":
            return [self.base / "munge" / "munged.log", self.base / "munge" / "munged.out"]
        if daemon == "mariadbd":
            return [self.base / "mysql" / "mariadbd.err", self.base / "mysql" / "mariadbd.out"]
        log = self.base / "slurm" / "log"
        return [log / f"{daemon}.log", log / f"{daemon}.out"]


def base_dir() -> Path:
    return Path(os.environ.get("R1HPC_TESTCLUSTER_DIR", DEFAULT_BASE)).resolve()


def hostname() -> str:
    # Slurm's NodeName must be what slurmd sees as `hostname -s`.
    return socket.gethostname().split(".")[0]


def render_configs(p: Paths) -> list[str]:
    """Write etc/*.conf from the templates; return the names of files whose content changed."""
    values = {"base": str(p.base), "host": hostname(), "db_password": DB_PASSWORD}
    changed = []
    for name in ("slurm.conf", "gres.conf", "slurmdbd.conf"):
        template = HERE / f"{name}.in"
        try:
            text = string.Template(template.read_text()).substitute(values)
        except (KeyError, ValueError) as err:
            raise ClusterError(
                f"{template}: bad placeholder {err}; expected only ${{base}}, ${{host}}, ${{db_password}}"
            ) from err
        target = p.etc / name
        if not target.exists() or target.read_text() != text:
            changed.append(name)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(target)
    dbd = p.etc / "slurmdbd.conf"
    os.chown(dbd, *user_ids("slurm"))  # slurmdbd refuses to start unless owned by SlurmUser, mode 600
    dbd.chmod(0o600)
    return changed


def user_ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError as err:
        raise ClusterError(f"user {user!r} does not exist; run `cluster.py install` first") from err
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, user: str) -> None:
    uid, gid = user_ids(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def prepare_dirs(p: Paths) -> None:
    for sub in ("etc", "dev", "munge", "mysql/data", "slurm/state", "slurm/log", "slurm/run", "spool"):
        (p.base / sub).mkdir(parents=True, exist_ok=True)
    for i in range(4):  # the "GPUs": device files slurmd can stat
        link = p.base / "dev" / f"fakegpu{i}"
        if not link.is_symlink():
            link.symlink_to("/dev/null")
    os.chown(p.base / "munge", *user_ids("munge"))  # munged insists on owning its log dir
    _chown_tree(p.base / "mysql", "mysql")
    _chown_tree(p.base / "slurm", "slurm")
