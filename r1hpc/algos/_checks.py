"""Input checks shared by the algos modules: every bad tensor becomes a ValueError naming it.

A silent NaN loss costs a whole training step (and, worse, the optimizer state); a ValueError that
names the argument costs one look at the traceback. The checks cost one reduction (and, on a GPU,
one host sync) per tensor, which is small next to the matmuls around them.
"""

from __future__ import annotations

import torch


def check_tensor(name: str, x: object) -> torch.Tensor:
    """Raise unless ``x`` is a torch.Tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise a ValueError naming ``name`` if ``x`` holds inf or NaN (any shape)."""
    check_tensor(name, x)
    if not x.is_floating_point() or x.numel() == 0:
        return
    # amax/amin propagate NaN and expose +-inf without allocating an x-sized bool tensor
    # (isfinite(logits) would be 4 GB at T=32k, V=129k).
    if not bool(torch.isfinite(x.amax()) & torch.isfinite(x.amin())):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"{name} (shape {tuple(x.shape)}) holds {n_nan} NaN and {n_inf} inf value(s); expected only finite values"
        )


def check_float(name: str, x: torch.Tensor, ndim: int | None = None) -> None:
    """Raise unless ``x`` is a floating tensor (of ``ndim`` dims if given) with finite values."""
    check_tensor(name, x)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    check_finite(name, x)


def check_int(name: str, x: torch.Tensor, ndim: int) -> None:
    """Raise unless ``x`` is an integer tensor of ``ndim`` dims."""
    check_tensor(name, x)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise a ValueError listing every shape unless all given tensors have the same shape."""
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; expected all equal")


def as_bool_mask(name: str, mask: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Return ``mask`` as a bool tensor; raise unless it holds only 0/1 (and has ``shape``).

    Accepts bool, integer or floating masks, since trainers build them all three ways.
    """
    check_tensor(name, mask)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must hold only 0/1 values (dtype {mask.dtype})")
    return mask != 0


def check_positive_int(name: str, value: object) -> int:
    """Raise unless ``value`` is an int >= 1; return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value
