"""Attribution methods behind one interface (DESIGN.md §3): the method registry
(``registry.py``: names, configs, needs, group rules, builders), the interface, the text,
representation and gradient baselines, and AirRep as an attributor.

The names below load their module on first use (PEP 562), so reading the registry does not
import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ALL_METHODS": "registry",
    "BASELINE_CONFIGS": "registry",
    "MODEL_METHODS": "registry",
    "TEXT_METHODS": "registry",
    "build_method": "registry",
    "method_spec": "registry",
    "Attributor": "interface",
    "NotFittedError": "interface",
    "Bm25Attributor": "lexical",
    "TfidfAttributor": "lexical",
    "EncoderAttributor": "representation",
    "RdsAttributor": "representation",
    "GradientAttributor": "gradient_attributor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
