"""Shared test setup: the tests directory is importable by job processes (see tests/jobfns.py)."""

import os
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
_path = os.environ.get("PYTHONPATH", "")
if str(TESTS_DIR) not in _path.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), _path) if p)
