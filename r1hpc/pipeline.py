"""The DeepSeek-R1 recipe as a DAG of jobs, submitted through the launcher.

    data -> base ----------> r1_zero -> cold_start -> reasoning_rl -> rejection -> sft -> rl_all
         \\-> student_base --> distill_rl              reward_model -/                 \\-> distill
    every model -> eval array;  all evals -> report

    r1hpc run configs/tiny.yaml                         the whole recipe (local executor: here)
    r1hpc run configs/tiny.yaml launch.executor=slurm   the same DAG as sbatch arrays + afterok chains
    r1hpc run configs/tiny.yaml --stages r1_zero,eval   some stages, on the run's existing outputs

A GRPO stage is one rollout array (grpo.rollout_shards tasks) and one train job that live for
the whole stage and hand over through the run directory (grpo.jobs=stage, r1hpc.stages.grpo); with
grpo.jobs=step it is per step a rollout array and a train job depending on it, the next step's
array depending on that train job (or, with grpo.max_staleness=1, on the one before, so
generation of step N+1 overlaps training of step N). Stages hand over only
through the run directory; every job is idempotent, so re-running the pipeline after a failure
(or on a requeue) skips what is complete and continues.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from r1hpc import recipe
from r1hpc.completion import eval_complete, stage_complete
from r1hpc.config import Config, ConfigError, load_config, write_resolved
from r1hpc.fsio import read_jsonl
from r1hpc.inputs import check_inputs
from r1hpc.launch import JobFailed, Launcher, Submission, wait_all
from r1hpc.lease import Lease, LeaseHeldError
from r1hpc.stages.handoff import reset_stage
from r1hpc.store import RunDir, list_versions

__all__ = ["STAGES", "MODEL_STAGES", "submit_pipeline", "main"]

STAGES = recipe.names()  # the stages of the recipe's table (r1hpc.recipe), for the command line
# Stages that publish a policy, in recipe order: each is evaluated on the held-out split.
MODEL_STAGES = recipe.evaluated()


def _train_target(cfg: Config, stage_target: str, function: str) -> str:
    """The GRPO train job (train_task per step, train_loop per stage): Megatron-core (TP/PP/EP,
    launches its ranks) or plain torch."""
    if cfg.parallel.backend == "megatron":
        return f"r1hpc.stages.grpo_megatron:{function}"
    return recipe.sibling(stage_target, function)


def _grpo(launcher: Launcher, cfg: Config, stage: str, after: Sequence[Submission]) -> Submission:
    """Submit one GRPO stage; returns what later stages wait on (the train job that publishes the
    last version; with grpo.jobs=stage grouped with the rollout array it runs beside)."""
    run_dir = str(cfg.run_dir)
    entry = recipe.stage(stage)
    steps = getattr(cfg, entry.section).steps
    # On Slurm one task per rank (srun); locally the Megatron job starts torchrun itself.
    distributed = cfg.parallel.backend == "megatron" and cfg.launch.executor == "slurm"
    # The debug executor runs one job at a time in this process (for pdb): loops that wait on each
    # other cannot run there, so it takes the per-step jobs.
    if steps > 0 and cfg.grpo.jobs == "stage" and launcher.executor != "debug":
        # Two submissions that start together (no preparing job: one queue wait fewer). The train
        # job publishes v0000 first; the rollout tasks wait for it. What an earlier attempt left
        # behind is cleared now, before any job of this submission starts (handoff.reset_stage).
        reset_stage(RunDir(run_dir), stage, cfg.grpo.heartbeat_timeout_s)
        rollouts = launcher.submit_array(
            stage,
            "rollout",
            recipe.sibling(entry.target, "rollout_loop"),
            [{"run_dir": run_dir, "stage": stage, "shard": k} for k in range(cfg.grpo.rollout_shards)],
            after=after,
        )
        train = launcher.submit(
            stage,
            "train",
            _train_target(cfg, entry.target, "train_loop"),
            {"run_dir": run_dir, "stage": stage},
            after=after,
            distributed=distributed,
        )
        return Submission.linked_group(train, rollouts)
    prep = launcher.submit(stage, "train", entry.target, {"run_dir": run_dir, "stage": stage}, after=after)
    if steps == 0:
        return prep
    trains: list[Submission] = []
    for step in range(steps):
        lag = cfg.grpo.max_staleness
        # Rollouts of step N use v(N - lag), published by the train job of step N - lag - 1.
        producer = trains[step - lag - 1] if step - lag - 1 >= 0 else prep
        rollout = launcher.submit_array(
            stage,
            "rollout",
            recipe.sibling(entry.target, "rollout_task"),
            [{"run_dir": run_dir, "stage": stage, "step": step, "shard": k} for k in range(cfg.grpo.rollout_shards)],
            step=step,
            after=[producer],
        )
        train = launcher.submit(
            stage,
            "train",
            _train_target(cfg, entry.target, "train_task"),
            {"run_dir": run_dir, "stage": stage, "step": step},
            step=step,
            after=[rollout] + ([trains[-1]] if trains else [prep]),
            distributed=distributed,
        )
        trains.append(train)
    return trains[-1]


def _rejection(launcher: Launcher, cfg: Config, entry: recipe.Stage, after: Sequence[Submission]) -> Submission:
    """The rejection round: a generation array, then the merge job that filters it into SFT sets."""
    run_dir = str(cfg.run_dir)
    samples = launcher.submit_array(
        entry.name,
        "rollout",
        entry.target,
        [{"run_dir": run_dir, "shard": k} for k in range(cfg.rejection.shards)],
        after=after,
    )
    return launcher.submit(
        entry.name, "train", recipe.sibling(entry.target, "rejection_merge"), {"run_dir": run_dir}, after=[samples]
    )


def submit_pipeline(cfg: Config, stages: Sequence[str] | None = None) -> dict[str, Submission]:
    """Submit the chosen stages; a dependency on a stage not chosen is taken as already complete.
    A chosen stage (or model eval) whose outputs are all in the run already is not submitted
    (r1hpc.completion): a rerun submits only what is left to do.

    On Slurm (and the debug executor) stages are submitted one after another in DAG order: afterok
    does the waiting and each submission returns at once. The local executor has no scheduler, so a
    submission blocks until its dependencies finished; there each stage is submitted from its own
    thread, so independent branches (the student's RL and distillation beside the teacher's chain,
    evals beside the next stage) run side by side instead of one after another. The first failed job
    raises JobFailed here at once; jobs already started keep running (as on Slurm), nothing more is
    submitted.
    """
    known = recipe.names()
    stages = known if stages is None else stages
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; stages are {', '.join(known)}")
    launcher = Launcher(cfg)
    run_dir = str(cfg.run_dir)
    run = RunDir(run_dir)
    threaded = launcher.executor == "local"
    done: dict[str, Future[Submission]] = {}
    evals: list[Future[Submission]] = []

    # Tasks start in FIFO order and wait only on earlier ones, so the pool always makes progress.
    with ThreadPoolExecutor(max_workers=32 if threaded else 1, thread_name_prefix="r1hpc-submit") as pool:

        def later(
            submit: Callable[[list[Submission]], Submission], after: list[Future[Submission]]
        ) -> Future[Submission]:
            if threaded:
                return pool.submit(lambda: submit([f.result() for f in after]))
            now: Future[Submission] = Future()  # Slurm / debug: submit here, errors raise here (pdb)
            now.set_result(submit([f.result() for f in after]))
            return now

        def dep(*names: str) -> list[Future[Submission]]:
            return [done[n] for n in names if n in done]

        def submit_stage(entry: recipe.Stage, after: list[Future[Submission]]) -> Future[Submission]:
            """The jobs of one stage, by its kind (r1hpc.recipe)."""
            args = {"run_dir": run_dir, **entry.kwargs}
            if entry.kind == "grpo":
                return later(lambda subs: _grpo(launcher, cfg, entry.name, subs), after)
            if entry.kind == "rejection":
                return later(lambda subs: _rejection(launcher, cfg, entry, subs), after)
            if entry.kind == "report":
                return later(
                    lambda subs: launcher.submit(entry.name, "eval", entry.target, args, after=subs),
                    evals + list(done.values()),
                )
            return later(lambda subs: launcher.submit(entry.name, "train", entry.target, args, after=subs), after)

        def evaluate(model_stage: str) -> None:
            # Evaluate what this submission produces, and what earlier submissions already published.
            published = bool(list_versions(run, model_stage)) if model_stage not in stages else True
            if "eval" in stages and published and not eval_complete(cfg, run, model_stage):
                entry = recipe.stage("eval")
                evals.append(
                    later(
                        lambda subs: launcher.submit_array(
                            entry.name,
                            "eval",
                            entry.target,
                            [
                                {"run_dir": run_dir, "model_stage": model_stage, "shard": k}
                                for k in range(cfg.eval.shards)
                            ],
                            after=subs,
                        ),
                        dep(model_stage, *entry.after),
                    )
                )

        # The first failure (or Ctrl-C) stops the submissions still waiting, as a serial driver would.
        # Stages are submitted in table order; each waits on its `after` stages that this run submits
        # (a dependency not chosen is taken as already complete). A model's eval is submitted once
        # its model and eval's own `after` stages (the reward model) have been.
        eval_after, seen, pending = set(recipe.stage("eval").after), set(), []
        try:
            for entry in recipe.STAGES:
                if entry.name in stages and entry.kind != "eval" and not stage_complete(cfg, run, entry):
                    done[entry.name] = submit_stage(entry, dep(*entry.after))
                seen.add(entry.name)
                pending += [entry.name] if entry.evaluated else []
                if eval_after <= seen:
                    for model_stage in pending:
                        evaluate(model_stage)
                    pending.clear()
            finished, _ = wait([*done.values(), *evals], return_when=FIRST_EXCEPTION)
            for future in finished:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
        except BaseException:
            launcher.abort.set()
            raise
    out = {stage: future.result() for stage, future in done.items()}
    if evals:
        # Every model's eval array as one entry, so that `r1hpc run` waits for them as for a stage
        # (without the report, which waits on them, `--stages r1_zero,eval` returned before them).
        arrays = [future.result() for future in evals]
        out["eval"] = Submission("eval", None, arrays[0].name, [j for a in arrays for j in a.jobs], is_array=False)
    return out


def finish_run(run_dir: str) -> dict[str, Any]:
    """The report job: summarise every evaluated model, then write report.md and the plots."""
    from r1hpc.report import build_report
    from r1hpc.stages.eval import eval_summary

    run = RunDir(run_dir)
    summaries = {}
    for stage in recipe.evaluated():
        if run.step_dir(f"eval-{stage}", 0, create=False).is_dir():
            summaries[stage] = eval_summary(run_dir, stage)
    path = build_report(run_dir)
    return {"report": str(path), "pass_at_1": {s: v.get("pass_at_1") for s, v in summaries.items()}}


class RunBusy(RuntimeError):
    """Another `r1hpc run` of the same run is submitting or waiting, or its Slurm jobs still run."""


def live_slurm_jobs(run_dir: str) -> list[str]:
    """The run's Slurm jobs (jobs.jsonl) still in the queue, one line each (squeue lists only jobs
    pending, running or completing; a requeued job is pending again)."""
    from r1hpc.status import queued_states

    jobs = [j for j in read_jsonl(RunDir(run_dir).jobs_path, missing_ok=True) if j.get("executor") == "slurm"]
    states = queued_states([j["job_id"] for j in jobs])
    return [
        f"{j['stage']} step {'-' if j.get('step') is None else j['step']} job {j['job_id']}: "
        f"{', '.join(sorted(set(states[j['job_id']])))}"
        for j in jobs
        if j["job_id"] in states
    ]


@contextlib.contextmanager
def sole_submitter(cfg: Config) -> Iterator[None]:
    """Hold the run's submitter lease while this `r1hpc run` submits and waits.

    A second submitter of the same run would submit every unfinished job again: harmless for the
    outputs (jobs are idempotent, publishing is first-writer-wins) but a waste of the allocation.
    RunBusy names the other submitter, or the run's Slurm jobs still queued or running (after a
    `--no-wait` submission, nobody holds the lease while they run). The lease is kept renewed; a
    submitter that died is recognised at once on its own host, else after the 10-minute ttl."""
    lease = Lease(RunDir(cfg.run_dir).lease_path("run", "submitter"), owner=f"r1hpc run {cfg.name}", ttl_s=600.0)
    try:
        lease.acquire()
    except LeaseHeldError as e:
        raise RunBusy(f"another `r1hpc run` of {cfg.run_dir} is running ({e})") from None
    with lease.kept_renewed():
        if cfg.launch.executor == "slurm":
            live = live_slurm_jobs(str(cfg.run_dir))
            if live:
                raise RunBusy(
                    f"{cfg.run_dir} has {len(live)} Slurm job(s) still queued or running; submitting "
                    "again would run them twice. Wait for them (r1hpc status) or scancel them:\n  " + "\n  ".join(live)
                )
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="r1hpc run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="a YAML config, e.g. configs/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of: " + ", ".join(STAGES))
    parser.add_argument("--no-wait", action="store_true", help="return after submitting (slurm executor)")
    parser.add_argument(
        "--progress",
        choices=["auto", "live", "log", "off"],
        default="auto",
        help="while waiting: a view redrawn in place (live; the default on a terminal), one line per "
        "event (log; the default otherwise), or nothing (off)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_inputs(cfg)  # datasets, checkpoints, custom rewards: before anything is written or submitted
        write_resolved(cfg, argv=["r1hpc", "run", *(argv if argv is not None else sys.argv[1:])])
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        with sole_submitter(cfg):
            return _submit_and_wait(cfg, stages, args.no_wait, args.progress)
    except ConfigError as e:
        print(f"r1hpc run: config error: {e}", file=sys.stderr)
        return 2
    except RunBusy as e:
        print(f"r1hpc run: {e}", file=sys.stderr)
        return 2


def _submit_and_wait(cfg: Config, stages: list[str], no_wait: bool, progress: str = "auto") -> int:
    """Submit, then wait for the run's jobs while showing its progress (r1hpc.live): on a terminal
    one block redrawn in place every ~2 s, in a log one line per event; at the end the held-out
    results and the path of report.md. progress: auto, live, log or off."""
    from r1hpc.live import duration
    from r1hpc.live_display import LiveDisplay

    started = time.time()
    # With --no-wait a Slurm submission returns at once: nothing to watch (r1hpc status does).
    watch = "off" if no_wait and cfg.launch.executor == "slurm" else progress
    display = LiveDisplay(cfg.run_dir, stages=stages, cfg=cfg, mode=watch, interval_s=2.0, since=started)
    try:
        with display:  # the local executor runs the jobs while submitting: watch from the start
            subs = submit_pipeline(cfg, stages)
            complete = [s for s in stages if s not in subs and recipe.stage(s).kind != "eval"]
            display.message(
                f"r1hpc run: {cfg.name}: submitted {', '.join(subs) or 'no stage'} on the {cfg.launch.executor} "
                f"executor" + (f" (complete already: {', '.join(complete)})" if complete else "") + "; "
                f"run directory {cfg.run_dir} (watch with: r1hpc status {cfg.run_dir})"
            )
            if no_wait:
                return 0
            wait_all(list(subs.values()), poll_s=cfg.launch.poll_interval_s)
    except JobFailed as e:  # the local executor also runs dependencies while submitting
        print(
            f"r1hpc run: {cfg.name}: a job failed; fix the cause and run the same command again to "
            f"continue (complete outputs are kept):\n{e}",
            file=sys.stderr,
        )
        return 1
    display.finish()  # the held-out results
    report = f"; report: {cfg.run_dir / 'report.md'}" if "report" in subs else ""
    print(f"r1hpc run: {cfg.name} finished in {duration(time.time() - started)}{report}")
    return 0
