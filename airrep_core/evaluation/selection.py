"""Data selection (DESIGN.md §3): pick the N candidates a method scores as most helpful for a
target task, fine-tune the base LM on them, and compare the target task's loss with N random
candidates.

The evaluated selection is the one ``airrep select`` ships (``AttributionIndex.select``): each
target example ranks the candidates by s(x, z), and candidates are taken round-robin over the
targets' rankings (``search.round_robin_from_scores``, the paper's rule). The fine-tune and the
loss are the label generation's (``airrep_core.lm.finetune.SubsetFinetuner``), so the comparison is
exactly "which subset helps the target more" in the LDS protocol's own terms.
"""

from __future__ import annotations

import numpy as np

from airrep_core.attribution.search import round_robin_from_scores


def shipped_selection(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` candidates that ``airrep select`` would ship for these scores.

    Args:
        scores: ``(n_query, n_candidates)`` per-example scores, higher = more helpful.
        n: how many to select (1 <= n <= n_candidates).
    Returns:
        ``(n,)`` int64 indices, sorted ascending.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_query, n_candidates), got shape {scores.shape}")
    _check_n(n, scores.shape[1])
    return np.sort(round_robin_from_scores(scores, n).indices).astype(np.int64)


def random_selection(n_candidates: int, n: int, seed: int) -> np.ndarray:
    """``(n,)`` int64 indices drawn without replacement with ``seed``, sorted ascending."""
    _check_n(n, n_candidates)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 4]))
    return np.sort(rng.choice(n_candidates, size=n, replace=False)).astype(np.int64)


def _check_n(n: int, n_candidates: int) -> None:
    if not isinstance(n, int | np.integer) or not 1 <= n <= n_candidates:
        raise ValueError(f"n={n!r} is invalid; allowed: an int in [1, {n_candidates}]")
