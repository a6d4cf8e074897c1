"""Splits and subsets for label generation and for LDS ground truth (DESIGN.md §2, §3).

A split is N_v target examples, an N_t training pool disjoint from them, and M subsets of n pool
examples each (no repeats inside a subset, no two subsets equal as sets). Sampling is a pure
function of (seed, split_id) and of the *set* of eligible example ids: the ids are sorted before
any draw, so the input order does not matter, and split ``s`` draws from the seed sequence
``(seed, s)``, so adding splits never changes the existing ones.

The corpus is first partitioned by a hash of ``example_id`` (``reserved_for_base``): the share
reserved for the base model's tokenizer and warm-up is never a target or subset member. The hash
makes the partition stable when a dataset grows (an example never changes side).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from airrep_core.config.labels import EvaluationSamplingConfig, SamplingConfig

MAX_REDRAWS_PER_SUBSET = 100
"""Draws of a duplicate subset tolerated per subset before giving up (the pool is too small)."""

_HASH_SCALE = float(2**64)


@dataclass(frozen=True)
class Split:
    """One split: its targets, its training pool and its subsets.

    Attributes:
        split_id: the split's id (>= 0).
        target_ids: ``(N_v,)`` example ids of the targets, sorted.
        pool_ids: ``(N_t,)`` example ids of the training pool, sorted; disjoint from the targets.
        subsets: ``M`` tuples of ``n`` distinct pool ids each, sorted inside; ``subset_id`` is the
            position in this tuple. No two subsets are equal as sets.
    """

    split_id: int
    target_ids: tuple[str, ...]
    pool_ids: tuple[str, ...]
    subsets: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        pool = set(self.pool_ids)
        overlap = pool.intersection(self.target_ids)
        if overlap:
            raise ValueError(
                f"split {self.split_id}: {len(overlap)} target(s) also in the pool, e.g. "
                f"{sorted(overlap)[:3]}"
            )
        for subset_id, members in enumerate(self.subsets):
            if len(set(members)) != len(members):
                raise ValueError(f"split {self.split_id}, subset {subset_id}: repeated members")
            outside = set(members) - pool
            if outside:
                raise ValueError(
                    f"split {self.split_id}, subset {subset_id}: members not in the pool, e.g. "
                    f"{sorted(outside)[:3]}"
                )

    @property
    def subset_ids(self) -> tuple[int, ...]:
        """``(M,)`` the subsets' ids: ``0 .. M-1``."""
        return tuple(range(len(self.subsets)))


def reserved_for_base(example_id: str, share: float) -> bool:
    """True when ``example_id`` falls in the base model's share of the corpus.

    The side is decided by sha256 of the id alone, so it never changes when the dataset grows.
    ``share`` = 0 reserves nothing.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share={share!r} is invalid; allowed: a number in [0, 1)")
    digest = hashlib.sha256(example_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SCALE < share


def partition_corpus(example_ids: Iterable[str], base_share: float) -> tuple[list[str], list[str]]:
    """``(base_ids, label_ids)``: the ids reserved for the base model and the rest, both sorted."""
    base_ids: list[str] = []
    label_ids: list[str] = []
    for example_id in sorted(set(example_ids)):
        (base_ids if reserved_for_base(example_id, base_share) else label_ids).append(example_id)
    return base_ids, label_ids


def sample_split(example_ids: Iterable[str], split_id: int, config: SamplingConfig) -> Split:
    """Draw split ``split_id``: N_v targets, a disjoint N_t pool, M distinct subsets of n.

    Args:
        example_ids: the eligible ids (duplicates and order ignored).
        split_id: the split's id; with ``config.seed`` it seeds the draw.
        config: sizes and seed.
    Raises:
        ValueError: fewer eligible ids than N_v + N_t, or a pool too small for M distinct subsets.
    """
    if not isinstance(split_id, int) or split_id < 0:
        raise ValueError(f"split_id={split_id!r} is invalid; allowed: an int >= 0")
    ids = sorted(set(example_ids))
    needed = config.n_targets + config.pool_size
    if len(ids) < needed:
        raise ValueError(
            f"split {split_id}: {len(ids)} eligible examples, but n_targets + pool_size = "
            f"{config.n_targets} + {config.pool_size} = {needed} are needed"
        )
    rng = _split_rng(config.seed, split_id)
    chosen = rng.choice(len(ids), size=needed, replace=False)
    target_ids = tuple(sorted(ids[i] for i in chosen[: config.n_targets]))
    pool_ids = tuple(sorted(ids[i] for i in chosen[config.n_targets :]))
    subsets = draw_subsets(pool_ids, config.n_subsets, config.subset_size, rng, split_id)
    return Split(split_id=split_id, target_ids=target_ids, pool_ids=pool_ids, subsets=subsets)


def sample_splits(example_ids: Iterable[str], config: SamplingConfig) -> list[Split]:
    """Splits ``0 .. n_splits-1`` of ``config`` (each one exactly ``sample_split``'s)."""
    ids = sorted(set(example_ids))
    return [sample_split(ids, split_id, config) for split_id in range(config.n_splits)]


def draw_pool_and_test(
    example_ids: Iterable[str], config: EvaluationSamplingConfig
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(pool_ids, test_ids)`` drawn disjointly from one evaluation set without a given split."""
    ids = sorted(set(example_ids))
    needed = config.pool_size + config.n_test
    if len(ids) < needed:
        raise ValueError(
            f"{len(ids)} examples in the evaluation set, but pool_size + n_test = {needed} needed"
        )
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0, 1]))
    chosen = rng.choice(len(ids), size=needed, replace=False)
    pool_ids = tuple(sorted(ids[i] for i in chosen[: config.pool_size]))
    test_ids = tuple(sorted(ids[i] for i in chosen[config.pool_size :]))
    return pool_ids, test_ids


def sample_evaluation_split(
    pool_ids: Iterable[str],
    test_ids: Iterable[str],
    config: EvaluationSamplingConfig,
    split_id: int = 0,
) -> Split:
    """LDS ground truth: K subsets of an evaluation set's train pool, its test examples as targets.

    The whole given pool is the split's pool (``config.pool_size`` only matters for
    ``draw_pool_and_test``); the draw is a pure function of (``config.seed``, ``split_id``).
    """
    pool = tuple(sorted(set(pool_ids)))
    targets = tuple(sorted(set(test_ids)))
    if config.subset_size > len(pool):
        raise ValueError(
            f"subset_size={config.subset_size} exceeds the evaluation pool ({len(pool)} examples)"
        )
    rng = _split_rng(config.seed, split_id)
    subsets = draw_subsets(pool, config.n_subsets, config.subset_size, rng, split_id)
    return Split(split_id=split_id, target_ids=targets, pool_ids=pool, subsets=subsets)


def draw_subsets(
    pool_ids: Sequence[str],
    n_subsets: int,
    subset_size: int,
    rng: np.random.Generator,
    split_id: int,
) -> tuple[tuple[str, ...], ...]:
    """``n_subsets`` subsets of ``subset_size`` distinct pool ids; a subset equal (as a set) to an
    earlier one is skipped and drawn again.

    Raises:
        ValueError: the pool has fewer than ``n_subsets`` distinct subsets of that size, or the
            redraw budget ran out.
    """
    if math.comb(len(pool_ids), subset_size) < n_subsets:
        raise ValueError(
            f"split {split_id}: a pool of {len(pool_ids)} has only "
            f"{math.comb(len(pool_ids), subset_size)} distinct subsets of {subset_size}, "
            f"{n_subsets} requested"
        )
    seen: set[tuple[str, ...]] = set()
    subsets: list[tuple[str, ...]] = []
    redraws = 0
    while len(subsets) < n_subsets:
        picked = rng.choice(len(pool_ids), size=subset_size, replace=False)
        members = tuple(sorted(pool_ids[i] for i in picked))
        if members in seen:
            redraws += 1
            if redraws > MAX_REDRAWS_PER_SUBSET * n_subsets:
                raise ValueError(
                    f"split {split_id}: gave up after {redraws} duplicate subsets; enlarge the pool"
                )
            continue
        seen.add(members)
        subsets.append(members)
    return tuple(subsets)


def splits_rows(splits: Sequence[Split]) -> list[dict[str, object]]:
    """Rows of the ``splits`` table: ``{split_id, example_id}`` per target."""
    return [
        {"split_id": split.split_id, "example_id": target_id}
        for split in splits
        for target_id in split.target_ids
    ]


def subsets_rows(splits: Sequence[Split]) -> list[dict[str, object]]:
    """Rows of the ``subsets`` table: ``{split_id, subset_id, example_ids}`` per subset."""
    return [
        {"split_id": split.split_id, "subset_id": subset_id, "example_ids": list(members)}
        for split in splits
        for subset_id, members in enumerate(split.subsets)
    ]


def splits_from_rows(
    split_rows: Iterable[dict[str, object]], subset_rows: Iterable[dict[str, object]]
) -> list[Split]:
    """Rebuild the splits from the two tables' rows (pool = the union of the subsets' members).

    NOTE: the pool's unsampled examples are not stored in the tables; the rebuilt ``pool_ids`` is
    the union of the subsets, which is all that fine-tuning and training need.
    """
    targets: dict[int, list[str]] = {}
    for row in split_rows:
        targets.setdefault(int(row["split_id"]), []).append(str(row["example_id"]))
    members: dict[int, dict[int, tuple[str, ...]]] = {}
    for row in subset_rows:
        split_members = members.setdefault(int(row["split_id"]), {})
        split_members[int(row["subset_id"])] = tuple(sorted(str(m) for m in row["example_ids"]))
    if set(targets) != set(members):
        raise ValueError(
            f"splits table has split ids {sorted(targets)}, subsets table {sorted(members)}"
        )
    splits = []
    for split_id in sorted(targets):
        by_id = members[split_id]
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(f"split {split_id}: subset ids {sorted(by_id)} are not 0..M-1")
        subsets = tuple(by_id[i] for i in range(len(by_id)))
        pool = tuple(sorted({m for subset in subsets for m in subset}))
        splits.append(Split(split_id, tuple(sorted(targets[split_id])), pool, subsets))
    return splits


def _split_rng(seed: int, split_id: int) -> np.random.Generator:
    """The generator of split ``split_id``: a pure function of ``(seed, split_id)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, split_id]))
