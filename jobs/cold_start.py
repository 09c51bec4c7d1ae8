#!/usr/bin/env python3
"""Stage `cold_start`: build the readable long-CoT cold-start set from R1-Zero outputs and SFT the base on it.

Runs only this stage, on the outputs earlier stages left in the run directory:
    python jobs/cold_start.py configs/tiny.yaml                              # local executor
    python jobs/cold_start.py configs/tiny.yaml launch.executor=slurm --no-wait   # as Slurm jobs
The whole recipe: python jobs/pipeline.py configs/tiny.yaml (= r1hpc run, = make demo).
"""

import sys

from r1hpc.pipeline import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "--stages", "cold_start"]))
