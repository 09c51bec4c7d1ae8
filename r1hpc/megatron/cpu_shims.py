"""Every patch megatron-core 0.16.1 needs to run on CPU (gloo, no CUDA, no Transformer Engine).

All of them live here and nowhere else. ``apply_cpu_shims()`` is a no-op when a GPU is present, so
at scale megatron runs unmodified. Each shim was found necessary by removing it (see
/work/shared/notes/ml-stack-on-cpu.md); the comment on each says what breaks without it.

``MLACoreAttention`` is the one piece that is not a patch: megatron's local ``DotProductAttention``
has no k/v head-dim arguments, which multi-latent attention passes. ``model.py`` uses it whenever
Transformer Engine is absent (on GPU too).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from torch.overrides import TorchFunctionMode

_APPLIED = False


class _NoOpStream:
    """Stand-in for torch.cuda.Stream / Event: CPU work is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, other: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> _NoOpStream:
        return self

    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NoOpStream)

    def __hash__(self) -> int:
        return 0


class _CudaDeviceToCpu(TorchFunctionMode):
    """Rewrites a hard-coded ``device="cuda"`` (torch factory calls, ``.cuda()``, ``.to("cuda")``) to CPU,
    and reports CPU tensors' ``.type()`` under its CUDA name."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # DistributedOptimizer / clip_grads accept only 'torch.cuda.FloatTensor'-typed params.
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        dev = kwargs.get("device")
        if dev is not None and _is_cuda(dev):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _is_cuda(dev: Any) -> bool:
    return (isinstance(dev, str) and dev.startswith("cuda")) or (isinstance(dev, torch.device) and dev.type == "cuda")


class MLACoreAttention(DotProductAttention):
    """Megatron's local core attention, accepting MLA's separate key and value head dims.

    Query/key heads are ``k_channels`` wide (nope + rope dims), value heads ``v_channels``; the
    output is (s, b, heads_per_partition * v_channels).
    """

    def __init__(self, *args: Any, k_channels: int | None = None, v_channels: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if v_channels is not None:
            # Without this the context is reshaped to kv_channels * heads and MLA's output is garbage/errors.
            self.hidden_size_per_partition = v_channels * self.num_attention_heads_per_partition
        if k_channels is not None and kwargs.get("softmax_scale") is None:
            self.softmax_scale = k_channels**-0.5


def _cpu_rng_add(self: Any, name: str, seed: int) -> None:
    """CudaRNGStatesTracker.add on the CPU generator."""
    self._is_initialized = True
    if seed in self.seeds_:
        raise Exception(f"seed {seed} already exists")
    self.seeds_.add(seed)
    if name in self.states_:
        raise Exception(f"rng state {name} already exists")
    orig = torch.get_rng_state()
    torch.manual_seed(seed)
    self.states_[name] = torch.get_rng_state()
    torch.set_rng_state(orig)


def _splits_to_numpy(tensor: Any, as_numpy: bool = False, record_stream: bool = False) -> Any:
    """moe_utils.maybe_move_tensor_to_cpu, which only converts CUDA tensors to numpy."""
    if as_numpy and torch.is_tensor(tensor):
        return tensor.numpy()
    return tensor


def _patch_torch_norm() -> None:
    """WrappedTorchNorm refuses sequence parallel (only apex/TE norms are allowed there)."""
    from megatron.core.transformer import torch_norm

    original_new = torch_norm.WrappedTorchNorm.__new__

    def __new__(cls, config, hidden_size, eps=1e-5, *args, **kwargs):  # noqa: ANN001, ANN202
        sp = config.sequence_parallel
        config.sequence_parallel = False  # only to get past its assert
        try:
            norm = original_new(cls, config, hidden_size, eps, *args, **kwargs)
        finally:
            config.sequence_parallel = sp
        # Under SP the norm sees a sequence shard: tagged params get their grads all-reduced over TP
        # by finalize_model_grads; without the tag TP ranks' norm weights drift apart.
        for p in norm.parameters():
            p.sequence_parallel = sp
        return norm

    torch_norm.WrappedTorchNorm.__new__ = __new__


def apply_cpu_shims() -> bool:
    """Patch megatron-core / torch.cuda for CPU; idempotent. Returns True if the shims are active."""
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if _APPLIED:
        return True
    from megatron.core.tensor_parallel import random as mp_random
    from megatron.core.transformer import multi_latent_attention
    from megatron.core.transformer.moe import moe_utils, token_dispatcher

    # Factory calls use device=torch.cuda.current_device(); on a CPU build that raises "no CUDA".
    torch.cuda.current_device = lambda: "cpu"
    # Optimizer / timers call torch.cuda.synchronize(); raises without CUDA.
    torch.cuda.synchronize = lambda *a, **k: None
    # model_parallel_cuda_manual_seed and the TP dropout fork use the CUDA RNG; map them to the CPU one.
    mp_random.CudaRNGStatesTracker.add = _cpu_rng_add
    mp_random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    torch.cuda.manual_seed = lambda seed: None  # the CPU generator is seeded by torch.manual_seed
    # Pipeline schedules, optimizer and grad buffers create tensors with device="cuda" literally.
    _CudaDeviceToCpu().__enter__()
    # The router's fused gemm is imported from TE when present; a placeholder makes it look present.
    moe_utils.te_general_gemm = None
    # Sequence parallel with the plain torch norm (no apex/TE on CPU): see _patch_torch_norm.
    _patch_torch_norm()
    # The alltoall dispatcher and shared-expert overlap create CUDA streams/events.
    torch.cuda.Stream = _NoOpStream  # type: ignore[misc,assignment]
    torch.cuda.Event = _NoOpStream  # type: ignore[misc,assignment]
    torch.cuda.current_stream = lambda *a, **k: _NoOpStream()
    torch.cuda.stream = lambda s=None: contextlib.nullcontext()
    # The alltoall dispatcher leaves CPU split sizes as tensors; gloo's all_to_all_single wants ints.
    token_dispatcher.maybe_move_tensor_to_cpu = _splits_to_numpy
    # MLA checks HAVE_TE before isinstance(linear_proj, TELinear) with a placeholder TELinear class.
    multi_latent_attention.HAVE_TE = False
    _APPLIED = True
    return True
