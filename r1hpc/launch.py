"""Submit a run's jobs: one job, a job array, or a dependent chain, on three executors.

- `slurm`: submitit's Slurm executor (sbatch). Dependencies are Slurm `afterok` (with
  kill-on-invalid-dep, so a failed task cancels what depends on it); submission returns at once.
- `local`: submitit's local executor: every job is a real subprocess of this machine, through the
  same pickled-call path as on Slurm. It has no scheduler, so a job with dependencies is submitted
  only after they finished successfully (submission blocks).
- `debug`: in-process (submitit's debug executor), for stepping through a job with pdb.

Every job runs a `StageTask`: a requeueable call of `module:function(**kwargs)`. Jobs get USR2
`launch.signal_delay_s` before their time limit; submitit then calls `checkpoint()`, which requeues
the same call. A training loop running at that moment first saves at its next step boundary
(r1hpc.preemption). Stage functions are idempotent and resume from the newest complete output in
the run directory, so the requeued job continues where the killed one stopped.

Job names carry run, stage and step (`r1hpc:<run>:<stage>:<step>`) for `r1hpc gpu-hours` and
`r1hpc status`; every submission is appended to `<run>/jobs.jsonl`.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import shlex
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from r1hpc.config import ENGINE_KINDS, Config, JobResources
from r1hpc.fsio import append_jsonl
from r1hpc.preemption import defer_stop_signal

__all__ = [
    "Launcher",
    "Submission",
    "StageTask",
    "JobFailed",
    "job_name",
    "parse_job_name",
    "executor_parameters",
    "engine_note",
    "render_sbatch",
    "wait_all",
]

JOB_NAME_PREFIX = "r1hpc"


def job_name(run: str, stage: str, step: int | None) -> str:
    """Slurm job name of an r1hpc job: `r1hpc:<run>:<stage>:<step>` (step `-` when none)."""
    return f"{JOB_NAME_PREFIX}:{run}:{stage}:{'-' if step is None else step}"


def parse_job_name(name: str) -> tuple[str, str, int | None] | None:
    """Inverse of job_name(); None for a job that is not r1hpc's."""
    parts = name.split(":")
    if len(parts) != 4 or parts[0] != JOB_NAME_PREFIX:
        return None
    _, run, stage, step = parts
    if step == "-":
        return run, stage, None
    return (run, stage, int(step)) if step.isdigit() else None


class JobFailed(RuntimeError):
    """A job of the run failed; the message names stage, step, job id and its log files."""


class SubmissionAborted(RuntimeError):
    """Launcher.abort was set while a submission waited for its dependencies (local executor)."""


class StageTask(submitit.helpers.Checkpointable):
    """Picklable, requeueable call of `target` ("package.module:function") with keyword args.

    Pickled by reference to the target's name, not by value, so the job runs the code that is on
    the shared filesystem when it starts (a requeued job picks up the same code path).
    """

    def __init__(self, target: str, save_grace_s: float = 30.0, engine_workers: int = 1) -> None:
        if target.count(":") != 1:
            raise ValueError(f"task target must look like 'package.module:function', got {target!r}")
        self.target = target
        self.save_grace_s = save_grace_s  # how long a training loop may take to save on USR2
        # > 1: a generation task whose vLLM engine spans this many processes (config engine.tp*pp):
        # rank 0 runs the target, the others serve its engine (r1hpc.rollout.engine_ranks)
        self.engine_workers = engine_workers

    def resolve(self) -> Any:
        module, _, name = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"task target {self.target!r} cannot be imported: {e}") from e

    def __call__(self, **kwargs: Any) -> Any:
        workers = getattr(self, "engine_workers", 1)  # a task pickled before the field existed: 1
        if workers > 1:
            from r1hpc.rollout import engine_ranks  # torch.distributed: only in engine tasks

            with engine_ranks.joined(workers) as ranks:
                if not ranks.is_leader:
                    return ranks.serve()
                with defer_stop_signal(self.save_grace_s):
                    return self.resolve()(**kwargs)
        with defer_stop_signal(self.save_grace_s):
            return self.resolve()(**kwargs)

    def __repr__(self) -> str:
        return f"StageTask({self.target!r})"


@dataclass
class Submission:
    """What was submitted for one (stage, step): a single job or the tasks of one array."""

    stage: str
    step: int | None
    name: str
    jobs: list[submitit.Job]
    is_array: bool
    # The jobs wait on each other at run time (a long-lived GRPO stage's train job and rollout
    # tasks): when one fails, the others are cancelled instead of waiting out their timeout.
    linked: bool = False
    _succeeded: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def linked_group(cls, first: Submission, *others: Submission) -> Submission:
        """One submission of jobs that run side by side; dependents wait on `first`'s job id."""
        jobs = [job for sub in (first, *others) for job in sub.jobs]
        return cls(first.stage, first.step, first.name, jobs, is_array=False, linked=True)

    @property
    def job_id(self) -> str:
        """The id a dependent job waits on: the array's id for an array, else the job's id."""
        return str(self.jobs[0].job_id).split("_")[0]

    def done(self) -> bool:
        finished = [job.done() for job in self.jobs]
        if self.linked and any(finished) and not all(finished) and self._one_failed(finished):
            for job, f in zip(self.jobs, finished):
                if not f:
                    job.cancel(check=False)
        return all(finished)

    def _one_failed(self, finished: list[bool]) -> bool:
        for job, f in zip(self.jobs, finished):
            if f and str(job.job_id) not in self._succeeded:
                if job.exception() is not None:
                    return True
                self._succeeded.add(str(job.job_id))
        return False

    def results(self) -> list[Any]:
        """Wait for every job; raise JobFailed with the first failure's log tail."""
        out = []
        for job in self.jobs:
            try:  # a multi-rank job returns one value per task: rank 0's speaks for it
                out.append(job.results()[0])
            except Exception as e:  # submitit raises UncompletedJobError / FailedJobError
                raise JobFailed(_failure_message(self, job, e)) from e
        return out


def _failure_message(sub: Submission, job: submitit.Job, error: BaseException) -> str:
    lines = [f"job {job.job_id} ({sub.name}) failed: {type(error).__name__}"]
    for label, path in (("stderr", job.paths.stderr), ("stdout", job.paths.stdout)):
        lines.append(f"  {label}: {path}")
    tail = str(error).strip().splitlines()[-15:]
    lines += ["  " + line for line in tail]
    return "\n".join(lines)


def executor_parameters(
    cfg: Config,
    res: JobResources,
    name: str,
    comment: str,
    dependency: str | None,
    distributed: bool = False,
    engine: bool = True,
) -> dict[str, Any]:
    """submitit AutoExecutor parameters for one job of the run (all executors; slurm_* ignored locally).

    `distributed` jobs (one process per rank, e.g. a Megatron train job) get the kind's nodes and
    tasks per node. A generation job (launch.rollout / launch.eval, ENGINE_KINDS) holds one vLLM
    engine (config `engine`) of engine.tp * pp workers, one process each (`engine_workers`): on
    GPUs all the kind's nodes with a process per GPU, on CPU that many processes on one node; rank
    0 runs the task, the others serve its engine (r1hpc.rollout.engine_ranks). With a vLLM
    generator its layout is a comment in the script's setup. Every other job is one process on one node with
    the kind's CPUs/GPUs. OMP_NUM_THREADS follows cpus_per_task, so a job's math uses the CPUs it
    was given and no more (the local executor runs array tasks side by side). engine=False: a
    single job of a generation kind that holds no engine (the report) stays on one node."""
    partition = res.partition or cfg.launch.partition
    additional: dict[str, Any] = dict(cfg.launch.extra_sbatch)
    if "no-requeue" not in additional:
        # submitit requeues a job that got the time-limit signal with `scontrol requeue`, which
        # fails on clusters that make batch jobs non-requeueable by default (JobRequeue=0).
        additional["requeue"] = True
    if dependency:
        additional["dependency"] = dependency
        additional["kill-on-invalid-dep"] = "yes"
    setup = [f"export OMP_NUM_THREADS={res.cpus_per_task}"]
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": res.time_min,
        "nodes": res.nodes if distributed else 1,
        "tasks_per_node": res.tasks_per_node if distributed else 1,
        "cpus_per_task": res.cpus_per_task,
        "gpus_per_node": res.gpus_per_node,
        "mem_gb": res.mem_gb,
        "slurm_signal_delay_s": cfg.launch.signal_delay_s,
        "slurm_comment": comment,
        "slurm_wckey": "r1hpc",
        "slurm_additional_parameters": additional,
        "slurm_setup": setup,
    }
    # Launcher._make_executor and render_sbatch pass launch.<kind> itself: which kind is this job?
    kind = next((k for k in ENGINE_KINDS if getattr(cfg.launch, k) is res), None)
    if kind is not None and not distributed and engine:
        workers = engine_workers(cfg)
        if workers > 1:
            params["nodes"] = res.nodes
            params["tasks_per_node"] = workers // res.nodes  # config: whole nodes of GPUs, or one CPU node
        if cfg.grpo.generator != "hf":
            setup.append(f"# {engine_note(cfg, kind)}")
    if res.array_parallelism:
        params["slurm_array_parallelism"] = res.array_parallelism
    for key, value in (
        ("slurm_partition", partition),
        ("slurm_account", cfg.launch.account),
        ("slurm_qos", cfg.launch.qos),
        ("slurm_constraint", cfg.launch.constraint),
    ):
        if value:
            params[key] = value
    return params


def engine_workers(cfg: Config) -> int:
    """Processes of one generation task: one per worker of its vLLM engine (engine.tp * pp;
    engine.dp is 1), or 1 with the hf generator."""
    return 1 if cfg.grpo.generator == "hf" else cfg.engine.tp * cfg.engine.pp


def engine_note(cfg: Config, kind: str) -> str:
    """One line: the vLLM engine a generation task of `kind` builds (config `engine` on launch.<kind>)."""
    from r1hpc.rollout.vllm_engine import layout_args  # pure; vllm itself is imported only by the engine

    e, res = cfg.engine, getattr(cfg.launch, kind)
    args = layout_args(e.tp, e.pp, e.ep, e.dtype, cpu=res.gpus_per_node == 0)
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    workers = engine_workers(cfg)
    where = f"{res.nodes} node(s) x {res.gpus_per_node} GPUs" if res.gpus_per_node else "CPU"
    processes = "one process" if workers == 1 else f"{workers} processes, one per worker, rank 0 runs the task"
    note = f"engine (config engine, launch.{kind}): vLLM LLM({shown}) on {where}, {processes}"
    if cfg.grpo.generator == "auto":
        note += "; if grpo.generator 'auto' finds vllm"
    return note


def _let_local_jobs_be_cancelled() -> None:
    """submitit cancels a local job with SIGINT to its controller process, which inherits this
    process's signal dispositions. Started in the background of a non-interactive shell
    (`nohup r1hpc run ... &`, a CI script), SIGINT is ignored, and then no local job can be
    cancelled: a failed stage's linked partners ran out their time instead (observed, 120 s for
    a test's 120 s sleep). Python's own handler again, for the controllers started from here."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Launcher:
    """Submits a run's jobs on the configured executor and records them in jobs.jsonl."""

    def __init__(self, cfg: Config, executor: str | None = None) -> None:
        self.cfg = cfg
        self.executor = executor or cfg.launch.executor
        if self.executor not in ("slurm", "local", "debug"):
            raise ValueError(f"launch.executor must be slurm, local or debug, got {self.executor!r}")
        self.run_dir = cfg.run_dir
        self.logs_dir = self.run_dir / "logs"
        if self.executor == "local":
            _let_local_jobs_be_cancelled()
        # Submissions may come from several threads (the local pipeline's branches); the job's
        # environment (OMP_NUM_THREADS) and jobs.jsonl are shared, so one submission at a time.
        self._lock = threading.Lock()
        self.abort = threading.Event()  # set: submissions still waiting for dependencies give up

    def _make_executor(
        self,
        kind: str,
        name: str,
        comment: str,
        after: Sequence[Submission],
        distributed: bool = False,
        engine: bool = True,
    ) -> submitit.AutoExecutor:
        res: JobResources = getattr(self.cfg.launch, kind)
        dependency = None
        if after and self.executor == "slurm":
            dependency = "afterok:" + ":".join(sub.job_id for sub in after)
        executor = submitit.AutoExecutor(
            folder=self.logs_dir / "%j", cluster=self.executor, slurm_max_num_timeout=self.cfg.launch.max_requeues
        )
        executor.update_parameters(
            **executor_parameters(self.cfg, res, name, comment, dependency, distributed, engine=engine)
        )
        return executor

    @contextlib.contextmanager
    def _local_env(self, kind: str) -> Iterator[None]:
        """The local executor starts jobs with this process's environment: set their thread count.

        Local jobs share this machine's cores (Slurm gives each its own), so their idle OpenMP
        threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless set already): then a
        job given more threads than are free runs as fast as a one-thread job beside the others,
        and takes the cores they free. Measured on 2 cores, the tiny base's training step
        (bench/bench_omp_wait_policy.py): two 2-thread jobs side by side 0.41 s each passive, 3.07 s
        spinning; one 2-thread job alone 0.25 s passive, 0.22 s spinning; one thread 0.39 s."""
        res: JobResources = getattr(self.cfg.launch, kind)
        env = {
            "OMP_NUM_THREADS": str(res.cpus_per_task),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        }
        old = {k: os.environ.get(k) for k in env}
        if self.executor != "slurm":
            os.environ.update(env)
        try:
            yield
        finally:
            if self.executor != "slurm":
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def _task(self, target: str, engine_workers: int = 1) -> StageTask:
        # Half the warning time to save at a step boundary; the requeue needs the other half.
        return StageTask(target, save_grace_s=self.cfg.launch.signal_delay_s / 2, engine_workers=engine_workers)

    def submit(
        self,
        stage: str,
        kind: str,
        target: str,
        kwargs: dict[str, Any],
        step: int | None = None,
        after: Sequence[Submission] = (),
        distributed: bool = False,
    ) -> Submission:
        """Submit one job running `target(**kwargs)` with the resources of `launch.<kind>`
        (all its nodes x tasks_per_node processes when `distributed`)."""
        name = job_name(self.cfg.name, stage, step)
        self._wait_here(after)
        with self._lock:
            # Generation engines live in array tasks; a single job (the report) holds none.
            executor = self._make_executor(kind, name, self._comment(stage, step), after, distributed, engine=False)
            with self._local_env(kind):
                job = executor.submit(self._task(target), **kwargs)
            sub = Submission(stage, step, name, [job], is_array=False)
            self._record(sub, kind, target, after)
        return sub

    def submit_array(
        self,
        stage: str,
        kind: str,
        target: str,
        kwargs_list: Sequence[dict[str, Any]],
        step: int | None = None,
        after: Sequence[Submission] = (),
    ) -> Submission:
        """Submit a job array: task i runs `target(**kwargs_list[i])`."""
        if not kwargs_list:
            raise ValueError(f"{stage} step {step}: a job array needs at least one task")
        name = job_name(self.cfg.name, stage, step)
        self._wait_here(after)
        with self._lock:
            executor = self._make_executor(kind, name, self._comment(stage, step), after)
            task = self._task(target, engine_workers(self.cfg) if kind in ENGINE_KINDS else 1)
            with self._local_env(kind), executor.batch():
                jobs = [executor.submit(task, **kwargs) for kwargs in kwargs_list]
            sub = Submission(stage, step, name, list(jobs), is_array=True)
            self._record(sub, kind, target, after, model_stage=kwargs_list[0].get("model_stage"))
        return sub

    def _wait_here(self, after: Sequence[Submission]) -> None:
        """Without a scheduler (local, debug), run the chain in order: block until `after` succeeded
        (raises JobFailed otherwise). Slurm waits itself (afterok)."""
        if self.executor != "slurm":
            for sub in after:
                while not sub.done():
                    if self.abort.is_set():
                        raise SubmissionAborted(f"not submitted: the pipeline stopped while waiting for {sub.name}")
                    time.sleep(self.cfg.launch.poll_interval_s)
                sub.results()  # raises JobFailed if it failed

    def _comment(self, stage: str, step: int | None) -> str:
        return f"r1hpc run={self.cfg.name} stage={stage} step={'-' if step is None else step}"

    def _record(
        self, sub: Submission, kind: str, target: str, after: Sequence[Submission], model_stage: str | None = None
    ) -> None:
        # model_stage: the model an eval array measures; eval submits one array per model, and the
        # status view tells them apart by it.
        append_jsonl(
            self.run_dir / "jobs.jsonl",
            {
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "stage": sub.stage,
                "step": sub.step,
                "kind": kind,
                "target": target,
                "executor": self.executor,
                "name": sub.name,
                "job_id": sub.job_id,
                "task_ids": [str(job.job_id) for job in sub.jobs],
                "array_size": len(sub.jobs) if sub.is_array else 0,
                "after": [dep.job_id for dep in after],
                **({"model_stage": model_stage} if model_stage else {}),
            },
        )


def wait_all(subs: Sequence[Submission], poll_s: float = 1.0) -> None:
    """Block until every submission is done; raise JobFailed for the first failure."""
    pending = list(subs)
    while pending:
        pending = [sub for sub in pending if not sub.done()]
        if pending:
            time.sleep(poll_s)
    for sub in subs:
        sub.results()


# How executor_parameters' names become sbatch options (submitit's SlurmExecutor does the same
# renaming; slurm_<name> is sbatch's --<name> with _ -> -).
_SBATCH_NAMES = {
    "name": "job_name",
    "timeout_min": "time",
    "nodes": "nodes",
    "tasks_per_node": "ntasks_per_node",
    "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node",
    "mem_gb": "mem",
}
# Parameters that are not #SBATCH lines: they shape the array, the signal and the script's body.
_NOT_SBATCH = {"array_parallelism", "additional_parameters", "setup", "signal_delay_s"}


def _sbatch_flag(key: str, value: Any) -> str:
    key = key.replace("_", "-")
    return f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={shlex.quote(str(value))}"


def render_sbatch(
    cfg: Config,
    kind: str,
    stage: str,
    step: int | None = None,
    array_size: int = 0,
    dependency: str | None = None,
    folder: str | Path | None = None,
    distributed: bool = False,
) -> str:
    """The sbatch script the slurm executor submits for such a job (for --dry-run and the golden test).

    submitit has no public renderer, so this is our own template of the script its SlurmExecutor
    writes (submitit 1.5: parameters sorted, USR2 signal, per-task logs under `folder`, srun of
    submitit's runner); the command is shown as `python` rather than this interpreter's path.
    tests/slurm/test_sbatch_render.py compares it with the script a real submission wrote."""
    folder = Path(folder) if folder is not None else cfg.run_dir / "logs" / "%j"
    res: JobResources = getattr(cfg.launch, kind)
    params = executor_parameters(
        cfg,
        res,
        job_name(cfg.name, stage, step),
        f"r1hpc run={cfg.name} stage={stage} step={'-' if step is None else step}",
        dependency,
        distributed,
    )
    flags: dict[str, Any] = {}
    for key, value in params.items():
        name = _SBATCH_NAMES.get(key) or key.removeprefix("slurm_")
        if name not in _NOT_SBATCH and value is not None:
            flags[name] = value
    flags["mem"] = f"{int(flags['mem'])}GB" if flags["mem"] == int(flags["mem"]) else f"{int(flags['mem'] * 1024)}MB"
    flags["signal"] = f"USR2@{params['slurm_signal_delay_s']}"
    # per task logs, as submitit's JobPaths names them (%t: the srun task); array tasks: %A_%a for %j
    stdout, stderr = f"{folder}/%j_%t_log.out", f"{folder}/%j_%t_log.err"
    if array_size:
        flags["array"] = f"0-{array_size - 1}%{min(array_size, params.get('slurm_array_parallelism', 256))}"
        stdout, stderr = stdout.replace("%j", "%A_%a"), stderr.replace("%j", "%A_%a")
    flags["output"], flags["error"] = stdout.replace("%t", "0"), stderr.replace("%t", "0")
    flags["open-mode"] = "append"
    flags.update(params["slurm_additional_parameters"])
    srun = " ".join(shlex.quote(a) for a in ["srun", "--unbuffered", "--output", stdout, "--error", stderr])
    command = f"{srun} python -u -m submitit.core._submit {shlex.quote(str(folder))}"
    lines = [
        "#!/bin/bash",
        "",
        "# Parameters",
        *(_sbatch_flag(k, flags[k]) for k in sorted(flags)),
        "",
        "# setup",
        *params["slurm_setup"],
        "",
        "# command",
        "export SUBMITIT_EXECUTOR=slurm",
        command,
        "",
    ]
    return "\n".join(lines)
