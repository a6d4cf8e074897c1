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

from airrep_core.attribution.search import TopK
from airrep_core.data.examples import Example
from airrep_core.methods.interface import sum_group_scores, zscore_rows
from airrep_core.methods.lexical import Bm25Attributor


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


class HybridScorer:
    """Hybrid scores of queries against a pool: its embeddings and a BM25 index fitted on the
    same rows, in the same order (``lexical.fit(pool_examples)``).

    Args:
        embeddings: ``(n_pool, d)`` float32 or float16 (e.g. a memory-mapped store view).
        lexical: a fitted ``Bm25Attributor`` over the pool's examples, row for row.
        weight: λ > 0, the encoder's ``lexical_weight``.
        chunk_rows: pool rows per matrix product (float16 views are converted chunk by chunk).
    """

    def __init__(
        self, embeddings: np.ndarray, lexical: Bm25Attributor, weight: float, chunk_rows: int
    ) -> None:
        if lexical.num_train != embeddings.shape[0]:
            raise ValueError(
                f"the lexical index has {lexical.num_train} rows, the embeddings "
                f"{embeddings.shape[0]}: fit it on the pool's examples in the store's row order"
            )
        if weight <= 0:
            raise ValueError(f"weight={weight} is invalid; allowed: > 0")
        self.embeddings = embeddings
        self.lexical = lexical
        self.weight = float(weight)
        self.chunk_rows = int(chunk_rows)

    def scores(self, query_embeddings: np.ndarray, queries: Sequence[Example]) -> np.ndarray:
        """``(n_query, n_pool)`` float32 h(x, z) of every query against every pool row."""
        queries_f32 = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        n_pool = self.embeddings.shape[0]
        dots = np.empty((queries_f32.shape[0], n_pool), dtype=np.float32)
        for start in range(0, n_pool, self.chunk_rows):
            block = np.asarray(self.embeddings[start : start + self.chunk_rows], dtype=np.float32)
            dots[:, start : start + block.shape[0]] = queries_f32 @ block.T
        return hybrid_scores(dots, self.lexical.score(list(queries)), self.weight)


def top_and_bottom_k(scores: np.ndarray, k: int) -> tuple[TopK, TopK]:
    """(largest, smallest) ``k`` of each row of a full ``(n_query, n)`` score matrix, as
    :class:`TopK` (ties: lower row first, as the exact search)."""
    k = min(int(k), scores.shape[1])
    descending = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ascending = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return (
        TopK(np.take_along_axis(scores, descending, 1), descending.astype(np.int64)),
        TopK(np.take_along_axis(scores, ascending, 1), ascending.astype(np.int64)),
    )
