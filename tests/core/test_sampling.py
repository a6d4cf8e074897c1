"""Splits and subsets: a pure function of (seed, split) and of the set of eligible ids."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from airrep_core.config.labels import EvaluationSamplingConfig, LabelsConfig, SamplingConfig
from airrep_core.data.sampling import (
    draw_pool_and_test,
    draw_subsets,
    partition_corpus,
    reserved_for_base,
    sample_evaluation_split,
    sample_split,
    sample_splits,
    splits_from_rows,
    splits_rows,
    subsets_rows,
)
from airrep_core.errors import ConfigError

IDS = [f"p3-{i:05d}" for i in range(400)]
CONFIG = SamplingConfig(
    seed=3, n_splits=3, n_targets=20, pool_size=60, n_subsets=12, subset_size=15
)


def test_split_is_a_pure_function_of_seed_split_and_id_set() -> None:
    shuffled = IDS.copy()
    random.Random(1).shuffle(shuffled)
    first = sample_splits(IDS, CONFIG)
    # Same set in another order, with duplicates: the same splits.
    assert sample_splits(shuffled + IDS[:50], CONFIG) == first
    # Split s does not depend on how many splits are drawn.
    assert sample_splits(IDS, CONFIG.replace(n_splits=5))[:3] == first
    assert sample_split(IDS, 2, CONFIG) == first[2]
    # Another seed or split id draws something else.
    assert sample_split(IDS, 0, CONFIG.replace(seed=4)) != first[0]
    assert first[0].target_ids != first[1].target_ids


def test_split_shapes_and_invariants() -> None:
    for split in sample_splits(IDS, CONFIG):
        assert len(split.target_ids) == CONFIG.n_targets
        assert len(split.pool_ids) == CONFIG.pool_size
        assert not set(split.target_ids) & set(split.pool_ids)
        assert len(split.subsets) == CONFIG.n_subsets
        assert len({frozenset(s) for s in split.subsets}) == CONFIG.n_subsets
        for members in split.subsets:
            assert len(set(members)) == CONFIG.subset_size
            assert set(members) <= set(split.pool_ids)
        assert split.subset_ids == tuple(range(CONFIG.n_subsets))


def test_duplicate_subsets_are_skipped_until_every_distinct_subset_is_drawn() -> None:
    pool = ("a", "b", "c", "d", "e")
    # C(5, 4) = 5: drawing 5 distinct subsets needs to skip the repeats the generator produces.
    rng = np.random.default_rng(0)
    subsets = draw_subsets(pool, n_subsets=5, subset_size=4, rng=rng, split_id=0)
    assert sorted(subsets) == sorted(tuple(sorted(set(pool) - {x})) for x in pool)
    with pytest.raises(ValueError, match="only 5 distinct subsets"):
        draw_subsets(pool, n_subsets=6, subset_size=4, rng=rng, split_id=0)


def test_sampling_rejects_a_corpus_that_is_too_small() -> None:
    with pytest.raises(ValueError, match="80 are needed"):
        sample_split(IDS[:79], 0, CONFIG)
    with pytest.raises(ValueError, match="split_id"):
        sample_split(IDS, -1, CONFIG)
    with pytest.raises(ConfigError, match="subset_size"):
        SamplingConfig(pool_size=10, subset_size=11)


def test_base_share_partition_is_stable_as_the_dataset_grows() -> None:
    many = [f"id-{i}" for i in range(20_000)]
    base, rest = partition_corpus(many, 0.25)
    assert set(base).isdisjoint(rest) and len(base) + len(rest) == len(many)
    # Binomial(20000, 0.25): the share is within 5 standard deviations of 25 %.
    assert abs(len(base) - 5000) < 5 * math.sqrt(20_000 * 0.25 * 0.75)
    # Each id's side depends on that id only: a subset of the corpus keeps every side.
    small_base, _ = partition_corpus(many[:1000], 0.25)
    assert set(small_base) == set(base) & set(many[:1000])
    assert partition_corpus(many, 0.0) == ([], sorted(many))
    assert all(reserved_for_base(i, 0.25) for i in base[:50])


def test_evaluation_split_uses_the_test_set_as_targets() -> None:
    config = EvaluationSamplingConfig(seed=1, pool_size=50, n_test=10, n_subsets=8, subset_size=20)
    pool, test = draw_pool_and_test(IDS, config)
    assert len(pool) == 50 and len(test) == 10 and not set(pool) & set(test)
    split = sample_evaluation_split(reversed(pool), test, config, split_id=0)
    assert split == sample_evaluation_split(pool, test, config, split_id=0)
    assert split.target_ids == tuple(sorted(test))
    assert len(split.subsets) == 8
    assert all(len(s) == 20 and set(s) <= set(pool) for s in split.subsets)
    with pytest.raises(ValueError, match="also in the pool"):
        sample_evaluation_split(pool, (*test, pool[0]), config)


def test_tables_round_trip() -> None:
    splits = sample_splits(IDS, CONFIG)
    target_rows = splits_rows(splits)
    subset_rows = subsets_rows(splits)
    assert len(target_rows) == CONFIG.n_splits * CONFIG.n_targets
    assert len(subset_rows) == CONFIG.n_splits * CONFIG.n_subsets
    rebuilt = splits_from_rows(reversed(target_rows), reversed(subset_rows))
    for original, back in zip(splits, rebuilt, strict=True):
        assert back.split_id == original.split_id
        assert back.target_ids == original.target_ids
        assert back.subsets == original.subsets
        assert set(back.pool_ids) <= set(original.pool_ids)


@pytest.mark.parametrize("preset", ["tiny", "mini", "paper"])
def test_label_config_presets_round_trip_through_json(preset: str) -> None:
    config = LabelsConfig.preset(preset)
    assert LabelsConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.sampling == SamplingConfig.preset(preset)
    with pytest.raises(ConfigError, match="unknown field"):
        LabelsConfig.preset(preset, sampler={"seed": 1})
