"""The machine a computation runs on: device, numeric precision and measured speed.

Device: ``"auto"`` is CUDA when there is a GPU, else the CPU. Precision: ``"float32"`` or
``"bf16"`` (autocast; weights and optimiser state stay float32, so small learning rates such as
the paper's 2e-5 are not lost to rounding); ``"auto"`` is bf16 on CUDA and float32 on CPU. Whether
bf16 pays off on a CPU depends on its vector extensions (fast with AMX/AVX512-BF16, slower than
float32 without): ``machine_line`` measures this machine's matmul rate at run time, and
``benchmarks/encoder_throughput.py`` / ``benchmarks/label_throughput.py`` compare the two
precisions on it.

``resolved(config)`` replaces every ``"auto"`` device and precision of a stage config by what it
means here, before the config enters a content key: a CPU float32 result and a GPU bf16 result
never share a key, and manifests record the resolved device and precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from pathlib import Path
from typing import Any, TypeVar

import torch

from airrep_core.config.base import DEVICES, PRECISION_FIELDS, PRECISIONS, StageConfig

C = TypeVar("C", bound=StageConfig)

VECTOR_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
"""CPU flags that decide matmul speed, fastest first (read from /proc/cpuinfo)."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` otherwise
    (a CUDA device without a GPU is an error)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
        raise ValueError(f"device={device!r} is invalid; allowed: {DEVICES} or 'cuda:N'")
    if device != "cpu" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} requested but torch sees no CUDA device; use 'cpu' or 'auto'"
        )
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device={device!r} is invalid; allowed: {DEVICES} or 'cuda:N'") from error


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"float32"`` or ``"bf16"``; ``"auto"`` is bf16 on CUDA and float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is invalid; allowed: {PRECISIONS}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "float32"
    return precision


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``precision`` resolves to bf16 (weights stay float32),
    else a no-op."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolved(config: C) -> C:
    """``config`` with every ``"auto"`` device and precision resolved on this machine, parts
    included (a precision follows the config's own ``device`` field when it has one)."""
    changes: dict[str, Any] = {}
    device = resolve_device(getattr(config, "device", "auto"))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, StageConfig):
            changes[field.name] = resolved(value)
        elif field.name == "device" and value == "auto":
            changes[field.name] = device.type
        elif field.name in PRECISION_FIELDS and value == "auto":
            changes[field.name] = resolve_precision(value, device)
    return config.replace(**changes) if changes else config


def matmul_peak(dtype: torch.dtype, size: int = 1024, seconds: float = 2.0) -> float:
    """Sustained ``torch.mm`` FLOP/s of ``(size, size) @ (size, size)`` in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up (kernel selection, page faults)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started)


def vector_extensions() -> list[str]:
    """The ``VECTOR_FLAGS`` this CPU has (empty off Linux or when unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in VECTOR_FLAGS if f in flags]


def machine_line(seconds: float = 2.0) -> str:
    """One line: CPU, threads, vector extensions and the measured fp32 matmul rate."""
    rate = matmul_peak(torch.float32, 1024, seconds)
    extensions = ", ".join(vector_extensions()) or "none of " + "/".join(VECTOR_FLAGS)
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{extensions}; fp32 matmul {rate / 1e9:.0f} GFLOP/s (1024², measured now)"
    )
