"""The hybrid score: AirRep's dot product plus a weighted lexical (BM25) score (DESIGN.md §2,
"Label-efficient recipe"; issue: optional hybrid score).

Both parts are z-scored per query over the pool they rank (so the weight λ means the same for
every query and pool size): h(x, z) = ẑ_enc(x, z) + λ · ẑ_bm25(x, z), and a group's score is the
sum of its members' h (the sum rule of the other baselines). λ = 0 ranks groups like AirRep with
mean pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from airrep_core.baselines.interface import sum_group_scores
from airrep_core.teacher import zscore_rows

LEXICAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""The grid λ is chosen from on held-out labels."""


def hybrid_scores(
    encoder_scores: np.ndarray, lexical_scores: np.ndarray, weight: float
) -> np.ndarray:
    """``(n_query, n_pool)`` float32 h = zscore_rows(encoder) + weight · zscore_rows(lexical)."""
    if np.shape(encoder_scores) != np.shape(lexical_scores):
        raise ValueError(
            f"encoder scores {np.shape(encoder_scores)} and lexical scores "
            f"{np.shape(lexical_scores)} must have the same (n_query, n_pool) shape"
        )
    return zscore_rows(encoder_scores) + np.float32(weight) * zscore_rows(lexical_scores)


def hybrid_group_scores(
    encoder_scores: np.ndarray,
    lexical_scores: np.ndarray,
    membership: Sequence[Sequence[int]],
    weight: float,
) -> np.ndarray:
    """``(n_query, n_groups)`` float32: column j = Σ_{z ∈ group j} h(x, z) (``hybrid_scores``);
    ``membership``: each group's pool indices."""
    subsets = [np.asarray(group, dtype=np.int64) for group in membership]
    return sum_group_scores(hybrid_scores(encoder_scores, lexical_scores, weight), subsets)
