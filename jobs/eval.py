#!/usr/bin/env python3
"""Stage `eval`: pass@1 over k samples (T=0.6, top-p 0.95) and cons@k on the held-out split, for every published model.

Runs only this stage, on the outputs earlier stages left in the run directory:
    python jobs/eval.py configs/tiny.yaml                              # local executor
    python jobs/eval.py configs/tiny.yaml launch.executor=slurm --no-wait   # as Slurm jobs
The whole recipe: python jobs/pipeline.py configs/tiny.yaml (= r1hpc run, = make demo).
"""

import sys

from r1hpc.pipeline import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "--stages", "eval"]))
