"""The `r1hpc` command: one entry point, each subcommand a thin call into the library.

r1hpc run configs/tiny.yaml                         the whole R1 recipe (make demo runs this)
r1hpc plan configs/deepseek_v3_671b.yaml            layout, memory per GPU, GPU-hours per stage
r1hpc config configs/tiny.yaml grpo.group_size=16     validate and print the resolved config
r1hpc sbatch configs/tiny.yaml --kind rollout --array 4   print the sbatch script a job would get
r1hpc preflight configs/tiny.yaml launch.executor=slurm   check nodes, GPUs and the shared run dir
r1hpc status runs/tiny                                 stages, steps, time left, results, jobs
r1hpc fork runs/tiny --from rl_all name=t2 rl_all.lr=1e-5   a new run reusing the stages before rl_all
r1hpc exec r1hpc.preflight:node_report report_dir=/tmp/p task=0   run one task here
r1hpc gpu-hours --since now-7days --by user,run        GPU-hours and cost from Slurm accounting
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from r1hpc.config import ConfigError, load_config
from r1hpc.inputs import check_inputs

__all__ = ["main"]


def _cmd_config(args: argparse.Namespace) -> int:
    from r1hpc import configio

    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(configio.to_yaml(cfg))
    return 0


def _cmd_sbatch(args: argparse.Namespace) -> int:
    from r1hpc.launch import render_sbatch

    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(
        render_sbatch(
            cfg,
            kind=args.kind,
            stage=args.stage,
            step=args.step,
            distributed=args.distributed,
            array_size=args.array,
            dependency=args.dependency,
        )
    )
    return 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    from r1hpc.preflight import run_preflight

    cfg = load_config(args.config, args.overrides)
    check_inputs(cfg)  # the run's datasets, checkpoints and custom rewards, as `r1hpc run` checks them
    return run_preflight(cfg, tasks=args.tasks, kind=args.kind)


def _cmd_status(args: argparse.Namespace) -> int:
    from r1hpc.status import main as status_main

    return status_main([args.run_dir, *(["--no-slurm"] if args.no_slurm else []), *(["--jobs"] if args.jobs else [])])


def _fork_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1hpc fork", description=fork_doc(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="the run to fork (the directory r1hpc run made)")
    parser.add_argument(
        "--from", dest="from_stage", required=True, help="the first stage the fork runs again (with every later one)"
    )
    parser.add_argument("overrides", nargs="*", help="key=value: name=NEW and the settings to change")
    return parser


def fork_doc() -> str:
    from r1hpc import fork

    return fork.__doc__ or ""


def _cmd_fork(argv: list[str]) -> int:
    from r1hpc.fork import fork_run, plan_fork

    args = _fork_parser().parse_intermixed_args(argv)
    plan = plan_fork(args.run_dir, args.from_stage, args.overrides)
    dst = fork_run(plan, argv=["r1hpc", "fork", args.run_dir, "--from", args.from_stage, *args.overrides])
    print(f"forked {plan.source} into {dst}")
    print(
        f"  kept from {plan.source}: {', '.join(plan.kept)}"
        + ("" if plan.keep_evals else " (evals redone: eval.* changed)")
    )
    print(f"  to run: {', '.join(plan.dropped)}, their evals and the report")
    print(f"continue with:  r1hpc run {dst / 'config.yaml'}")
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    """Run one task in this process: what the plain-sbatch templates in slurm/ call."""
    import json
    import os

    import yaml

    from r1hpc.launch import StageTask

    kwargs = {}
    for item in args.kwargs:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"r1hpc exec: expected key=value, got {item!r}")
        kwargs[key] = yaml.safe_load(raw) if raw else ""
    if args.array_arg:  # e.g. shard=<this array task's index>, for `sbatch --array`
        index = os.environ.get("SLURM_ARRAY_TASK_ID")
        if index is None or not index.isdigit():
            raise SystemExit(
                f"r1hpc exec --array-arg {args.array_arg}: SLURM_ARRAY_TASK_ID is {index!r}; submit with sbatch --array"
            )
        kwargs[args.array_arg] = int(index)
    result = StageTask(args.target, engine_workers=args.engine_workers)(**kwargs)
    if int(os.environ.get("RANK", "0")) == 0:  # the followers of an engine have no result
        print(json.dumps(result, default=str))
    return 0


def _with_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML config, e.g. configs/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. grpo.group_size=16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1hpc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the R1 recipe: submit its DAG of jobs (see r1hpc run -h)")
    sub.add_parser("plan", help="dry run at full size: layout, memory per GPU, GPU-hours per stage (see r1hpc plan -h)")
    sub.add_parser(
        "fork",
        help="a new run from a run's outputs before a stage, to rerun it and the later ones with other settings "
        "(see r1hpc fork -h)",
    )
    sub.add_parser(
        "gpu-hours", help="GPU-hours and cost per user/account/run/stage/day from sacct (see r1hpc gpu-hours -h)"
    )
    commands: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "config": (_cmd_config, "validate a config and print it resolved"),
        "sbatch": (_cmd_sbatch, "print the sbatch script the slurm executor would submit"),
        "preflight": (_cmd_preflight, "run a job array that checks nodes, GPUs and the shared run directory"),
        "status": (_cmd_status, "show a run's stages, steps, jobs and progress"),
        "exec": (_cmd_exec, "run one task (module:function key=value ...) in this process, e.g. inside sbatch"),
    }
    parsers = {
        name: sub.add_parser(
            name,
            help=text,
        )
        for name, (_, text) in commands.items()
    }
    for name, (func, _) in commands.items():
        parsers[name].set_defaults(func=func)
    _with_config(parsers["config"])
    _with_config(parsers["sbatch"])
    parsers["sbatch"].add_argument("--kind", choices=["train", "rollout", "eval"], default="train")
    parsers["sbatch"].add_argument("--stage", default="r1_zero")
    parsers["sbatch"].add_argument("--step", type=int, default=None)
    parsers["sbatch"].add_argument("--array", type=int, default=0, help="array size (0 = a single job)")
    parsers["sbatch"].add_argument("--dependency", default=None, help="e.g. afterok:1234")
    parsers["sbatch"].add_argument(
        "--distributed", action="store_true", help="one process per rank on all the kind's nodes (a Megatron train job)"
    )
    _with_config(parsers["preflight"])
    parsers["preflight"].add_argument("--tasks", type=int, default=2, help="array tasks to run")
    parsers["preflight"].add_argument("--kind", choices=["train", "rollout", "eval"], default="rollout")
    parsers["status"].add_argument("run_dir")
    parsers["status"].add_argument("--no-slurm", action="store_true", help="do not ask squeue/sacct")
    parsers["status"].add_argument("--jobs", action="store_true", help="list every job (default: one line per stage)")
    parsers["exec"].add_argument("target", help="package.module:function")
    parsers["exec"].add_argument("kwargs", nargs="*", help="key=value arguments (values parsed as YAML)")
    parsers["exec"].add_argument(
        "--array-arg",
        default=None,
        metavar="NAME",
        help="also pass NAME=<SLURM_ARRAY_TASK_ID> (e.g. shard, for a rollout array)",
    )
    parsers["exec"].add_argument(
        "--engine-workers",
        type=int,
        default=1,
        metavar="N",
        help="a generation task whose vLLM engine spans N processes (config engine.tp*pp): start it with "
        "`srun` as N tasks; rank 0 runs the target, the others serve its engine",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # These subcommands own every option after their word (their own argparse parsers).
    if argv and argv[0] == "gpu-hours":
        from r1hpc.accounting import main as gpu_hours_main

        return gpu_hours_main(argv[1:])
    if argv and argv[0] == "plan":
        from r1hpc.plan import main as plan_main

        return plan_main(argv[1:])
    if argv and argv[0] in ("run", "demo"):
        from r1hpc.pipeline import main as run_main

        return run_main(argv[1:])
    if argv and argv[0] == "fork":
        try:
            return _cmd_fork(argv[1:])
        except ConfigError as e:
            print(f"r1hpc fork: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"r1hpc: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
