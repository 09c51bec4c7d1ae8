"""The generation engine's layout (config `engine`): what the sbatch asks for, what the planner
assumes, what the engine is built with, and the layouts refused before anything is submitted."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import submitit

from r1hpc import cli
from r1hpc.config import ConfigError, load_config
from r1hpc.inputs import check_inputs
from r1hpc.launch import engine_workers, executor_parameters, render_sbatch
from r1hpc.plan import make_plan
from r1hpc.plan.engine import JobShape, engine_layout, engine_memory_problems, engine_weight_bytes, job_shapes
from r1hpc.plan.params import count_params
from r1hpc.rollout.vllm_engine import layout_args

ROOT = Path(__file__).resolve().parent.parent
V3 = str(ROOT / "configs" / "deepseek_v3_671b.yaml")
TINY = str(ROOT / "configs" / "tiny.yaml")
QWEN = str(ROOT / "configs" / "qwen_math_1p5b.yaml")
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def shape_of(script: str) -> JobShape:
    """The job shape a rendered sbatch script asks for: its #SBATCH lines (srun starts
    nodes x ntasks-per-node processes: it is given no options that would change that)."""
    flags = dict(re.findall(r"^#SBATCH --([a-z-]+)=?(\S*)$", script, re.M))
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert not re.search(r"--(nodes|ntasks)", srun), srun
    nodes = int(flags["nodes"])
    processes = nodes * int(flags["ntasks-per-node"])
    array = int(flags["array"].split("-")[1].split("%")[0]) + 1 if "array" in flags else 0
    return JobShape(array, nodes, processes, int(flags.get("gpus-per-node", 0)))


def rendered(cfg, job: str) -> str:
    """The script of one of the planner's jobs, as r1hpc.pipeline submits it on Slurm."""
    if job == "train":  # the GRPO train job: one task per rank for Megatron (pipeline._grpo)
        return render_sbatch(cfg, "train", "r1_zero", distributed=cfg.parallel.backend == "megatron")
    kind, stage, tasks = {
        "rollout": ("rollout", "r1_zero", cfg.grpo.rollout_shards),
        "rejection": ("rollout", "rejection", cfg.rejection.shards),
        "eval": ("eval", "eval", cfg.eval.shards),
    }[job]
    return render_sbatch(cfg, kind, stage, array_size=tasks)


def test_v3_rollout_sbatch_is_the_planners_engine(capsys):
    cfg = load_config(V3)
    plan = make_plan(cfg)
    # one process per GPU: the engine's 32 workers, rank 0 of them runs the task
    assert plan.jobs["rollout"] == JobShape(array=16, nodes=4, processes=32, gpus_per_node=8)
    assert plan.step.rollout_gpus == 16 * 32 and plan.step.decode.gpus == 32
    assert cli.main(["sbatch", V3, "--kind", "rollout", "--array", "16"]) == 0
    script = capsys.readouterr().out
    assert shape_of(script) == plan.jobs["rollout"]
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8"):
        assert line in script.splitlines(), line
    note = next(line for line in script.splitlines() if line.startswith("# engine"))
    for arg in (
        "tensor_parallel_size=8",
        "pipeline_parallel_size=4",
        "enable_expert_parallel=True",
        "dtype='bfloat16'",
        "distributed_executor_backend='external_launcher'",
        "32 processes",
    ):
        assert arg in note, arg


def _shape_cases():
    for name in CONFIGS:
        # CPU configs (no launch.gpu_type) have no training layout to plan; their generation jobs do.
        planned = bool(load_config(str(ROOT / "configs" / name)).launch.gpu_type)
        for job in ("train", "rollout", "rejection", "eval") if planned else ("rollout", "rejection", "eval"):
            marks = []
            if (name, job) == ("students.yaml", "train"):
                marks = [
                    pytest.mark.xfail(
                        strict=True,
                        reason="parallel.backend deepspeed: the planner assumes 2 x 8 ranks, but the stage jobs "
                        "run DeepSpeed SFT as one process on one node that starts torchrun (r1hpc.inputs "
                        "refuses 2 nodes)",
                    )
                ]
            yield pytest.param(name, job, marks=marks, id=f"{name}-{job}")


@pytest.mark.parametrize("name, job", list(_shape_cases()))
def test_planner_job_shapes_equal_the_rendered_sbatch(name, job):
    cfg = load_config(str(ROOT / "configs" / name))
    if cfg.launch.gpu_type:
        shapes = make_plan(cfg).jobs
    else:  # CPU configs: the planner has no GPU to plan on, but the generation jobs have a shape
        shapes = job_shapes(cfg)
    assert shape_of(rendered(cfg, job)) == shapes[job]


def test_a_multi_node_engine_job_is_what_submitit_writes(tmp_path, monkeypatch):
    """render_sbatch against submitit's own SlurmExecutor text for the parameters we give it (no
    cluster needed: only submitit's srun probe is patched); submitit starts all 32 processes."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    cfg = load_config(V3, [f"runs_dir={tmp_path}"])
    folder = tmp_path / "logs" / "%j"
    params = executor_parameters(cfg, cfg.launch.rollout, "r1hpc:x:r1_zero:-", "c", None)
    auto = submitit.AutoExecutor(folder=folder, cluster="slurm")
    auto.update_parameters(**params)
    ex = auto._executor
    ex.parameters["map_count"] = 16  # what submitit sets for an array of 16
    assert ex._num_tasks() == 32
    written = ex._make_submission_file_text(ex._submitit_command_str, "uid")
    written = written.replace(f"{shlex.quote(sys.executable)} -u -m", "python -u -m")
    expected = render_sbatch(cfg, "rollout", "r1_zero", array_size=16, folder=folder)
    expected = expected.replace("#SBATCH --comment='r1hpc run=r1-v3-671b stage=r1_zero step=-'", "#SBATCH --comment=c")
    expected = expected.replace("r1hpc:r1-v3-671b:r1_zero:-", "r1hpc:x:r1_zero:-")
    assert written == expected


def test_only_generation_jobs_span_their_nodes():
    cfg = load_config(V3)
    # a non-distributed train job (a stage's prep, the rejection merge) stays one process on one node
    train = executor_parameters(cfg, cfg.launch.train, "n", "c", None)
    assert train["nodes"] == 1 and "nodes" not in train["slurm_additional_parameters"]
    assert "slurm_srun_args" not in train and not any(line.startswith("# engine") for line in train["slurm_setup"])
    dist = executor_parameters(cfg, cfg.launch.train, "n", "c", None, distributed=True)
    assert (dist["nodes"], dist["tasks_per_node"]) == (64, 8)
    ev = executor_parameters(cfg, cfg.launch.eval, "n", "c", None)
    assert (ev["nodes"], ev["tasks_per_node"]) == (4, 8) and "slurm_srun_args" not in ev
    report = executor_parameters(cfg, cfg.launch.eval, "n", "c", None, engine=False)  # a job holding no engine
    assert (report["nodes"], report["tasks_per_node"]) == (1, 1)


def test_a_cpu_engine_of_two_workers_is_two_processes_of_one_task(tmp_path):
    cfg = load_config(TINY, ["grpo.generator=vllm", "engine.tp=2", f"runs_dir={tmp_path}"])
    params = executor_parameters(cfg, cfg.launch.rollout, "n", "c", None)
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (1, 2, 0)
    assert any("2 processes" in line for line in params["slurm_setup"])
    assert shape_of(render_sbatch(cfg, "rollout", "r1_zero", array_size=2)) == job_shapes(cfg)["rollout"]
    from r1hpc.launch import Launcher

    assert Launcher(cfg, "local")._task("m:f", engine_workers(cfg)).engine_workers == 2


BAD_LAYOUTS = {
    "tp across nodes": (V3, ["engine.tp=16"], "engine.tp", r"16 does not divide launch\.rollout\.gpus_per_node=8"),
    "fewer nodes than the engine": (V3, ["launch.rollout.nodes=1"], "launch.rollout.nodes", r"engine\.tp\*pp\*dp"),
    "engine smaller than the tasks": (V3, ["engine.pp=2"], "launch.rollout.nodes", r"launch\.eval: 4 node"),
    "tp not dividing the heads": (
        QWEN,
        ["engine.tp=8", "launch.rollout.gpus_per_node=8", "launch.eval.gpus_per_node=8"],
        "engine.tp",
        "does not divide model.num_heads=12",
    ),
    "data parallel in one process": (V3, ["engine.dp=2", "engine.pp=2"], "engine.dp", "data_parallel_size"),
    "expert parallel on a dense model": (QWEN, ["engine.ep=true"], "engine.ep", "mixture of experts"),
    "several processes per task": (
        V3,
        ["launch.eval.tasks_per_node=8"],
        "launch.eval.tasks_per_node",
        r"follow from the engine \(one per worker",
    ),
    "layout for the hf backend": (TINY, ["engine.tp=2"], "engine.tp", "grpo.generator 'vllm'"),
    "hf on several nodes": (TINY, ["launch.rollout.nodes=2"], "launch.rollout.nodes", "runs on one node"),
    "pp on a CPU engine": (TINY, ["grpo.generator=vllm", "engine.pp=2"], "engine.pp", "pipeline parallelism fails"),
    "a CPU engine on several nodes": (
        TINY,
        ["grpo.generator=vllm", "engine.tp=2", "launch.rollout.nodes=2"],
        "launch.rollout.nodes",
        "run on one node",
    ),
    "fp8 on CPU": (TINY, ["grpo.generator=vllm", "engine.dtype=fp8"], "engine.dtype", "fp8 needs GPUs"),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_bad_layout_is_a_one_line_config_error_naming_the_key(case, capsys):
    path, overrides, key, pattern = BAD_LAYOUTS[case]
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    assert f": {key}: " in message and re.search(pattern, message), message
    # the same refusal from `r1hpc sbatch` (and every command that loads the config)
    assert cli.main(["sbatch", path, *overrides, "--kind", "rollout"]) == 2
    assert key in capsys.readouterr().err


V3_ON_ONE_NODE = ["launch.rollout.nodes=1", "launch.eval.nodes=1", "engine.pp=1"]


def test_a_model_that_does_not_fit_the_engine_is_refused_at_run_and_preflight(tmp_path, capsys):
    cfg = load_config(V3, V3_ON_ONE_NODE)  # a valid layout: tp 8 on one node of 8 GPUs
    assert [key for key, _ in engine_memory_problems(cfg)] == ["engine"]
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    message = str(info.value)
    assert message.startswith("4 input errors:") and "\n  engine: 671B parameters in bfloat16 (1342 GB)" in message
    # and the stages that would train 671B parameters as one torch process or on one node
    # (r1hpc.plan.one_process): the reward model, and the cold start and SFT under Megatron
    assert "\n  parallel.backend: reward_model trains as one torch process" in message, message
    assert "\n  launch.train.tasks_per_node: cold_start, sft train in the 8 ranks of one node" in message, message
    # whose 8 ranks cannot hold the training layout's TP x PP groups either
    assert "must be a multiple of parallel.tp x parallel.pp" in message, message
    assert not make_plan(cfg).fits
    overrides = [*V3_ON_ONE_NODE, f"runs_dir={tmp_path}"]
    assert cli.main(["preflight", V3, *overrides]) == 2
    assert "engine: 671B parameters in bfloat16" in capsys.readouterr().err
    assert cli.main(["run", V3, *overrides]) == 2
    assert "engine: 671B parameters in bfloat16" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, nothing submitted
    # fp8 weights on two nodes fit (DeepSeek-V3's released checkpoint is fp8)
    fp8 = ["engine.dtype=fp8", "engine.pp=2", "launch.rollout.nodes=2", "launch.eval.nodes=2"]
    assert not engine_memory_problems(load_config(V3, fp8))
    assert make_plan(load_config(V3, fp8)).fits


def test_engine_weight_bytes_by_dtype():
    pc = count_params(load_config(V3).model)
    assert engine_weight_bytes(pc, "bfloat16") == 2 * pc.total
    assert engine_weight_bytes(pc, "fp8") == pc.total + pc.embedding + pc.head  # embedding and head stay bf16
    assert engine_layout(load_config(TINY), "rollout").dtype == "float32"  # auto on CPU
    assert engine_layout(load_config(QWEN, ["engine.dtype=auto"]), "eval").dtype == "bfloat16"  # auto on GPUs


def test_layout_args_are_only_what_differs_from_one_device():
    assert layout_args(cpu=True) == {"dtype": "float32"}  # the CPU engine of the tests, exactly as before
    assert layout_args() == {"dtype": "bfloat16"}
    assert layout_args(8, 4, True, "fp8") == {
        "dtype": "bfloat16",
        "quantization": "fp8",
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 4,
        "enable_expert_parallel": True,
        "distributed_executor_backend": "external_launcher",
    }
    with pytest.raises(ValueError, match="dtype"):
        layout_args(dtype="int4")


def test_stage_generator_passes_the_layout_to_vllm_only_for_the_policy(tmp_path, monkeypatch):
    from r1hpc.stages import common

    seen = {}
    monkeypatch.setattr(common, "make_generator", lambda backend, model_dir, **kw: seen.update(kw, backend=backend))
    common.stage_generator(load_config(TINY, ["grpo.generator=vllm"]), tmp_path)
    assert seen["engine"] == {}  # the CPU engine gets nothing it did not get before
    v3 = load_config(V3)
    policy, student = tmp_path / "policy", tmp_path / "student"
    for path, (layers, hidden) in ((policy, (61, 7168)), (student, (28, 3584))):
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"num_hidden_layers": layers, "hidden_size": hidden}))
    common.stage_generator(v3, policy)
    assert seen["backend"] == "vllm" and seen["engine"] == {"dtype": "bfloat16", "tp": 8, "pp": 4, "ep": True}
    common.stage_generator(v3, student)  # a distillation student on the eval resources: one device
    assert seen["engine"] == {"dtype": "bfloat16"}
