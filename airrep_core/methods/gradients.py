"""The gradient attributor: projected per-example response-loss gradients
(``gradient_features.GradientFeaturizer``) with a preconditioner strategy (``preconditioners.py``):
identity (Grad-Dot / single-checkpoint TracIn), ridge (TRAK with one model) or damped K-FAC
(LoGra). One class, three methods; the config's class picks the strategy.

NOTE(paper): TracIn sums φ(x)ᵀ φ(z) over training checkpoints weighted by the learning rate; with
the one base model we have, it is the plain gradient dot product (the paper's TracIn row uses the
same single-model form up to a constant).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from airrep_core.config.baselines import (
    GradDotConfig,
    GradientFeatureConfig,
    LograConfig,
    TrakConfig,
)
from airrep_core.data.examples import Example
from airrep_core.methods.gradient_features import GradientFeaturizer
from airrep_core.methods.interface import Attributor
from airrep_core.methods.preconditioners import (
    IdentityPreconditioner,
    KfacPreconditioner,
    Preconditioner,
    RidgePreconditioner,
)


def preconditioner_for(config: GradientFeatureConfig) -> Preconditioner:
    """The strategy of ``config``'s method: ``GradDotConfig`` → identity, ``TrakConfig`` → ridge,
    ``LograConfig`` → K-FAC (with the config's ``damping``)."""
    if isinstance(config, LograConfig):
        return KfacPreconditioner(config.damping)
    if isinstance(config, TrakConfig):
        return RidgePreconditioner(config.damping)
    if isinstance(config, GradDotConfig):
        return IdentityPreconditioner()
    raise TypeError(
        f"config {type(config).__name__} names no preconditioner; "
        "allowed: GradDotConfig, TrakConfig, LograConfig"
    )


class GradientAttributor(Attributor):
    """Preconditioned dot products of projected gradients; stores ``feature_dim`` floats per
    train example. ``name`` is the strategy's method (``grad_dot``, ``trak`` or ``logra``);
    ``preconditioner`` overrides the one ``config``'s class names (``preconditioner_for``)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: GradientFeatureConfig,
        preconditioner: Preconditioner | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.preconditioner = preconditioner or preconditioner_for(config)
        self.name = self.preconditioner.method
        self.featurizer = GradientFeaturizer(model, tokenizer, config)

    def _fit(self, train: Sequence[Example]) -> None:
        self.preconditioner.fit(self.featurizer, list(train))

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        return self.preconditioner.score(self.featurizer, list(queries))

    @property
    def storage_floats_per_example(self) -> float:
        return float(self.featurizer.feature_dim)
