"""GPU-hour accounting from sacct: who used how many GPU-hours, on what, at what cost.

Modules: sacct (read sacct / dumps), timespec (--since/--until), usage (GPU-seconds
per job, per day), prices ($/GPU-hour), report (tables, text/CSV/JSON), plot, cli.
"""

from r1hpc.accounting.cli import build_parser, main

__all__ = ["build_parser", "main"]
