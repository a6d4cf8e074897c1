"""The one interface every attribution method implements (DESIGN.md §3, "Baselines").

Sign convention (DESIGN.md §2): **higher score = more helpful = lower target loss**. For gradient
methods the score is a (preconditioned) dot product of the query's loss gradient with the train
example's loss gradient: one gradient step on z with learning rate η changes the query loss by
about ``-η g_xᵀ g_z``, so a large positive ``g_xᵀ g_z`` means z helps x.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from airrep_core.data.examples import Example
from airrep_core.errors import AirRepError

SUM_RULE = "sum of per-example scores"
"""The group rule of every method but AirRep (DESIGN.md §3, LDS)."""


class NotFittedError(AirRepError, RuntimeError):
    """``score`` was called before ``fit``."""


class Attributor(abc.ABC):
    """Scores how much each training example helps each query.

    Use: ``fit(train)`` once (featurise / index the train set), then ``score(queries)`` any number
    of times; ``group_score`` turns per-example scores into subset scores for LDS.
    """

    name: str
    """Short method name used in tables (e.g. ``"tfidf"``, ``"logra"``)."""

    def __init__(self) -> None:
        self._num_train: int | None = None

    @abc.abstractmethod
    def _fit(self, train: Sequence[Example]) -> None:
        """Featurise / index ``train`` (called by ``fit`` after the input checks)."""

    @abc.abstractmethod
    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        """``(n_query, n_train)`` scores (called by ``score`` after the input checks)."""

    @property
    @abc.abstractmethod
    def storage_floats_per_example(self) -> float:
        """Floats stored per training example by ``fit`` (shared factors not counted)."""

    def fit(self, train: Sequence[Example]) -> None:
        """Featurise / index the training set; a later ``fit`` replaces the previous one."""
        check_examples(train, "train")
        self._fit(train)
        self._num_train = len(train)

    def score(self, queries: Sequence[Example]) -> np.ndarray:
        """Scores ``(n_query, n_train)`` float32, higher = query's loss lower thanks to the example."""
        if self._num_train is None:
            raise NotFittedError(f"{type(self).__name__}.score called before fit")
        check_examples(queries, "queries")
        scores = np.asarray(self._score(queries), dtype=np.float32)
        expected = (len(queries), self._num_train)
        if scores.shape != expected:
            raise AssertionError(
                f"{self.name}: scores have shape {scores.shape}, expected {expected}"
            )
        return scores

    @property
    def num_train(self) -> int:
        """Number of training examples of the last ``fit``."""
        if self._num_train is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted")
        return self._num_train

    @property
    def group_rule(self) -> str:
        """How ``group_score`` forms a subset score (for reports)."""
        return SUM_RULE

    def group_score(self, scores: np.ndarray, subsets: Sequence[np.ndarray]) -> np.ndarray:
        """Subset scores ``(n_query, n_subsets)`` float32: the **sum** of per-example scores.

        g(x, S) = Σ_{z ∈ S} s(x, z) (DESIGN.md §3, LDS "the sum of per-example scores"); AirRep
        overrides this with attention pooling. ``scores``: ``(n_query, n_train)``; ``subsets``:
        integer index arrays into the train set.
        """
        scores = check_scores(scores)
        return sum_group_scores(scores, subsets)


def check_examples(examples: Sequence[Example], what: str) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``examples`` is a non-empty sequence of ``Example``."""
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise TypeError(f"{what} must be a sequence of Example, got {type(examples).__name__}")
    if len(examples) == 0:
        raise ValueError(f"{what} is empty; at least one Example is needed")
    for index, example in enumerate(examples):
        if not isinstance(example, Example):
            raise TypeError(f"{what}[{index}] is a {type(example).__name__}, expected Example")


def check_scores(scores: np.ndarray) -> np.ndarray:
    """``scores`` as a float32 ``(n_query, n_train)`` array; ``ValueError`` if not 2-D/finite."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_query, n_train), got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    return scores


def check_subsets(subsets: Sequence[np.ndarray], num_train: int) -> list[np.ndarray]:
    """Each subset as an int64 index array within ``[0, num_train)``; errors name the subset."""
    checked = []
    for position, subset in enumerate(subsets):
        indices = np.asarray(subset)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(
                f"subsets[{position}] must be a 1-D integer index array, got dtype "
                f"{indices.dtype} and shape {indices.shape}"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= num_train):
            raise ValueError(
                f"subsets[{position}] has indices outside [0, {num_train}): "
                f"min {indices.min()}, max {indices.max()}"
            )
        checked.append(indices.astype(np.int64))
    return checked


def sum_group_scores(scores: np.ndarray, subsets: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_query, n_subsets)`` float32: column j = Σ_{i ∈ subsets[j]} scores[:, i]."""
    subsets = check_subsets(subsets, scores.shape[1])
    membership = np.zeros((scores.shape[1], len(subsets)), dtype=np.float64)
    for column, indices in enumerate(subsets):
        np.add.at(membership[:, column], indices, 1.0)
    return (scores.astype(np.float64) @ membership).astype(np.float32)


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """``(n, m)`` float32: each row minus its mean, over its population std (1 where it is 0)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_targets, n_candidates), got {values.shape}")
    std = values.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    return ((values - values.mean(axis=1, keepdims=True)) / std).astype(np.float32)
