#!/usr/bin/env python3
"""Stage `r1_zero`: R1-Zero: GRPO from the base with accuracy + format rewards (rollout arrays + train jobs).

Runs only this stage, on the outputs earlier stages left in the run directory:
    python jobs/r1_zero.py configs/tiny.yaml                              # local executor
    python jobs/r1_zero.py configs/tiny.yaml launch.executor=slurm --no-wait   # as Slurm jobs
The whole recipe: python jobs/pipeline.py configs/tiny.yaml (= r1hpc run, = make demo).
"""

import sys

from r1hpc.pipeline import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "--stages", "r1_zero"]))
