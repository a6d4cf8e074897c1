"""What this machine computes: the sustained matmul rate and the CPU's vector extensions, printed
beside every timing so that figures from different machines compare as ratios."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

VECTOR_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
"""CPU flags that decide matmul speed, fastest first (read from /proc/cpuinfo)."""


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
