"""`r1hpc gpu-hours` / tools/gpu_hours.py: GPU-hours, wasted GPU-hours and cost from sacct.

gpu-hours --since now-7days                          # standard tables from live sacct
gpu-hours --since 2026-11-01 --until 2026-12-01 --by account,partition --prices prices.yaml
gpu-hours --since now-1days --save-sacct dump.txt    # keep what sacct said ...
gpu-hours --sacct-file dump.txt --by run,stage,day --csv out.csv --plot out.png   # ... report later
gpu-hours --run-dir runs/exp1                         # one run's jobs, split into busy and waiting
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from r1hpc.accounting.busy import SPLIT_RULES, busy_report, render_busy, run_jobs, run_since, split_usage, step_records
from r1hpc.accounting.plot import plot_daily
from r1hpc.accounting.prices import Prices, flat_prices, load_prices
from r1hpc.accounting.report import KEYS, STANDARD_TABLES, build_report, check_keys, render_text, write_csv, write_json
from r1hpc.accounting.sacct import SacctError, SacctRow, parse_dump, read_dump, run_sacct, sacct_command, save_dump
from r1hpc.accounting.timespec import TimeSpecError, parse_time
from r1hpc.accounting.usage import JobUsage, attribute, job_usage
from r1hpc.fsio import StoreError

PROG = "gpu-hours"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="GPU-hours, wasted GPU-hours (requeued/preempted/node-failed "
        "attempts) and cost per user, account, partition, r1hpc run/stage and day, from sacct.",
    )
    src = p.add_argument_group("what to count")
    src.add_argument(
        "--since",
        help="start of the window: YYYY-MM-DD[THH:MM[:SS]], now-7days, "
        "today, ... (default: now-7days; with --sacct-file: no limit)",
    )
    src.add_argument("--until", help="end of the window, same forms (default: now)")
    src.add_argument("--user", help="only this user's jobs")
    src.add_argument("--account", help="only this Slurm account's jobs")
    src.add_argument("--run", help="only this r1hpc run's jobs")
    src.add_argument(
        "--run-dir",
        type=Path,
        metavar="RUN",
        help="only this run directory's Slurm jobs (its jobs.jsonl; --since defaults to just before its first "
        "submission), and a table of their GPU-hours per stage and job kind split into busy and waiting; "
        + SPLIT_RULES,
    )
    src.add_argument(
        "--sacct-file", type=Path, metavar="FILE", help="read a saved `sacct -P` dump instead of running sacct"
    )
    src.add_argument(
        "--save-sacct", type=Path, metavar="FILE", help="also save what sacct returned, for --sacct-file later"
    )
    cost = p.add_argument_group("cost")
    cost.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="YAML: {default: $, partitions: {name: $}, gpu_types: {type: $}} per GPU-hour",
    )
    cost.add_argument(
        "--price-per-gpu-hour",
        type=float,
        metavar="USD",
        help="flat $ per GPU-hour (with --prices: replaces its default)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--by",
        metavar="KEYS",
        help=f"comma-separated group keys from {','.join(KEYS)} (default: tables by user, account, run+stage and day)",
    )
    out.add_argument("--csv", type=Path, metavar="FILE", help="write the tables as CSV")
    out.add_argument("--json", type=Path, metavar="FILE", help="write tables, totals and jobs as JSON")
    out.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="stacked bar chart of GPU-hours per day by the first --by key"
    )
    out.add_argument("--quiet", action="store_true", help="do not print the text tables")
    return p


def _in_window(u: JobUsage, since: datetime | None, until: datetime | None) -> bool:
    """Keep a row that ran inside the window, or that did not run and was started/submitted in it."""
    if u.seconds > 0:
        return True
    t = u.row.start or u.row.submit
    return t is None or ((since is None or t >= since) and (until is None or t <= until))


def collect(
    args: argparse.Namespace, now: datetime
) -> tuple[list[SacctRow], dict[str, Any], datetime, datetime | None, datetime | None]:
    """Rows from sacct or the dump, the query description, and the resolved now/window."""
    if args.sacct_file is not None:
        rows, queried_at = read_dump(args.sacct_file)
        now = queried_at or now
        since = None if args.since is None else parse_time(args.since, now, "--since")
        until = None if args.until is None else parse_time(args.until, now, "--until")
        query: dict[str, Any] = {"source": str(args.sacct_file)}
    else:
        since = parse_time(args.since or "now-7days", now, "--since")
        until = parse_time(args.until or "now", now, "--until")
        cmd = sacct_command(since, until, args.user, args.account)
        text = run_sacct(cmd)
        if args.save_sacct is not None:
            save_dump(args.save_sacct, text, now, cmd)
        rows = parse_dump(text, "sacct output")
        query = {"source": "sacct", "command": cmd}
    if since is not None and until is not None and until < since:
        raise TimeSpecError(f"--until {until.isoformat()} is before --since {since.isoformat()}")
    query.update(
        now=now.isoformat(),
        since=None if since is None else since.isoformat(),
        until=None if until is None else until.isoformat(),
        user=args.user,
        account=args.account,
        run=args.run,
    )
    return rows, query, now, since, until


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit status: 1 if sacct or a dump fails, 2 for bad arguments or prices."""
    parser = build_parser()
    args = parser.parse_args(argv)
    now = datetime.now().replace(microsecond=0)
    try:
        if args.sacct_file is not None and args.save_sacct is not None:
            raise ValueError("--save-sacct saves live sacct output; it makes no sense with --sacct-file")
        by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by else []
        check_keys(by)
        if args.by is not None and not by:
            raise ValueError("--by: give at least one key")
        prices: Prices | None = None
        if args.prices is not None:
            prices = load_prices(args.prices, args.price_per_gpu_hour)
        elif args.price_per_gpu_hour is not None:
            prices = flat_prices(args.price_per_gpu_hour)
        jobs: dict[str, dict[str, Any]] | None = None
        if args.run_dir is not None:
            jobs = run_jobs(args.run_dir)
            first = run_since(jobs)
            if args.since is None and args.sacct_file is None and first is not None:
                args.since = first.strftime("%Y-%m-%dT%H:%M:%S")
        rows, query, now, since, until = collect(args, now)
        usages: list[JobUsage] = []
        for row in rows:
            if jobs is not None and row.job_id.split("_")[0] not in jobs:
                continue
            if (
                args.user
                and row.user != args.user
                or args.account
                and row.account != args.account
                or args.run
                and attribute(row)[0] != args.run
            ):
                continue
            u = job_usage(row, prices, now=now, since=since, until=until)
            if not _in_window(u, since, until):
                continue
            if u.run == "-" and row.name.startswith("r1hpc:"):
                print(
                    f"{PROG}: warning: job {row.job_id} name {row.name!r} does not follow "
                    "r1hpc:<run>:<stage>:<step>; counted under run '-'",
                    file=sys.stderr,
                )
            usages.append(u)
        tables = [tuple(by)] if by else list(STANDARD_TABLES)
        if jobs is not None:
            query["run_dir"] = str(args.run_dir)
        report = build_report(usages, tables, query)
        if jobs is not None:
            records = step_records(args.run_dir, {str(j.get("stage")) for j in jobs.values()})
            report["busy"] = busy_report(split_usage(usages, jobs, records), args.run_dir, jobs, usages)
        if not args.quiet:
            sys.stdout.write(render_text(report))
            if jobs is not None:
                sys.stdout.write("\n" + render_busy(report["busy"]))
        if args.csv is not None:
            write_csv(report, args.csv)
        if args.json is not None:
            write_json(report, args.json)
        if args.plot is not None:
            key = next((k for k in by if k != "day"), None) if by else "user"
            plot_daily(usages, key, args.plot)
    except SacctError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError, StoreError) as e:  # TimeSpecError, PriceError, bad --by or run dir, unwritable output
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0
