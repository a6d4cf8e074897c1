"""LoGra-style attribution: projected per-layer gradients preconditioned with damped K-FAC.

Per tracked linear layer l, with projected inputs ã = P_in a and projected output gradients
g̃ = P_out g (``gradients.py``):

- K-FAC factors over the train set's real tokens (N tokens, padding excluded):
  ``A = (1/N) Σ ã ãᵀ`` ``(k_in, k_in)`` and ``S = (1/N) Σ g̃ g̃ᵀ`` ``(k_out, k_out)`` —
  kronfluence's normalisation (its "empirical Fisher" with the same loss);
- the Fisher block of the projected gradient is approximated by ``S ⊗ A`` and inverted with
  damping: with ``A = Q_A diag(α) Q_Aᵀ`` and ``S = Q_S diag(σ) Q_Sᵀ``,
  ``(S ⊗ A + λ I)^{-1} vec(G) = vec(Q_S [(Q_Sᵀ G Q_A) / (σ αᵀ + λ)] Q_Aᵀ)``, with
  ``λ = damping · mean(σ αᵀ)`` (kronfluence's heuristic when ``damping = 0.1``);
- score(x, z) = Σ_l ⟨(S_l ⊗ A_l + λ_l I)^{-1} G̃_l(x), G̃_l(z)⟩ (an influence-function score with
  the sign of the interface: positive = z lowers x's loss).

The train gradients are stored raw (``feature_dim`` floats per example); the query side is
preconditioned at score time. Factors are shared by all examples and not counted as storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from airrep_core.baselines.gradients import BatchFactors, GradientFeaturizer
from airrep_core.baselines.interface import Attributor, NotFittedError
from airrep_core.config.baselines import LograConfig
from airrep_core.examples import Example


@dataclass(frozen=True)
class KfacFactor:
    """One layer's damped K-FAC inverse in eigen form (float64).

    ``activation_eigenvectors`` ``(k_in, k_in)``, ``gradient_eigenvectors`` ``(k_out, k_out)``,
    ``inverse_eigenvalues`` ``(k_out, k_in)`` = 1 / (σ αᵀ + λ), ``damping`` λ.
    """

    activation_eigenvectors: torch.Tensor
    gradient_eigenvectors: torch.Tensor
    inverse_eigenvalues: torch.Tensor
    damping: float

    @classmethod
    def from_covariances(
        cls, activation_cov: torch.Tensor, gradient_cov: torch.Tensor, damping_fraction: float
    ) -> KfacFactor:
        """Eigendecompose ``A`` ``(k_in, k_in)`` and ``S`` ``(k_out, k_out)``; λ = fraction · mean(σ αᵀ)."""
        alpha, q_a = torch.linalg.eigh(activation_cov.double())
        sigma, q_s = torch.linalg.eigh(gradient_cov.double())
        eigenvalues = torch.outer(sigma, alpha)
        damping = float(damping_fraction * eigenvalues.mean())
        return cls(q_a, q_s, 1.0 / (eigenvalues + damping), damping)

    def precondition(self, gradients: torch.Tensor) -> torch.Tensor:
        """``(n, k_out, k_in)`` → ``(S ⊗ A + λ I)^{-1}`` applied to each row's ``vec(G)``, float64."""
        q_a, q_s = self.activation_eigenvectors, self.gradient_eigenvectors
        rotated = q_s.T @ gradients.double() @ q_a
        return q_s @ (rotated * self.inverse_eigenvalues) @ q_a.T


class KroneckerCovariance:
    """Accumulates per-layer ``Σ ã ãᵀ``, ``Σ g̃ g̃ᵀ`` and the token count over batches (float64)."""

    def __init__(self) -> None:
        self.activation: dict[str, torch.Tensor] = {}
        self.gradient: dict[str, torch.Tensor] = {}
        self.num_tokens = 0

    def update(self, batch: BatchFactors) -> None:
        """Add one batch (padding rows are zero in ``batch``, so they add nothing)."""
        self.num_tokens += int(batch.token_mask.sum())
        for name, inputs in batch.inputs.items():
            flat_a = inputs.reshape(-1, inputs.shape[-1]).double()
            grads = batch.output_grads[name]
            flat_g = grads.reshape(-1, grads.shape[-1]).double()
            if name not in self.activation:
                self.activation[name] = torch.zeros(
                    flat_a.shape[1], flat_a.shape[1], dtype=torch.float64
                )
                self.gradient[name] = torch.zeros(
                    flat_g.shape[1], flat_g.shape[1], dtype=torch.float64
                )
            self.activation[name] += (flat_a.T @ flat_a).cpu()
            self.gradient[name] += (flat_g.T @ flat_g).cpu()

    def factors(self, damping_fraction: float) -> dict[str, KfacFactor]:
        """``{layer: KfacFactor}`` of ``A = Σ ã ãᵀ / N`` and ``S = Σ g̃ g̃ᵀ / N``."""
        if self.num_tokens == 0:
            raise ValueError("no tokens were accumulated; fit on a non-empty train set")
        return {
            name: KfacFactor.from_covariances(
                self.activation[name] / self.num_tokens,
                self.gradient[name] / self.num_tokens,
                damping_fraction,
            )
            for name in self.activation
        }


class LograAttributor(Attributor):
    """Projected gradients + per-layer damped K-FAC preconditioning (LoGra)."""

    name = "logra"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: LograConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or LograConfig()
        self.featurizer = GradientFeaturizer(model, tokenizer, self.config)
        self._train_features: np.ndarray | None = None
        self.factors: dict[str, KfacFactor] = {}

    def _fit(self, train: Sequence[Example]) -> None:
        covariance = KroneckerCovariance()
        self._train_features = self.featurizer.features(train, on_batch=covariance.update)
        self.factors = covariance.factors(self.config.damping)

    def preconditioned_features(self, examples: Sequence[Example]) -> np.ndarray:
        """``(n, feature_dim)`` float32: each layer's ``(S ⊗ A + λ I)^{-1} vec(G̃)``, concatenated."""
        if not self.factors:
            raise NotFittedError("LograAttributor is not fitted")
        features = self.featurizer.features(examples)
        per_layer = self.featurizer.split_layers(features)
        blocks = [
            self.factors[name].precondition(torch.from_numpy(grads)).reshape(len(examples), -1)
            for name, grads in per_layer.items()
        ]
        return torch.cat(blocks, dim=1).float().numpy()

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        if self._train_features is None:
            raise NotFittedError("LograAttributor is not fitted")
        return self.preconditioned_features(queries) @ self._train_features.T

    @property
    def storage_floats_per_example(self) -> float:
        return float(self.featurizer.feature_dim)
