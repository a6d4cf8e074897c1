"""Grad-Dot (single-checkpoint TracIn): score(x, z) = φ(x)ᵀ φ(z).

φ is the projected per-example response-loss gradient of the tracked layers
(``gradients.GradientFeaturizer``). TracIn sums this over training checkpoints weighted by the
learning rate; with the one base model we have, it is the plain gradient dot product
(NOTE(paper): the paper's TracIn row uses the same single-model form up to a constant).
Positive = one gradient step on z lowers x's loss (interface sign convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from airrep_core.baselines.gradients import GradientFeaturizer
from airrep_core.baselines.interface import Attributor, NotFittedError
from airrep_core.config.baselines import GradDotConfig
from airrep_core.examples import Example


class GradDotAttributor(Attributor):
    """Dot products of projected gradients; stores ``feature_dim`` floats per train example."""

    name = "grad_dot"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: GradDotConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or GradDotConfig()
        self.featurizer = GradientFeaturizer(model, tokenizer, self.config)
        self._train_features: np.ndarray | None = None

    def _fit(self, train: Sequence[Example]) -> None:
        self._train_features = self.featurizer.features(train)

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        if self._train_features is None:
            raise NotFittedError("GradDotAttributor is not fitted")
        return self.featurizer.features(queries) @ self._train_features.T

    @property
    def storage_floats_per_example(self) -> float:
        return float(self.featurizer.feature_dim)
