"""Attribution baselines behind one interface (DESIGN.md §3, "Baselines").

| name       | class                 | features / score                                            |
|------------|-----------------------|-------------------------------------------------------------|
| tfidf      | TfidfAttributor       | TF-IDF cosine of ``encoder_text`` (scikit-learn)            |
| bm25       | Bm25Attributor        | BM25 of the query's ``encoder_text`` (bm25s)                |
| encoder    | EncoderAttributor     | off-the-shelf MiniLM mean-pooled embeddings, cosine         |
| rds        | RdsAttributor         | target LM mean last-layer hidden state, cosine              |
| grad_dot   | GradDotAttributor     | projected response-loss gradients, dot product (TracIn)     |
| logra      | LograAttributor       | projected gradients, per-layer damped K-FAC preconditioning |
| trak       | TrakAttributor        | projected gradients, (ΦᵀΦ + λI)^{-1} preconditioning        |

All return ``(n_query, n_train)`` float32 scores, higher = more helpful; ``group_score`` sums the
per-example scores of a subset.
"""

from __future__ import annotations

from typing import Any

from airrep_core.baselines.grad_dot import GradDotAttributor
from airrep_core.baselines.interface import Attributor, NotFittedError
from airrep_core.baselines.lexical import Bm25Attributor, TfidfAttributor
from airrep_core.baselines.logra import LograAttributor
from airrep_core.baselines.representation import (
    EncoderAttributor,
    RdsAttributor,
    build_off_the_shelf_encoder,
)
from airrep_core.baselines.trak import TrakAttributor
from airrep_core.config.baselines import (
    Bm25Config,
    EncoderBaselineConfig,
    GradDotConfig,
    LograConfig,
    RdsConfig,
    TfidfConfig,
    TrakConfig,
)

TEXT_METHODS = ("tfidf", "bm25", "encoder")
"""Methods that read only the text."""

MODEL_METHODS = ("rds", "grad_dot", "logra", "trak")
"""Methods that need the target LM and its tokenizer."""

METHODS = TEXT_METHODS + MODEL_METHODS

BASELINE_CONFIGS = {
    "tfidf": TfidfConfig,
    "bm25": Bm25Config,
    "encoder": EncoderBaselineConfig,
    "rds": RdsConfig,
    "grad_dot": GradDotConfig,
    "logra": LograConfig,
    "trak": TrakConfig,
}
"""Each method's config class; its presets (tiny/mini/paper) are the method's fair settings."""


def build_attributor(
    method: str, preset: str = "mini", *, model: Any = None, tokenizer: Any = None
) -> Attributor:
    """A baseline ``method`` (one of ``METHODS``) with the config of ``preset`` (tiny/mini/paper).

    ``model``/``tokenizer``: the target LM (a transformers causal LM and its tokenizer), required
    for ``MODEL_METHODS``. ``encoder`` loads the offline MiniLM without AirRep's projection.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; allowed: {METHODS}")
    if method == "tfidf":
        return TfidfAttributor(TfidfConfig.preset(preset))
    if method == "bm25":
        return Bm25Attributor(Bm25Config.preset(preset))
    if method == "encoder":
        return build_off_the_shelf_encoder(EncoderBaselineConfig.preset(preset))
    if model is None or tokenizer is None:
        raise ValueError(f"method={method!r} needs the target LM: pass model= and tokenizer=")
    if method == "rds":
        return RdsAttributor(model, tokenizer, RdsConfig.preset(preset))
    if method == "grad_dot":
        return GradDotAttributor(model, tokenizer, GradDotConfig.preset(preset))
    if method == "logra":
        return LograAttributor(model, tokenizer, LograConfig.preset(preset))
    return TrakAttributor(model, tokenizer, TrakConfig.preset(preset))


__all__ = [
    "BASELINE_CONFIGS",
    "METHODS",
    "MODEL_METHODS",
    "TEXT_METHODS",
    "Attributor",
    "Bm25Attributor",
    "EncoderAttributor",
    "GradDotAttributor",
    "LograAttributor",
    "NotFittedError",
    "RdsAttributor",
    "TfidfAttributor",
    "TrakAttributor",
    "build_attributor",
    "build_off_the_shelf_encoder",
]
