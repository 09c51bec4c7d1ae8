"""Published datacenter-GPU figures the planner's memory and time models use.

Peak TFLOPS are dense bf16 tensor-core (no 2:4 sparsity), from NVIDIA's data sheets (SXM parts).
Memory is what `nvidia-smi` reports as total (MiB), because that, not the marketing "80 GB", is
what the allocator can use. Interconnect figures are per GPU: NVLink is the total bidirectional
bandwidth; the network is the node's InfiniBand bandwidth divided by its GPUs (one NIC per GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GpuSpec", "GPUS", "gpu_spec", "GIB"]

GIB = 1024**3


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float  # dense peak
    memory_mib: int  # total as reported by nvidia-smi
    hbm_tb_s: float  # HBM bandwidth, TB/s (1e12 bytes/s)
    nvlink_gb_s: float  # per GPU, bidirectional, GB/s
    net_gb_s: float  # inter-node per GPU, GB/s

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024**2


# H800 is the export variant of H100 SXM: same compute and HBM, NVLink cut to 400 GB/s
# (DeepSeek-V3 report, section 3.2.2, uses these H800s with 400 Gb/s IB per GPU).
GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec(
        "H100 SXM 80GB", bf16_tflops=989.0, memory_mib=81559, hbm_tb_s=3.35, nvlink_gb_s=900.0, net_gb_s=50.0
    ),
    "h800": GpuSpec(
        "H800 SXM 80GB", bf16_tflops=989.0, memory_mib=81559, hbm_tb_s=3.35, nvlink_gb_s=400.0, net_gb_s=50.0
    ),
    "h200": GpuSpec(
        "H200 SXM 141GB", bf16_tflops=989.0, memory_mib=143771, hbm_tb_s=4.8, nvlink_gb_s=900.0, net_gb_s=50.0
    ),
    "a100": GpuSpec(
        "A100 SXM 80GB", bf16_tflops=312.0, memory_mib=81920, hbm_tb_s=2.039, nvlink_gb_s=600.0, net_gb_s=25.0
    ),
}


def gpu_spec(gpu_type: str, key: str = "launch.gpu_type") -> GpuSpec:
    """The spec of `gpu_type` (case-insensitive); ValueError naming `key` and the known types."""
    spec = GPUS.get(gpu_type.strip().lower())
    if spec is None:
        known = ", ".join(sorted(GPUS))
        shown = repr(gpu_type) if gpu_type else "empty"
        raise ValueError(f"{key}: {shown} is not a GPU type the planner knows; expected one of {known}")
    return spec
