"""Splits and subsets over the artifact store (DESIGN.md §2 "Label generation", §3 ground truth).

Stage and key (``content_key(stage, config, inputs)``):

- ``label-splits``: ``splits.parquet`` (schema ``splits``) and ``subsets.parquet`` (``subsets``).
  Config: the sampling config and the base share (label splits) or the evaluation sampling and
  the digests of pool and test (a ground truth's one split); inputs: the dataset version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from airrep_core.config.labels import (
    BaseModelConfig,
    EvaluationSamplingConfig,
    SamplingConfig,
)
from airrep_core.data.sampling import (
    Split,
    draw_pool_and_test,
    partition_corpus,
    sample_evaluation_split,
    sample_splits,
    splits_from_rows,
    splits_rows,
    subsets_rows,
)
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from storage.tables import read_table, write_table
from tasks.caching import store_task
from tasks.corpus import Corpus, ids_digest, load_corpus
from tasks.references import StepRef, open_store

SPLITS_STAGE = "label-splits"


SPLITS_FILE = "splits.parquet"


SUBSETS_FILE = "subsets.parquet"


def _splits_config(sampling: SamplingConfig, base: BaseModelConfig) -> dict[str, Any]:
    return {"sampling": sampling.to_dict(), "base_corpus_share": base.corpus_share}


def splits_key(corpus: Corpus, sampling: SamplingConfig, base: BaseModelConfig) -> str:
    """The key of the ``label-splits`` artifact drawn from ``corpus``."""
    return content_key(SPLITS_STAGE, _splits_config(sampling, base), [corpus.key])


def build_splits(
    store: ArtifactStore, corpus: Corpus, sampling: SamplingConfig, base: BaseModelConfig
) -> ArtifactRef:
    """The ``label-splits`` artifact: splits drawn from the corpus outside the base share."""
    config = _splits_config(sampling, base)
    key = splits_key(corpus, sampling, base)

    def writer(staging: Path) -> dict[str, Any]:
        _, label_ids = partition_corpus(corpus.examples, base.corpus_share)
        return _write_splits(staging, sample_splits(label_ids, sampling))

    return store.build(SPLITS_STAGE, key, config=config, inputs=[corpus.key], writer=writer)


def build_evaluation_splits(
    store: ArtifactStore,
    corpus: Corpus,
    config: EvaluationSamplingConfig,
    pool_ids: Sequence[str] | None = None,
    test_ids: Sequence[str] | None = None,
) -> ArtifactRef:
    """LDS ground truth: one split with K subsets of the evaluation set's pool, its test set as
    targets. Without ``pool_ids``/``test_ids`` both are drawn from the corpus
    (``draw_pool_and_test``)."""
    if (pool_ids is None) != (test_ids is None):
        raise ValueError("give both pool_ids and test_ids, or neither")
    if pool_ids is None or test_ids is None:
        pool_ids, test_ids = draw_pool_and_test(corpus.examples, config)
    missing = sorted(set(pool_ids).union(test_ids) - set(corpus.examples))[:3]
    if missing:
        raise ValueError(f"ids not in dataset {corpus.key[:12]}: {missing}")
    split = sample_evaluation_split(pool_ids, test_ids, config)
    stage_config = {
        "evaluation_sampling": config.to_dict(),
        "pool": ids_digest(corpus, split.pool_ids),
        "test": ids_digest(corpus, split.target_ids),
    }
    key = content_key(SPLITS_STAGE, stage_config, [corpus.key])
    return store.build(
        SPLITS_STAGE,
        key,
        config=stage_config,
        inputs=[corpus.key],
        writer=lambda staging: _write_splits(staging, [split]),
    )


def read_splits(store: ArtifactStore, splits_ref: ArtifactRef) -> list[Split]:
    """The splits of a ``label-splits`` artifact (pool = the union of each split's subsets)."""
    targets = read_table(store, splits_ref, SPLITS_FILE, "splits").to_pylist()
    subsets = read_table(store, splits_ref, SUBSETS_FILE, "subsets").to_pylist()
    return splits_from_rows(targets, subsets)


def _write_splits(staging: Path, splits: Sequence[Split]) -> dict[str, Any]:
    n_targets = write_table(staging / SPLITS_FILE, _rows_table(splits_rows(splits)), "splits")
    n_subsets = write_table(staging / SUBSETS_FILE, _rows_table(subsets_rows(splits)), "subsets")
    return {"n_splits": len(splits), "target_rows": n_targets, "subset_rows": n_subsets}


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    return table.set_column(0, "split_id", pa.array([str(r["split_id"]) for r in rows]))


@store_task("sample-splits", "splits-{sampling.n_splits}x{sampling.n_subsets}")
def sample_splits_task(
    root: str, dataset: StepRef, sampling: SamplingConfig, base: BaseModelConfig
) -> StepRef:
    """The splits and subsets tables drawn from the dataset (a pure function of the seed)."""
    store = open_store(root)
    corpus = load_corpus(store, dataset.resolve())
    ref = build_splits(store, corpus, sampling, base)
    return StepRef.of(store, ref, **ref.metadata)
