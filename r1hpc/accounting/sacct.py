"""Read job records from sacct, live or from a saved dump.

A dump is exactly what ``sacct -P`` prints with its header line (so columns are
found by name, in any order), optionally preceded by ``#`` lines; the tool writes
``# r1hpc-sacct-dump queried_at=<time>`` first so that a dump read later knows the
"now" its running jobs were measured at.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from r1hpc.accounting.timespec import slurm_format

# Comment goes last: it is free text that may contain the '|' separator, and a
# trailing column can be rejoined safely (see parse_dump). Restarts is read when a
# dump has it, but not asked for: sacct 22.05 has no such field; the REQUEUED rows
# that -D prints are the earlier attempts anyway.
FIELDS = (
    "JobID",
    "JobIDRaw",
    "JobName",
    "User",
    "Account",
    "Partition",
    "State",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "AllocTRES",
    "NodeList",
    "Comment",
)
REQUIRED = ("JobID", "JobName", "User", "Account", "Partition", "State", "Start", "ElapsedRaw", "AllocTRES")

# Every job state sacct prints (slurm.h job_states plus the flag-states sacct shows).
STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "REVOKED",
        "SPECIAL_EXIT",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "COMPLETING",
        "CONFIGURING",
    }
)
DUMP_MARK = "# r1hpc-sacct-dump"
_NO_TIME = {"", "unknown", "none"}


class SacctError(RuntimeError):
    """sacct failed, or a dump line cannot be read."""


@dataclass(frozen=True)
class SacctRow:
    """One line of ``sacct -X -D``: one attempt of one job or array task."""

    job_id: str  # e.g. "123", "120_3" (array task), "120_[4-7]" (pending tasks)
    job_id_raw: str
    name: str
    user: str
    account: str
    partition: str
    state: str  # first word: "CANCELLED by 0" -> "CANCELLED"
    submit: datetime | None
    start: datetime | None
    end: datetime | None
    elapsed_s: int
    alloc_tres: str
    restarts: int | None  # None when the dump has no Restarts column
    node_list: str
    comment: str
    line: int  # where it came from, for messages
    source: str


def _time(value: str, where: str, column: str) -> datetime | None:
    if value.strip().lower() in _NO_TIME:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise SacctError(
            f"{where}: column {column} = {value!r} is not a time (expected YYYY-MM-DDTHH:MM:SS, Unknown or None)"
        ) from None


def _int(value: str, where: str, column: str, default: int | None = None) -> int:
    if value.strip() == "" and default is not None:
        return default
    try:
        n = int(value.strip())
    except ValueError:
        n = -1
    if n < 0:
        raise SacctError(f"{where}: column {column} = {value!r} is not a whole number >= 0")
    return n


def dump_queried_at(text: str) -> datetime | None:
    """The ``queried_at`` time written by save_dump, if the dump has one."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(DUMP_MARK):
            for word in line.split():
                if word.startswith("queried_at="):
                    try:
                        return datetime.fromisoformat(word.split("=", 1)[1])
                    except ValueError:
                        return None
    return None


def parse_dump(text: str, source: str) -> list[SacctRow]:
    """Parse ``sacct -P`` output (header line required) into rows.

    Raises SacctError naming ``source`` and the 1-based line for anything malformed.
    """
    rows: list[SacctRow] = []
    header: list[str] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        where = f"{source}:{lineno}"
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("|")
        if header is None:
            header = [c.strip() for c in cells]
            missing = [f for f in REQUIRED if f not in header]
            if missing:
                raise SacctError(
                    f"{where}: expected a sacct -P header line naming "
                    f"{', '.join(REQUIRED)}; missing {', '.join(missing)} "
                    f"(got {line[:120]!r})"
                )
            continue
        if len(cells) > len(header) and header[-1] == "Comment":
            # A '|' inside the trailing free-text Comment: glue it back together.
            cells = cells[: len(header) - 1] + ["|".join(cells[len(header) - 1 :])]
        if len(cells) != len(header):
            raise SacctError(
                f"{where}: expected {len(header)} '|'-separated fields as in "
                f"the header, got {len(cells)}: {line[:120]!r}"
            )
        rec = dict(zip(header, cells))
        job_id = rec["JobID"].strip()
        if not job_id or not job_id[0].isdigit():
            raise SacctError(f"{where}: column JobID = {job_id!r} is not a job id")
        if "." in job_id:
            raise SacctError(f"{where}: job step {job_id!r} found; dumps must come from sacct -X (allocations only)")
        state = rec["State"].split(" ")[0].strip().upper()
        if state not in STATES:
            raise SacctError(f"{where}: column State = {rec['State']!r} is not a Slurm job state")
        rows.append(
            SacctRow(
                job_id=job_id,
                job_id_raw=rec.get("JobIDRaw", job_id).strip() or job_id,
                name=rec["JobName"],
                user=rec["User"].strip(),
                account=rec["Account"].strip(),
                partition=rec["Partition"].strip(),
                state=state,
                submit=_time(rec.get("Submit", ""), where, "Submit"),
                start=_time(rec["Start"], where, "Start"),
                end=_time(rec.get("End", ""), where, "End"),
                elapsed_s=_int(rec["ElapsedRaw"], where, "ElapsedRaw", default=0),
                alloc_tres=rec["AllocTRES"].strip(),
                restarts=(_int(rec["Restarts"], where, "Restarts", default=0) if "Restarts" in rec else None),
                node_list=rec.get("NodeList", "").strip(),
                comment=rec.get("Comment", ""),
                line=lineno,
                source=source,
            )
        )
    if header is None:
        raise SacctError(f"{source}: empty; expected sacct -P output with its header line")
    return rows


def read_dump(path: Path) -> tuple[list[SacctRow], datetime | None]:
    """Rows of a saved dump and the time it was queried at (None if unknown)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SacctError(f"{path}: cannot read sacct dump: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SacctError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_dump(text, str(path)), dump_queried_at(text)


def sacct_command(since: datetime, until: datetime, user: str | None = None, account: str | None = None) -> list[str]:
    """The sacct argv: one row per attempt (-D) of each allocation (-X), all users."""
    cmd = [
        "sacct",
        "-P",
        "-D",
        "-X",
        "--format=" + ",".join(FIELDS),
        "-S",
        slurm_format(since),
        "-E",
        slurm_format(until),
    ]
    cmd += ["-u", user] if user else ["--allusers"]
    if account:
        cmd += ["-A", account]
    return cmd


# What sacct (Slurm 22-24) prints when it finds no configuration: no slurm.conf, and configless
# mode found no slurmctld in DNS (fetch_config / "configuration source"), or SLURM_CONF unreadable.
_NO_CONFIG_MARKS = (
    "fetch_config",
    "Could not establish a configuration source",
    "Unable to process configuration file",
    "s_p_parse_file: cannot stat file",
)
_NO_SLURM_HINT = "run on a Slurm login node or use --sacct-file"


def _no_config_message(env: dict[str, str]) -> str:
    where = (
        f"SLURM_CONF={env['SLURM_CONF']}"
        if env.get("SLURM_CONF")
        else "SLURM_CONF is unset, and neither a slurm.conf in the default place nor a slurmctld in DNS"
    )
    return f"sacct finds no Slurm configuration ({where}); {_NO_SLURM_HINT}"


def run_sacct(cmd: list[str], timeout: float = 300) -> str:
    """Run sacct and return its stdout; SacctError with its stderr on failure (one line saying
    what is missing when there is no Slurm configuration to reach)."""
    # ISO times regardless of the caller's SLURM_TIME_FORMAT, so parse_dump can read them.
    env = dict(os.environ, SLURM_TIME_FORMAT="standard")
    if env.get("SLURM_CONF") and not os.path.isfile(env["SLURM_CONF"]):
        # sacct itself retries a missing SLURM_CONF for 60 s before giving up
        raise SacctError(f"SLURM_CONF={env['SLURM_CONF']} does not exist; {_NO_SLURM_HINT}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError:
        raise SacctError(f"sacct not found on PATH; {_NO_SLURM_HINT}") from None
    except subprocess.TimeoutExpired:
        raise SacctError(f"sacct did not answer within {timeout:.0f} s: {shlex.join(cmd)}") from None
    if proc.returncode != 0 and any(mark in proc.stderr for mark in _NO_CONFIG_MARKS):
        raise SacctError(_no_config_message(env))
    if proc.returncode != 0:
        raise SacctError(f"sacct failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stderr.strip()}")
    return proc.stdout


def save_dump(path: Path, sacct_output: str, queried_at: datetime, cmd: list[str]) -> None:
    """Write sacct output as a dump that read_dump understands."""
    head = f"{DUMP_MARK} queried_at={slurm_format(queried_at)}\n# {shlex.join(cmd)}\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(head + sacct_output, encoding="utf-8")
    tmp.replace(path)
