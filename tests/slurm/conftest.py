"""Shared fixtures for tests that use the real single-node Slurm test cluster (slurm/testcluster/).

Every test collected under tests/slurm/ gets the `slurm` marker automatically. The cluster must already run
and SLURM_CONF must point at it, which `make test` arranges through
`python3 slurm/testcluster/cluster.py run -- ...`; otherwise the tests FAIL (they never skip).

Fixtures:
    slurm_env  (session) dict: os.environ plus SLURM_CONF, checked with `scontrol ping`. Pass it as `env=`
               to subprocess calls and to anything that submits jobs (submitit reads SLURM_CONF from it).
    slurm      (session) a `SlurmClient` bound to slurm_env with the helpers below.

SlurmClient helpers (all raise pytest.fail with the command's output on error):
    slurm.cmd(["squeue", "-h"])                     -> stdout of any Slurm client command
    slurm.sbatch(script_text, "--array=0-3", cwd=tmp_path)
                                                    -> job id (str); writes the script to cwd, runs sbatch
    slurm.wait_for_state(job_id, {"COMPLETED"}, timeout=60)
                                                    -> {JobID: State} once every row is in the given states
                                                       (for final states: once sacct has caught up too)
    slurm.sacct_rows(job_id, ["Account", "AllocTRES"], duplicates=False, allocations=True)
                                                    -> list of dicts, one per sacct row
    slurm.squeue_field(job_id, "%r")                -> one squeue field (e.g. the pending reason), "" if gone

States are sacct's first word ("CANCELLED by 0" -> "CANCELLED"). Job output should go to tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START_HINT = (
    "run the tests via `make test`, or start the test cluster with "
    "`python3 slurm/testcluster/cluster.py start` and export the SLURM_CONF it prints"
)
# sacct field separator that no job name/comment in these tests contains (sacct's default "|" might).
SEP = "\x1f"
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.slurm)


class SlurmClient:
    """Thin wrappers over the Slurm CLI, bound to one environment (SLURM_CONF)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def cmd(self, argv: list[str], timeout: float = 60, cwd: Path | None = None) -> str:
        """Run a Slurm client command; return its stdout, or fail the test with its output."""
        res = subprocess.run(
            argv, env=self.env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
        if res.returncode != 0:
            pytest.fail(f"`{' '.join(argv)}` exited {res.returncode}:\n{res.stdout}{res.stderr}")
        return res.stdout

    def sbatch(self, script: str, *args: str, cwd: Path, name: str = "job.sh") -> str:
        """Write `script` (a full batch script, #! line included) to cwd/name and submit it; return the job id."""
        path = cwd / name
        path.write_text(script)
        out = self.cmd(["sbatch", "--parsable", *args, str(path)], cwd=cwd).strip()
        return out.split(";")[0]  # --parsable prints "id" or "id;cluster"

    def sacct_rows(
        self, job_id: str, fields: Iterable[str], duplicates: bool = False, allocations: bool = True
    ) -> list[dict[str, str]]:
        """sacct rows for job_id as dicts keyed by field name.

        allocations=True (-X) gives one row per job or array task, no steps; duplicates=True (-D) also shows
        earlier runs of a requeued job (state REQUEUED).
        """
        fields = list(fields)
        argv = ["sacct", "-n", "-P", f"--delimiter={SEP}", "-j", job_id, "-o", ",".join(fields)]
        argv += ["-X"] if allocations else []
        argv += ["-D"] if duplicates else []
        rows = []
        for line in self.cmd(argv).splitlines():
            values = line.split(SEP)
            if len(values) != len(fields):
                pytest.fail(f"sacct row {line!r} has {len(values)} fields, expected {len(fields)}: {fields}")
            rows.append(dict(zip(fields, values)))
        return rows

    def states(self, job_id: str) -> dict[str, str]:
        """{JobID: State} from sacct, state reduced to its first word."""
        return {r["JobID"]: r["State"].split()[0] for r in self.sacct_rows(job_id, ["JobID", "State"])}

    def controller_states(self, job_id: str) -> dict[str, str]:
        """{JobID: State} from slurmctld (squeue -t all: finished jobs stay listed for MinJobAge, 300 s)."""
        res = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i %T"], env=self.env, capture_output=True, text=True
        )
        return dict(line.split() for line in res.stdout.splitlines()) if res.returncode == 0 else {}

    def wait_for_state(
        self, job_id: str, states: Iterable[str], timeout: float = 60, poll: float = 0.2
    ) -> dict[str, str]:
        """Wait until every row of job_id (each array task) is in one of `states`; return {JobID: State}.

        slurmctld (squeue) decides. sacct lags it: a short job's row first appears from its end record with
        JobName "allocation" and no Partition/QOS/SubmitLine; slurmctld sends the start record from a
        background pass up to ~5 s later. So when the wanted states are final this also waits until sacct
        shows the same rows and states with Partition set; later sacct_rows() calls see complete records.
        A pending array is one row `id_[0-3]`, so waiting for COMPLETED covers all tasks. Fails the test at
        once when the job ends in an unwanted final state, and on timeout, with scontrol's view of the job.
        """
        wanted = set(states)
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            ctl = self.controller_states(job_id)
            rows = self.sacct_rows(job_id, ["JobID", "State", "Partition"])
            db = {r["JobID"]: r["State"].split()[0] for r in rows}
            seen = ctl or db  # a job purged from slurmctld is only in sacct
            if seen and all(s in wanted for s in seen.values()):
                if not set(seen.values()) <= FINAL_STATES:
                    return seen
                if db == seen and all(r["Partition"] for r in rows):
                    return seen
            elif seen and set(seen.values()) <= FINAL_STATES:
                break  # finished, some rows in an unwanted final state: waiting longer cannot help
            time.sleep(poll)
        detail = subprocess.run(
            ["scontrol", "show", "job", job_id], env=self.env, capture_output=True, text=True
        ).stdout
        pytest.fail(
            f"job {job_id}: states {seen}, wanted all in {sorted(wanted)} (timeout {timeout} s)\n"
            f"sacct: {self.states(job_id)}\n{detail}"
        )

    def squeue_field(self, job_id: str, fmt: str) -> str:
        """One squeue -o field for job_id (e.g. "%T" state, "%r" reason); "" once the job left the queue."""
        res = subprocess.run(["squeue", "-h", "-j", job_id, "-o", fmt], env=self.env, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else ""


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """os.environ + SLURM_CONF, after checking that slurmctld answers `scontrol ping`."""
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        pytest.fail(f"SLURM_CONF is not set; {START_HINT}")
    if not Path(conf).is_file():
        pytest.fail(f"SLURM_CONF={conf} does not exist; {START_HINT}")
    env = dict(os.environ)
    try:
        res = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"`scontrol ping` failed ({err}); {START_HINT}")
    if res.returncode != 0 or "is UP" not in res.stdout:
        pytest.fail(f"the Slurm test cluster does not answer (`scontrol ping`: {res.stdout}{res.stderr}); {START_HINT}")
    return env


@pytest.fixture(scope="session")
def slurm(slurm_env: dict[str, str]) -> SlurmClient:
    return SlurmClient(slurm_env)
