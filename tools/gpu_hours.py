#!/usr/bin/env python3
"""GPU-hours, wasted GPU-hours and cost from sacct; see `python tools/gpu_hours.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from r1hpc.accounting import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
