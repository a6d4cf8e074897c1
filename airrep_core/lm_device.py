"""Device and numeric precision of target-LM training and evaluation (warm-up, fine-tuning).

CUDA with bf16 autocast where there is a GPU; float32 on CPU by default, bf16 autocast as an
option there (CPUs with AMX run bf16 matmuls several times faster). Weights and optimiser state
stay float32 in every mode, so small learning rates (the paper's 2e-5) are not lost to rounding.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` otherwise
    (a CUDA device without a GPU is an error)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
        raise ValueError(f"device={device!r} is invalid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'")
    if device != "cpu" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} requested but torch sees no CUDA device; use 'cpu' or 'auto'"
        )
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device={device!r} is invalid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'"
        ) from error


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` → ``"bf16"`` (autocast) on CUDA, ``"fp32"`` on CPU; others unchanged."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r} is invalid; allowed: 'auto', 'fp32', 'bf16'")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` for ``precision == "bf16"`` (weights stay float32), else a no-op."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
