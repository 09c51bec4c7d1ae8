#!/usr/bin/env python3
"""The whole DeepSeek-R1 recipe as one DAG of jobs (= `r1hpc run`, what `make demo` runs).

python jobs/pipeline.py configs/tiny.yaml                                # here, local executor
python jobs/pipeline.py configs/tiny.yaml launch.executor=slurm --no-wait  # on a Slurm cluster
python jobs/pipeline.py configs/tiny.yaml --stages r1_zero,eval          # a subset, resuming a run
"""

import sys

from r1hpc.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
