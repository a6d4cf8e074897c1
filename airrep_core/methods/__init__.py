"""Attribution methods behind one interface (DESIGN.md §3): the method registry
(``registry.py``: names, configs, needs, group rules, builders), the interface, the text,
representation and gradient baselines, and AirRep as an attributor.

The names below load their module on first use (PEP 562), so reading the registry does not
import torch or transformers.
"""

from __future__ import annotations

from airrep_core import lazy_exports

_EXPORTS = {
    "airrep_core.methods.registry": (
        "ALL_METHODS",
        "BASELINE_CONFIGS",
        "MODEL_METHODS",
        "TEXT_METHODS",
        "build_method",
        "method_spec",
    ),
    "airrep_core.methods.interface": ("Attributor", "NotFittedError"),
    "airrep_core.methods.lexical": ("Bm25Attributor", "TfidfAttributor"),
    "airrep_core.methods.representation": ("EncoderAttributor", "RdsAttributor"),
    "airrep_core.methods.gradients": ("GradientAttributor",),
}

__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
