#!/usr/bin/env python3
"""Stage `reasoning_rl`: reasoning RL: GRPO from the cold-start model with accuracy + format +
language-consistency rewards.

Runs only this stage, on the outputs earlier stages left in the run directory:
    python jobs/reasoning_rl.py configs/tiny.yaml                              # local executor
    python jobs/reasoning_rl.py configs/tiny.yaml launch.executor=slurm --no-wait   # as Slurm jobs
The whole recipe: python jobs/pipeline.py configs/tiny.yaml (= r1hpc run, = make demo).
"""

import sys

from r1hpc.pipeline import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "--stages", "reasoning_rl"]))
