"""Teacher pseudo-labels for AirRep's pre-training (DESIGN.md §2, "Label-efficient recipe").

A cheap teacher scores many (target, candidate) pairs of the label corpus: BM25 (word overlap),
the gradient influence of the base LM θ₀ (LoGra: K-FAC-preconditioned projected gradients), or
their fusion. The fused score is an equal-weight (or ``weights``) sum of each method's scores
z-scored per target over the candidates, so methods on different scales count alike.

The pairs come from the label corpus only: ``draw_teacher_examples`` takes the corpus ids and the
ids to keep out (the held-out label splits), never an evaluation set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from airrep_core.data.shapes import check_shape
from airrep_core.methods.interface import zscore_rows


@dataclass(frozen=True)
class TeacherScores:
    """Teacher scores of targets against candidates (higher = more helpful).

    Attributes:
        target_ids: ``(n_targets,)`` example ids.
        candidate_ids: ``(n_candidates,)`` example ids, disjoint from the targets.
        scores: ``(n_targets, n_candidates)`` float32 fused scores.
    """

    target_ids: tuple[str, ...]
    candidate_ids: tuple[str, ...]
    scores: np.ndarray

    def __post_init__(self) -> None:
        check_shape(
            "teacher scores",
            self.scores,
            "(n_targets, n_candidates)",
            (len(self.target_ids), len(self.candidate_ids)),
        )


def draw_teacher_examples(
    example_ids: Iterable[str],
    excluded: Iterable[str],
    n_targets: int,
    n_candidates: int,
    seed: int,
) -> tuple[list[str], list[str]]:
    """Disjoint seeded draws of teacher targets and candidates from ``example_ids`` minus
    ``excluded`` (sorted ids first, so the draw is a pure function of the id set and ``seed``).

    Returns ``(target_ids, candidate_ids)``, each sorted; fewer eligible ids than
    ``n_targets + n_candidates`` is an error naming both counts.
    """
    blocked = set(excluded)
    eligible = sorted(i for i in set(example_ids) if i not in blocked)
    needed = n_targets + n_candidates
    if len(eligible) < needed:
        raise ValueError(
            f"teacher: {len(eligible)} eligible corpus examples (after excluding "
            f"{len(blocked)} held-out ids), but n_targets + n_candidates = {n_targets} + "
            f"{n_candidates} = {needed} are needed"
        )
    order = np.random.default_rng(seed).permutation(len(eligible))[:needed]
    targets = sorted(eligible[i] for i in order[:n_targets])
    candidates = sorted(eligible[i] for i in order[n_targets:])
    return targets, candidates


def fuse_scores(
    per_method: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """The fused teacher: Σ_m weight_m · zscore_rows(scores_m), ``(n_targets, n_candidates)``
    float32; ``weights`` default to 1 for every method."""
    if not per_method:
        raise ValueError("fuse_scores needs at least one method's scores")
    shapes = {name: np.shape(s) for name, s in per_method.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"teacher methods' score shapes differ: {shapes}")
    weights = weights or {}
    fused = sum(
        float(weights.get(name, 1.0)) * zscore_rows(scores) for name, scores in per_method.items()
    )
    return np.asarray(fused, dtype=np.float32)


def teacher_ids(teacher: TeacherScores) -> Sequence[str]:
    """Every example id the teacher scores (targets, then candidates)."""
    return [*teacher.target_ids, *teacher.candidate_ids]
