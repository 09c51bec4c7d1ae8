"""The generation engine of the rollout, rejection and eval jobs as the planner sees it, the memory
check of `r1hpc run` / `r1hpc preflight`, and the shape of every job the planner assumes.

Config `engine` (tp, pp, dp, ep, dtype) is one vLLM engine per array task over the task's nodes x
GPUs (launch.rollout for the rollout and rejection arrays, launch.eval for eval); r1hpc.config
checks that tp*pp*dp is those GPUs. Here, with the planner's decode model (r1hpc.plan.flops):
the weights (bytes per parameter of engine.dtype; fp8 keeps the embedding and head in bf16, as
vLLM does) plus the KV cache of one model.max_seq_len sequence (what vLLM needs to start) must fit
in the engine's GPUs x vLLM's gpu_memory_utilization.
"""

from __future__ import annotations

from dataclasses import dataclass

from r1hpc.config import ENGINE_KINDS, Config
from r1hpc.plan.flops import VLLM_MEMORY_UTILIZATION, Decode, decode_model
from r1hpc.plan.hardware import GpuSpec, gpu_spec
from r1hpc.plan.layout import Layout
from r1hpc.plan.params import ParamCount, count_params

__all__ = [
    "EngineLayout",
    "JobShape",
    "engine_layout",
    "engine_decode",
    "engine_weight_bytes",
    "engine_memory_problems",
    "job_shapes",
]

# engine.dtype (resolved) -> bytes per weight / per activation and KV-cache element
WEIGHT_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0}
ACTIVATION_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 2.0}


@dataclass(frozen=True)
class EngineLayout:
    """One generation task's engine on the resources of launch.<kind>."""

    kind: str  # rollout | eval
    tp: int
    pp: int
    dp: int
    ep: bool
    dtype: str  # resolved: float32 | bfloat16 | float16 | fp8
    nodes: int
    gpus_per_node: int

    @property
    def gpus(self) -> int:
        """GPUs of the engine (0: a CPU engine)."""
        return self.tp * self.pp * self.dp if self.gpus_per_node else 0

    def describe(self) -> str:
        parts = [f"tp {self.tp} x pp {self.pp} x dp {self.dp}"]
        if self.ep:
            parts.append("expert parallel")
        parts.append(self.dtype)
        where = f"{self.nodes} node(s) x {self.gpus_per_node} GPUs" if self.gpus_per_node else "CPU"
        return f"{', '.join(parts)} on {where} (launch.{self.kind})"


@dataclass(frozen=True)
class JobShape:
    """What one job (or each array task) asks Slurm for and runs: the planner's side of the
    comparison with the rendered sbatch script (tests/test_engine_layout.py)."""

    array: int  # array tasks; 0 = a single job
    nodes: int
    processes: int  # processes srun starts in the job (all nodes together)
    gpus_per_node: int


def engine_layout(cfg: Config, kind: str) -> EngineLayout:
    """The engine a generation task of `kind` (rollout or eval) builds."""
    if kind not in ENGINE_KINDS:
        raise ValueError(f"generation kinds are {ENGINE_KINDS}, got {kind!r}")
    e, res = cfg.engine, getattr(cfg.launch, kind)
    dtype = e.dtype if e.dtype != "auto" else ("bfloat16" if res.gpus_per_node else "float32")
    return EngineLayout(kind, e.tp, e.pp, e.dp, e.ep, dtype, res.nodes, res.gpus_per_node)


def engine_weight_bytes(pc: ParamCount, dtype: str) -> float:
    """Bytes of the engine's weights: every parameter at the dtype's size, except that fp8 leaves
    the embedding and the output head in bf16."""
    if dtype == "fp8":
        return pc.total * WEIGHT_BYTES["fp8"] + (pc.embedding + pc.head) * (2.0 - WEIGHT_BYTES["fp8"])
    return pc.total * WEIGHT_BYTES[dtype]


def engine_decode(cfg: Config, lay: EngineLayout, gpu: GpuSpec, mean_context: float, max_batch: int) -> Decode:
    """The planner's decode model (r1hpc.plan.flops) for this engine of cfg.model on `gpu`s."""
    pc = count_params(cfg.model)
    return decode_model(
        cfg.model,
        gpu,
        max(lay.gpus, 1),
        mean_context,
        max_batch,
        weight_bytes=engine_weight_bytes(pc, lay.dtype),
        kv_bytes_per_elem=ACTIVATION_BYTES[lay.dtype],
        pp=lay.pp,
    )


def engine_memory_problems(cfg: Config) -> list[tuple[str, str]]:
    """(key, what is wrong) when the engine's weights and one model.max_seq_len sequence of KV
    cache do not fit its GPUs. Not checked: hf generators (no engine), CPU engines, and an
    unknown or empty launch.gpu_type (no memory size to check against)."""
    if cfg.grpo.generator == "hf":
        return []
    try:
        gpu = gpu_spec(cfg.launch.gpu_type)
    except ValueError:
        return []
    out: list[tuple[str, str]] = []
    seen: set[tuple[int, str]] = set()
    for kind in ENGINE_KINDS:
        lay = engine_layout(cfg, kind)
        if not lay.gpus or (lay.gpus, lay.dtype) in seen:
            continue  # rollout and eval engines are the same size (r1hpc.config): one problem for both
        seen.add((lay.gpus, lay.dtype))
        seq = cfg.model.max_seq_len
        decode = engine_decode(cfg, lay, gpu, seq, 1)
        if decode.fits:
            continue
        pc = count_params(cfg.model)
        weights = engine_weight_bytes(pc, lay.dtype)
        kv = decode.kv_bytes_per_token * seq
        usable = lay.gpus * gpu.memory_bytes * VLLM_MEMORY_UTILIZATION
        kinds = " and ".join(f"launch.{k}" for k in ENGINE_KINDS if engine_layout(cfg, k).gpus == lay.gpus)
        out.append(
            (
                "engine",
                f"{pc.total / 1e9:.0f}B parameters in {lay.dtype} ({weights / 1e9:.0f} GB) + the KV cache of one "
                f"model.max_seq_len={seq} sequence ({kv / 1e9:.1f} GB) do not fit one engine of engine.tp*pp*dp = "
                f"{lay.gpus} {gpu.name} GPUs x {VLLM_MEMORY_UTILIZATION:.0%} = {usable / 1e9:.0f} GB "
                f"({kinds}: {lay.nodes} node(s) x {lay.gpus_per_node}): give each task more nodes "
                "(launch.<kind>.nodes with engine.pp) or a smaller engine.dtype",
            )
        )
    return out


def job_shapes(cfg: Config, layout: Layout | None = None) -> dict[str, JobShape]:
    """The jobs the planner's figures assume: the GRPO train job (with a training `layout`: one
    rank per GPU for Megatron and DeepSpeed, one process for plain torch), the rollout, rejection
    and eval arrays (per task one process per worker of its vLLM engine, on its engine's nodes;
    one process with hf)."""
    out: dict[str, JobShape] = {}
    if layout is not None:
        ranks = layout.world if cfg.parallel.backend != "torch" else 1
        out["train"] = JobShape(0, layout.nodes, ranks, layout.gpus_per_node)
    for name, kind, tasks in (
        ("rollout", "rollout", cfg.grpo.rollout_shards),
        ("rejection", "rollout", cfg.rejection.shards),
        ("eval", "eval", cfg.eval.shards),
    ):
        lay = engine_layout(cfg, kind)
        vllm = cfg.grpo.generator != "hf"  # hf: one device of one node
        nodes = -(-lay.gpus // lay.gpus_per_node) if vllm and lay.gpus else 1
        out[name] = JobShape(tasks, nodes, lay.tp * lay.pp if vllm else 1, lay.gpus_per_node)
    return out
