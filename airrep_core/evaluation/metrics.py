"""Attribution metrics on group scores (DESIGN.md §3): LDS and pairwise ranking accuracy.

Layout: ``(n_targets, n_subsets)`` for both scores and losses (``SplitLabels.losses`` is
``(n_subsets, n_targets)``: transpose it). Scores follow the project's sign convention (higher =
more helpful), so a good method's scores correlate with −loss.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from airrep_core.encoder.ranking_loss import T_MIN


def per_target_spearman(scores: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Spearman ρ over subsets between each target's scores and −losses; NaN → 0.

    Args:
        scores: ``(n_targets, n_subsets)`` predicted group scores g(x, Sₖ).
        losses: ``(n_targets, n_subsets)`` the target's loss after training on Sₖ.
    Returns:
        ``(n_targets,)`` float64; a target whose scores or losses are constant gets 0.
    """
    scores, losses = _check_pair(scores, losses)
    score_ranks = rankdata(scores, axis=1)
    label_ranks = rankdata(-losses, axis=1)
    a = score_ranks - score_ranks.mean(axis=1, keepdims=True)
    b = label_ranks - label_ranks.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a * b).sum(axis=1) / denominator
    return np.nan_to_num(rho, nan=0.0, posinf=0.0, neginf=0.0)


def lds(scores: np.ndarray, losses: np.ndarray) -> float:
    """Linear datamodeling score: mean over targets of ``per_target_spearman`` (NaN → 0)."""
    return float(per_target_spearman(scores, losses).mean())


def ranking_accuracy(scores: np.ndarray, labels: np.ndarray, t_min: float = T_MIN) -> float:
    """Fraction of the loss's valid pairs (r̂ᵢ − r̂ⱼ > t_min) ordered correctly (fᵢ > fⱼ).

    ``labels``: ``(n_targets, n_subsets)`` normalised labels r̂ (higher = more helpful). NaN when
    there is no valid pair.
    """
    scores, labels = _check_pair(scores, labels)
    valid = (labels[:, :, None] - labels[:, None, :]) > t_min
    count = int(valid.sum())
    if count == 0:
        return float("nan")
    correct = (scores[:, :, None] - scores[:, None, :]) > 0
    return float((correct & valid).sum() / count)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"expected two (n_targets, n_subsets) arrays of the same shape, got {a.shape} and {b.shape}"
        )
    return a, b
