"""The cost planner: `r1hpc plan CONFIG [key=value ...] [--students PATH]`.

Parameter counts, memory per GPU of the parallel layout, GPUs and nodes, step time and GPU-hours
of every R1 stage from a FLOP/bandwidth model with stated MFU, calibrated against DeepSeek-V3's
published pretraining GPU-hours, and the sbatch lines of the jobs. Pure arithmetic; no GPUs.
"""

from r1hpc.plan.plan import Plan, PlanError, make_plan
from r1hpc.plan.render import main, render

__all__ = ["Plan", "PlanError", "make_plan", "main", "render"]
