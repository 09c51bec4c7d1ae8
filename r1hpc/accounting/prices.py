"""$/GPU-hour prices: per GPU type, per partition, and a default.

File format (YAML)::

    default: 2.0             # any job not matched below
    partitions: {long: 1.5}  # by Slurm partition
    gpu_types: {h100: 2.5}   # by typed gres (gres/gpu:h100=N); wins over the partition

The most specific price wins: GPU type, then partition, then default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

_KEYS = ("default", "partitions", "gpu_types")


class PriceError(ValueError):
    """A price file or price lookup that cannot be resolved."""


@dataclass(frozen=True)
class Prices:
    default: float | None = None
    partitions: dict[str, float] = field(default_factory=dict)
    gpu_types: dict[str, float] = field(default_factory=dict)
    source: str = "--price-per-gpu-hour"

    def per_gpu_hour(self, partition: str, gpu_type: str | None) -> float:
        """Price of one GPU-hour of ``gpu_type`` (None = untyped) in ``partition``."""
        if gpu_type is not None and gpu_type in self.gpu_types:
            return self.gpu_types[gpu_type]
        # sacct lists a job submitted to several partitions as "a,b"; it ran in the first.
        part = partition.split(",")[0]
        if part in self.partitions:
            return self.partitions[part]
        if self.default is not None:
            return self.default
        raise PriceError(
            f"{self.source}: no price for partition {part!r}"
            f"{'' if gpu_type is None else f' / GPU type {gpu_type!r}'}; "
            "add it or a 'default'"
        )


def _price(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PriceError(f"{where} = {value!r}: expected a number >= 0 ($ per GPU-hour)")
    return float(value)


def _table(value: object, where: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PriceError(f"{where}: expected a mapping name -> $ per GPU-hour, got {value!r}")
    return {str(k): _price(v, f"{where}.{k}") for k, v in value.items()}


def flat_prices(per_gpu_hour: float) -> Prices:
    """One price for every GPU (--price-per-gpu-hour)."""
    return Prices(default=_price(per_gpu_hour, "--price-per-gpu-hour"))


def load_prices(path: Path, default_override: float | None = None) -> Prices:
    """Read a price file; ``default_override`` (from --price-per-gpu-hour) replaces its default."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PriceError(f"{path}: cannot read price file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PriceError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PriceError(f"{path}: expected a mapping with keys {', '.join(_KEYS)}")
    unknown = [str(k) for k in data if k not in _KEYS]
    if unknown:
        raise PriceError(f"{path}: unknown key {unknown[0]!r}; expected only {', '.join(_KEYS)}")
    default = None if data.get("default") is None else _price(data["default"], f"{path}: default")
    if default_override is not None:
        default = _price(default_override, "--price-per-gpu-hour")
    return Prices(
        default=default,
        partitions=_table(data.get("partitions"), f"{path}: partitions"),
        gpu_types=_table(data.get("gpu_types"), f"{path}: gpu_types"),
        source=str(path),
    )
