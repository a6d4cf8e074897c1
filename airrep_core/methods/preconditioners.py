"""The preconditioners of the gradient attributor (``gradients.py``), one strategy per
method, as kronfluence registers its factor strategies:

| strategy   | method   | score(x, z)                                                          |
|------------|----------|----------------------------------------------------------------------|
| identity   | grad_dot | φ(x)ᵀ φ(z) (single-checkpoint TracIn)                                 |
| ridge      | trak     | φ(x)ᵀ (ΦᵀΦ + λ I)^{-1} φ(z), λ = damping · trace(ΦᵀΦ) / k (TRAK, 1 model) |
| kfac       | logra    | Σ_l ⟨(S_l ⊗ A_l + λ_l I)^{-1} G̃_l(x), G̃_l(z)⟩ (LoGra, damped K-FAC)   |

φ: the projected per-example response-loss gradient (``gradient_features.GradientFeaturizer``, k floats);
Φ ``(n, k)``: the train features.

**ridge.** ``fit`` stores the preconditioned train features Ψ = Φ (ΦᵀΦ + λ I)^{-1} ``(n, k)``, so
scoring is ``φ(x) Ψᵀ``. When n < k it uses the push-through identity
``(ΦᵀΦ + λ I)^{-1} Φᵀ = Φᵀ (ΦΦᵀ + λ I)^{-1}`` (an n x n solve instead of k x k).
NOTE(paper): TRAK's ensembling over several independently trained models and the diagonal
``Q = 1 - p`` re-weighting of its classification derivation are left out: one base model, and the
LM loss gradient already is the per-example "output function" gradient.

**kfac.** Per tracked linear layer l, with projected inputs ã = P_in a and projected output
gradients g̃ = P_out g: K-FAC factors over the train set's real tokens (N tokens, padding
excluded) ``A = (1/N) Σ ã ãᵀ`` ``(k_in, k_in)`` and ``S = (1/N) Σ g̃ g̃ᵀ`` ``(k_out, k_out)`` —
kronfluence's normalisation (its "empirical Fisher" with the same loss); the Fisher block is
approximated by ``S ⊗ A`` and inverted with damping: with ``A = Q_A diag(α) Q_Aᵀ`` and
``S = Q_S diag(σ) Q_Sᵀ``, ``(S ⊗ A + λ I)^{-1} vec(G) = vec(Q_S [(Q_Sᵀ G Q_A) / (σ αᵀ + λ)] Q_Aᵀ)``,
``λ = damping · mean(σ αᵀ)`` (kronfluence's heuristic when ``damping = 0.1``). The train gradients
are stored raw; the query side is preconditioned at score time. Factors are shared by all
examples and not counted as storage.

Every strategy keeps ``feature_dim`` floats per train example. Sign: positive = a gradient step
on z lowers x's loss (interface convention).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch

from airrep_core.methods.gradient_features import BatchFactors, GradientFeaturizer
from airrep_core.methods.interface import NotFittedError


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


class Preconditioner(abc.ABC):
    """A strategy: what ``fit`` keeps of the train features and how queries are scored on it."""

    method: str
    """The method name the strategy gives the attributor (``grad_dot``, ``trak``, ``logra``)."""

    def __init__(self) -> None:
        self._train: np.ndarray | None = None

    def fit(self, featurizer: GradientFeaturizer, train: list) -> None:
        """Featurise ``train`` ``(n, k)`` and keep what scoring needs."""
        self._train = self._fit(featurizer, train)

    def score(self, featurizer: GradientFeaturizer, queries: list) -> np.ndarray:
        """``(n_query, n_train)`` float32 scores."""
        if self._train is None:
            raise NotFittedError(f"the {self.method} preconditioner is not fitted")
        return self._query_side(featurizer, queries) @ self._train.T

    def _fit(self, featurizer: GradientFeaturizer, train: list) -> np.ndarray:
        return featurizer.features(train)

    def _query_side(self, featurizer: GradientFeaturizer, queries: list) -> np.ndarray:
        return featurizer.features(queries)


class IdentityPreconditioner(Preconditioner):
    """Grad-Dot: raw train features, raw query features."""

    method = "grad_dot"


class RidgePreconditioner(Preconditioner):
    """TRAK: the train side is Ψ = Φ (ΦᵀΦ + λ I)^{-1}; ``damping`` is λ's fraction of the mean
    eigenvalue of ΦᵀΦ (``self.damping`` holds λ after ``fit``)."""

    method = "trak"

    def __init__(self, damping: float) -> None:
        super().__init__()
        self.damping_fraction = damping
        self.damping: float | None = None

    def _fit(self, featurizer: GradientFeaturizer, train: list) -> np.ndarray:
        psi, self.damping = ridge_preconditioned(featurizer.features(train), self.damping_fraction)
        return psi


class KfacPreconditioner(Preconditioner):
    """LoGra: raw train features; each query layer ``(S ⊗ A + λ I)^{-1}``-preconditioned."""

    method = "logra"

    def __init__(self, damping: float) -> None:
        super().__init__()
        self.damping_fraction = damping
        self.factors: dict[str, KfacFactor] = {}

    def _fit(self, featurizer: GradientFeaturizer, train: list) -> np.ndarray:
        covariance = KroneckerCovariance()
        features = featurizer.features(train, on_batch=covariance.update)
        self.factors = covariance.factors(self.damping_fraction)
        return features

    def _query_side(self, featurizer: GradientFeaturizer, queries: list) -> np.ndarray:
        """``(n, feature_dim)`` float32: each layer's ``(S ⊗ A + λ I)^{-1} vec(G̃)``, concatenated."""
        if not self.factors:
            raise NotFittedError("the logra preconditioner is not fitted")
        per_layer = featurizer.split_layers(featurizer.features(queries))
        blocks = [
            self.factors[name].precondition(torch.from_numpy(grads)).reshape(len(queries), -1)
            for name, grads in per_layer.items()
        ]
        return torch.cat(blocks, dim=1).float().numpy()
