"""LDS of one attribution method on one ground-truth split (DESIGN.md §3, "LDS").

For an evaluation set with K subsets S₁..S_K of its train pool and each test example's loss
ℓ(x, Sₖ) after fine-tuning on Sₖ, a method's predicted group scores g(x, Sₖ) give

    LDS(x) = Spearman ρ over k of (g(x, Sₖ), −ℓ(x, Sₖ)),  NaN → 0,

reported as the mean over test examples (×100 in tables) with its standard error over targets.

Group rule (stated in every table): AirRep pools its per-example scores with attention,
f = Σᵢ softmax(|sᵢ|) sᵢ (``airrep``), or their mean (``airrep_mean``); every other method sums
its per-example scores, g(x, S) = Σ_{z∈S} s(x, z) (``Attributor.group_score``).

The noise ceiling is the LDS that the losses of a second fine-tune of the same subsets (another
seed) get against the first: "scores" −ℓ_B, labels ℓ_A.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from airrep_core.data.examples import Example
from airrep_core.evaluation.metrics import per_target_spearman
from airrep_core.methods.interface import Attributor


def subset_indices(pool_ids: Sequence[str], subsets: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Each subset's members as an int64 index array into ``pool_ids``.

    Raises ``ValueError`` naming a member that is not in the pool.
    """
    position = {example_id: i for i, example_id in enumerate(pool_ids)}
    arrays = []
    for subset_id, members in enumerate(subsets):
        missing = [m for m in members if m not in position]
        if missing:
            raise ValueError(f"subset {subset_id}: members not in the pool, e.g. {missing[:3]}")
        arrays.append(np.array([position[m] for m in members], dtype=np.int64))
    return arrays


@dataclass(frozen=True)
class SubsetScores:
    """One method's predicted group scores on one ground-truth split, and what they cost.

    Attributes:
        method: the method's table name.
        group_scores: ``(n_targets, n_subsets)`` float32 g(x, Sₖ).
        fit_seconds: ``fit`` on the pool (featurise / index / encode the training examples).
        score_seconds: ``score`` of the targets plus the group rule.
        n_train: pool examples fitted.
        storage_floats_per_example: floats the method stores per training example.
    """

    method: str
    group_scores: np.ndarray
    fit_seconds: float
    score_seconds: float
    n_train: int
    storage_floats_per_example: float


def score_subsets(
    attributor: Attributor,
    pool: Sequence[Example],
    targets: Sequence[Example],
    subsets: Sequence[Sequence[str]],
    method: str | None = None,
) -> SubsetScores:
    """Fit ``attributor`` on ``pool``, score ``targets``, group by ``subsets`` (example ids).

    Returns ``SubsetScores`` with ``group_scores`` ``(len(targets), len(subsets))``.
    """
    indices = subset_indices([e.example_id for e in pool], subsets)
    started = time.perf_counter()
    attributor.fit(pool)
    fitted = time.perf_counter()
    scores = attributor.score(targets)
    grouped = attributor.group_score(scores, indices)
    done = time.perf_counter()
    return SubsetScores(
        method=method or attributor.name,
        group_scores=np.asarray(grouped, dtype=np.float32),
        fit_seconds=fitted - started,
        score_seconds=done - fitted,
        n_train=len(pool),
        storage_floats_per_example=float(attributor.storage_floats_per_example),
    )


@dataclass(frozen=True)
class LdsResult:
    """LDS per target and its summary.

    Attributes:
        per_target: ``(n_targets,)`` float64 Spearman ρ (NaN → 0).
        n_subsets: K, the subsets the correlation runs over.
    """

    per_target: np.ndarray
    n_subsets: int

    @property
    def mean(self) -> float:
        """The LDS: mean over targets."""
        return float(self.per_target.mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean over targets (0 with one target)."""
        n = len(self.per_target)
        return float(self.per_target.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0


def lds_of(group_scores: np.ndarray, losses: np.ndarray) -> LdsResult:
    """LDS of ``group_scores`` ``(n_targets, n_subsets)`` against ``losses``
    ``(n_subsets, n_targets)`` (the ``SplitLabels.losses`` layout)."""
    losses = np.asarray(losses)
    if losses.ndim != 2:
        raise ValueError(f"losses must be (n_subsets, n_targets), got shape {losses.shape}")
    return LdsResult(per_target_spearman(group_scores, losses.T), losses.shape[0])


def noise_ceiling(losses_a: np.ndarray, losses_b: np.ndarray) -> LdsResult:
    """The LDS that retraining with another seed gets against itself.

    Args:
        losses_a: ``(n, n_targets)`` losses of the first ``n`` subsets (the ground-truth seed).
        losses_b: the same subsets and targets fine-tuned with another seed.
    """
    losses_a = np.asarray(losses_a)
    losses_b = np.asarray(losses_b)
    if losses_a.shape != losses_b.shape:
        raise ValueError(
            f"noise ceiling needs the same (subsets, targets): {losses_a.shape} vs {losses_b.shape}"
        )
    return lds_of(-losses_b.T, losses_a)
