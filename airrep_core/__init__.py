"""AirRep core: the method, LM fine-tuning and loss evaluation, training, scoring, evaluation.

Plain PyTorch / transformers / numpy. Imports no ``prefect``, no ``fsspec``, no ``storage``
(DESIGN.md §4), so everything here is usable from a notebook. The facade below names the few
entry points most users need (loaded on first use, so ``import airrep_core`` stays light):

- ``AirRepEncoder``: the encoder (``from_backbone``, ``from_pretrained``, ``encode_examples``);
- ``train_encoder``: train it on labels (the paper's recipe; ``train_encoder_head`` is the
  label-efficient one);
- ``AttributionIndex``: attribute, group influence and data selection over stored embeddings;
- ``build_method``: any attribution method of the registry (AirRep and the baselines).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, modules: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports a name's module (``modules``: module path
    -> the names it exports) on first use: packages name their API without importing torch
    when they are imported."""
    where = {name: module for module, names in modules.items() for name in names}

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return getattr_


_FACADE = {
    "airrep_core.encoder.model": ("AirRepEncoder",),
    "airrep_core.encoder.training": ("train_encoder",),
    "airrep_core.encoder.head_training": ("train_encoder_head",),
    "airrep_core.attribution.index": ("AttributionIndex",),
    "airrep_core.methods.registry": ("build_method",),
}

__all__ = sorted(name for names in _FACADE.values() for name in names)
__getattr__ = lazy_exports(__name__, _FACADE)
