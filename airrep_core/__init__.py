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
from typing import Any

__version__ = "0.1.0"

_FACADE = {
    "AirRepEncoder": "airrep_core.encoder",
    "train_encoder": "airrep_core.encoder_training",
    "train_encoder_head": "airrep_core.head_training",
    "AttributionIndex": "airrep_core.attribution",
    "build_method": "airrep_core.baselines.registry",
}

__all__ = sorted(_FACADE)


def __getattr__(name: str) -> Any:
    if name not in _FACADE:
        raise AttributeError(f"module 'airrep_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_FACADE[name]), name)
