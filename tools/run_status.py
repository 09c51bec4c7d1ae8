#!/usr/bin/env python3
"""Show a run's stages, steps, models and jobs: `tools/run_status.py runs/tiny` (= `r1hpc status`)."""

import sys

from r1hpc.status import main

if __name__ == "__main__":
    sys.exit(main())
