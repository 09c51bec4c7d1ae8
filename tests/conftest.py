"""Shared test setup: the tests directory is importable by job processes (see tests/jobfns.py)."""

import os
from pathlib import Path

# One math thread per process: several test processes (and local jobs) share this machine's two
# cores, and oversubscribed OpenMP threads made the suite 4-6x slower. Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS_DIR = Path(__file__).resolve().parent
_path = os.environ.get("PYTHONPATH", "")
if str(TESTS_DIR) not in _path.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), _path) if p)


import pytest  # noqa: E402

REPO = TESTS_DIR.parent


@pytest.fixture(scope="session")
def smoke_run_local(tmp_path_factory):
    """The whole recipe with configs/smoke.yaml on the local executor, run once per session:
    the undisturbed reference that the Slurm run (with a requeue) is compared against."""
    from r1hpc.pipeline import main

    runs = tmp_path_factory.mktemp("smoke_local")
    assert main([str(REPO / "configs" / "smoke.yaml"), f"runs_dir={runs}"]) == 0
    return runs / "smoke"
