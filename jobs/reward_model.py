#!/usr/bin/env python3
"""Stage `reward_model`: train the pairwise helpfulness/harmlessness reward model used by rl_all and the
rejection judge.

Runs only this stage, on the outputs earlier stages left in the run directory:
    python jobs/reward_model.py configs/tiny.yaml                              # local executor
    python jobs/reward_model.py configs/tiny.yaml launch.executor=slurm --no-wait   # as Slurm jobs
The whole recipe: python jobs/pipeline.py configs/tiny.yaml (= r1hpc run, = make demo).
"""

import sys

from r1hpc.pipeline import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "--stages", "reward_model"]))
