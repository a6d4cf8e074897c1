"""TRAK with one model: score(x, z) = φ(x)ᵀ (ΦᵀΦ + λ I)^{-1} φ(z).

φ: the projected per-example response-loss gradient (``gradients.GradientFeaturizer``, k floats);
Φ ``(n, k)``: the train features; λ = damping · trace(ΦᵀΦ) / k (a fraction of the mean
eigenvalue). ``fit`` stores the preconditioned train features Ψ = Φ (ΦᵀΦ + λ I)^{-1} ``(n, k)``,
so scoring is ``φ(x) Ψᵀ``. When n < k it uses the push-through identity
``(ΦᵀΦ + λ I)^{-1} Φᵀ = Φᵀ (ΦΦᵀ + λ I)^{-1}`` (an n x n solve instead of k x k).

NOTE(paper): TRAK's ensembling over several independently trained models and the diagonal
``Q = 1 - p`` re-weighting of its classification derivation are left out: one base model, and the
LM loss gradient already is the per-example "output function" gradient. Sign: positive = z
lowers x's loss (interface convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from airrep_core.baselines.gradients import GradientFeaturizer
from airrep_core.baselines.interface import Attributor, NotFittedError
from airrep_core.config.baselines import TrakConfig
from airrep_core.examples import Example


def ridge_preconditioned(features: np.ndarray, damping_fraction: float) -> tuple[np.ndarray, float]:
    """``(Ψ, λ)``: Ψ = Φ (ΦᵀΦ + λ I)^{-1} ``(n, k)`` float32, λ = fraction · trace(ΦᵀΦ) / k.

    Solved in float64, through the n x n kernel when n < k (push-through identity).
    """
    phi = torch.from_numpy(features).double()
    n, k = phi.shape
    damping = float(damping_fraction * (phi * phi).sum() / k)
    if damping <= 0:
        raise ValueError("all train features are zero; TRAK needs non-zero gradients")
    if n < k:
        kernel = phi @ phi.T + damping * torch.eye(n, dtype=torch.float64)
        psi = torch.linalg.solve(kernel, phi)
    else:
        gram = phi.T @ phi + damping * torch.eye(k, dtype=torch.float64)
        psi = torch.linalg.solve(gram, phi.T).T
    return psi.float().numpy(), damping


class TrakAttributor(Attributor):
    """Projected gradients with the (ΦᵀΦ + λI)^{-1} preconditioner of one model (TRAK)."""

    name = "trak"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: TrakConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or TrakConfig()
        self.featurizer = GradientFeaturizer(model, tokenizer, self.config)
        self._preconditioned_train: np.ndarray | None = None
        self.damping: float | None = None

    def _fit(self, train: Sequence[Example]) -> None:
        features = self.featurizer.features(train)
        self._preconditioned_train, self.damping = ridge_preconditioned(
            features, self.config.damping
        )

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        if self._preconditioned_train is None:
            raise NotFittedError("TrakAttributor is not fitted")
        return self.featurizer.features(queries) @ self._preconditioned_train.T

    @property
    def storage_floats_per_example(self) -> float:
        return float(self.featurizer.feature_dim)
