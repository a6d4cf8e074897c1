"""Label generation over the artifact store (DESIGN.md §2 "Label generation", §4 artifacts).

Plain step functions and, beside them, the Prefect tasks that wrap them: each step reads its
inputs from the store, calls ``airrep_core``, writes one artifact and returns a small reference.

Stages and keys (``content_key(stage, config, inputs)``):

- ``label-base``: the base LM θ₀ as a Hugging Face model directory. Config: ``BaseModelConfig``;
  inputs: the dataset version (a scratch model is trained on its base share; a hub model has none).
- ``label-splits``: the splits and subsets (``tasks.splits``).
- ``label-unit``: one (split, subset): ``losses.parquet`` (schema ``subset_losses``, one row per
  target). Config: the fine-tune config and the ids; inputs: the base key and sha256 digests of
  the members' and the targets' (example_id, content_hash) pairs, so a unit is reused exactly when
  the same model is fine-tuned on the same data and evaluated on the same targets. A killed run
  resumes with the missing units only.
- ``labels``: ``subset_losses.parquet`` gathered (polars, lazily) from the units, plus copies of
  the splits and subsets tables. Inputs: the splits key and every unit key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from airrep_core.config.labels import (
    BaseModelConfig,
    EvaluationSamplingConfig,
    FinetuneConfig,
    LabelsConfig,
)
from airrep_core.data.labels import SplitLabels
from airrep_core.data.sampling import Split
from airrep_core.lm.base_model import build_base_model
from airrep_core.lm.finetune import SubsetFinetuner
from airrep_core.records import JsonRecord
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from storage.tables import read_table, scan_tables, write_table
from tasks.caching import store_task
from tasks.corpus import Corpus, DatasetLike, ids_digest, load_corpus
from tasks.monitoring import Progress, publish_link, run_logger
from tasks.references import StepRef, open_store
from tasks.splits import (
    SPLITS_FILE,
    SUBSETS_FILE,
    build_evaluation_splits,
    build_splits,
    read_splits,
)

BASE_STAGE = "label-base"
UNIT_STAGE = "label-unit"
LABELS_STAGE = "labels"
UNIT_FILE = "losses.parquet"
LOSSES_FILE = "subset_losses.parquet"

log = logging.getLogger("airrep.labels")

UnitProgress = Callable[[int, int, "UnitOutcome"], None]
"""``progress(units_done, units_total, outcome)``, called after each unit (computed or skipped)."""


@dataclass(frozen=True)
class UnitOutcome:
    """One (split, subset) unit: its artifact and whether this call computed it."""

    split_id: int
    subset_id: int
    ref: ArtifactRef
    computed: bool


@dataclass(frozen=True)
class LabelsRef(JsonRecord):
    """What ``generate_labels`` returns: small, JSON-ready references and counts."""

    labels_key: str
    labels_uri: str
    base_key: str
    splits_key: str
    n_splits: int
    n_units: int
    units_computed: int
    units_skipped: int
    rows: int
    seconds: float


def base_key(corpus: Corpus, config: BaseModelConfig) -> str:
    """The key of the ``label-base`` artifact of ``config`` ("auto" resolved on this machine; a
    scratch model's input: the corpus)."""
    config = resolved(config)
    return content_key(BASE_STAGE, config.to_dict(), [corpus.key] if config.is_scratch else [])


def build_base(store: ArtifactStore, corpus: Corpus, config: BaseModelConfig) -> ArtifactRef:
    """The ``label-base`` artifact (built when absent): θ₀ as a HF model directory.

    Its manifest metadata is the ``BaseModelReport`` (held-out loss before/after the warm-up).
    """
    config = resolved(config)
    inputs = [corpus.key] if config.is_scratch else []
    key = base_key(corpus, config)

    def writer(staging: Path) -> dict[str, Any]:
        report = build_base_model(list(corpus.examples.values()), config, staging)
        log.info("base model %s: %s", key[:12], report)
        return report.to_dict()

    return store.build(BASE_STAGE, key, config=config.to_dict(), inputs=inputs, writer=writer)


def unit_key(
    corpus: Corpus, base_ref: ArtifactRef, split: Split, subset_id: int, finetune: FinetuneConfig
) -> tuple[str, dict[str, Any], list[str]]:
    """``(key, config, inputs)`` of the unit (split, subset): see the module docstring."""
    config = {
        "finetune": resolved(finetune).to_dict(),
        "split_id": split.split_id,
        "subset_id": subset_id,
    }
    inputs = [
        base_ref.key,
        ids_digest(corpus, split.subsets[subset_id]),
        ids_digest(corpus, split.target_ids),
    ]
    return content_key(UNIT_STAGE, config, inputs), config, inputs


def run_label_units(
    store: ArtifactStore,
    corpus: Corpus,
    base_ref: ArtifactRef,
    splits: Sequence[Split],
    finetune: FinetuneConfig,
    units: Sequence[tuple[int, int]] | None = None,
    progress: UnitProgress | None = None,
) -> list[UnitOutcome]:
    """Build the ``label-unit`` artifacts of ``units`` ((split_id, subset_id) pairs; default all),
    skipping those that exist. The base model is loaded only when a unit is missing, once."""
    finetune = resolved(finetune)
    by_id = {split.split_id: split for split in splits}
    wanted = [(s.split_id, j) for s in splits for j in s.subset_ids] if units is None else units
    loaded: list[SubsetFinetuner] = []

    def finetuner() -> SubsetFinetuner:
        if not loaded:
            loaded.append(SubsetFinetuner(store.local_dir(base_ref), finetune))
        return loaded[0]

    written: list[tuple[int, int]] = []
    outcomes = []
    for done, (split_id, subset_id) in enumerate(wanted, 1):
        split = by_id[split_id]
        key, config, inputs = unit_key(corpus, base_ref, split, subset_id, finetune)
        n_written = len(written)

        def writer(
            staging: Path, split: Split = split, subset_id: int = subset_id
        ) -> dict[str, Any]:
            written.append((split.split_id, subset_id))
            return _write_unit(staging, corpus, split, subset_id, finetuner())

        ref = store.build(UNIT_STAGE, key, config=config, inputs=inputs, writer=writer)
        computed = len(written) > n_written
        outcome = UnitOutcome(split_id, subset_id, ref, computed)
        outcomes.append(outcome)
        if progress is not None:
            progress(done, len(wanted), outcome)
    return outcomes


def gather_labels(
    store: ArtifactStore,
    splits_ref: ArtifactRef,
    unit_refs: Sequence[ArtifactRef],
    config: dict[str, Any],
) -> ArtifactRef:
    """The ``labels`` artifact: the subset-losses table of every unit, sorted, with the split
    tables; metadata has the per-target spread of losses across subsets."""
    inputs = [splits_ref.key, *sorted(ref.key for ref in unit_refs)]
    key = content_key(LABELS_STAGE, config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        losses = (
            scan_tables(store, list(unit_refs), UNIT_FILE)
            .sort("split_id", "subset_id", "target_id")
            .collect()
        )
        rows = write_table(staging / LOSSES_FILE, losses.to_arrow(), "subset_losses")
        for name, schema in ((SPLITS_FILE, "splits"), (SUBSETS_FILE, "subsets")):
            write_table(staging / name, read_table(store, splits_ref, name, schema), schema)
        spread = losses.group_by("split_id", "target_id").agg(pl.col("loss").std(ddof=0))
        return {
            "rows": rows,
            "n_units": len(unit_refs),
            "mean_loss": float(losses["loss"].mean()),
            "mean_target_spread": float(spread["loss"].mean()),
        }

    return store.build(LABELS_STAGE, key, config=config, inputs=inputs, writer=writer)


def generate_labels(
    store: ArtifactStore,
    dataset: DatasetLike,
    config: LabelsConfig,
    progress: UnitProgress | None = None,
) -> LabelsRef:
    """Labels of ``config`` from a dataset version, end to end: base model, splits, every unit,
    the gathered table. Existing artifacts are reused, so a killed run resumes where it stopped.

    Example (the ``mini`` preset on P3; about an hour on 2 CPU cores)::

        store = ArtifactStore("file:///path/to/store")
        p3 = import_dataset(store, data_dir / "flan_p3", "flan_p3", skip_invalid=True)
        ref = generate_labels(store, p3, LabelsConfig.preset("mini"))
        split_labels = load_split_labels(store, ref)
    """
    started = time.perf_counter()
    config = resolved(config)
    corpus = load_corpus(store, dataset)
    base_ref = build_base(store, corpus, config.base)
    splits_ref = build_splits(store, corpus, config.sampling, config.base)
    return _label_splits(
        store,
        corpus,
        base_ref,
        splits_ref,
        config.finetune,
        {"labels": config.to_dict()},
        started,
        progress,
    )


def generate_ground_truth(
    store: ArtifactStore,
    dataset: DatasetLike,
    base_ref: ArtifactRef,
    sampling: EvaluationSamplingConfig,
    finetune: FinetuneConfig,
    pool_ids: Sequence[str] | None = None,
    test_ids: Sequence[str] | None = None,
    progress: UnitProgress | None = None,
) -> LabelsRef:
    """LDS ground truth (DESIGN.md §3): K subsets of an evaluation set's pool, the base LM
    fine-tuned on each exactly as in label generation, every test example's loss. The result is
    a ``labels`` artifact with one split (``load_split_labels``)."""
    started = time.perf_counter()
    finetune = resolved(finetune)
    corpus = load_corpus(store, dataset)
    splits_ref = build_evaluation_splits(store, corpus, sampling, pool_ids, test_ids)
    config = {"ground_truth": sampling.to_dict(), "finetune": finetune.to_dict()}
    return _label_splits(store, corpus, base_ref, splits_ref, finetune, config, started, progress)


def _label_splits(
    store: ArtifactStore,
    corpus: Corpus,
    base_ref: ArtifactRef,
    splits_ref: ArtifactRef,
    finetune: FinetuneConfig,
    labels_config: dict[str, Any],
    started: float,
    progress: UnitProgress | None,
) -> LabelsRef:
    splits = read_splits(store, splits_ref)
    outcomes = run_label_units(store, corpus, base_ref, splits, finetune, progress=progress)
    labels_ref = gather_labels(store, splits_ref, [o.ref for o in outcomes], labels_config)
    computed = sum(o.computed for o in outcomes)
    return LabelsRef(
        labels_key=labels_ref.key,
        labels_uri=labels_ref.uri,
        base_key=base_ref.key,
        splits_key=splits_ref.key,
        n_splits=len(splits),
        n_units=len(outcomes),
        units_computed=computed,
        units_skipped=len(outcomes) - computed,
        rows=labels_ref.metadata["rows"],
        seconds=round(time.perf_counter() - started, 2),
    )


def load_split_labels(
    store: ArtifactStore, labels: LabelsRef | ArtifactRef | str
) -> list[SplitLabels]:
    """The labels as ``SplitLabels`` per split (``losses`` ``(n_subsets, n_targets)`` float32)
    for the encoder trainer; ``labels`` is a ``LabelsRef``, the ``labels`` artifact or its key."""
    if isinstance(labels, LabelsRef):
        labels = labels.labels_key
    ref = labels if isinstance(labels, ArtifactRef) else store.get(LABELS_STAGE, labels)
    splits = read_splits(store, ref)
    losses = pl.from_arrow(read_table(store, ref, LOSSES_FILE, "subset_losses"))
    result = []
    for split in splits:
        rows = losses.filter(pl.col("split_id") == str(split.split_id))
        target_index = {t: i for i, t in enumerate(split.target_ids)}
        matrix = np.full((len(split.subsets), len(split.target_ids)), np.nan, dtype=np.float32)
        matrix[
            rows["subset_id"].to_numpy(),
            [target_index[t] for t in rows["target_id"].to_list()],
        ] = rows["loss"].to_numpy()
        if np.isnan(matrix).any():
            raise ValueError(
                f"labels {ref.key[:12]}, split {split.split_id}: "
                f"{int(np.isnan(matrix).sum())} (subset, target) losses missing"
            )
        result.append(
            SplitLabels(split.split_id, split.target_ids, split.subset_ids, split.subsets, matrix)
        )
    return result


def _write_unit(
    staging: Path,
    corpus: Corpus,
    split: Split,
    subset_id: int,
    finetuner: SubsetFinetuner,
) -> dict[str, Any]:
    subset = [corpus.examples[i] for i in split.subsets[subset_id]]
    targets = [corpus.examples[i] for i in split.target_ids]
    losses, stats = finetuner.run(subset, targets)
    table = pa.table(
        {
            "split_id": [str(split.split_id)] * len(targets),
            "subset_id": pa.array([subset_id] * len(targets), type=pa.int64()),
            "target_id": list(split.target_ids),
            "loss": pa.array(losses, type=pa.float32()),
        }
    )
    write_table(staging / UNIT_FILE, table, "subset_losses")
    log.info("unit (%d, %d): %s", split.split_id, subset_id, stats)
    return stats.to_dict()


Unit = tuple[int, int]
"""(split_id, subset_id)."""

SHARD_TIMEOUT_S = 6 * 3600
"""A label shard's time limit, carried by the ``label-shard`` deployment's flow: the label flow
runs shards in worker threads, where Prefect cannot enforce a task timeout (it warns per shard)."""


@store_task(
    "prepare-base-model",
    "base-model-{config.architecture}-{config.hidden_size}",
    gpu=True,
    timeout_h=6,
)
def prepare_base_model(root: str, dataset: StepRef, config: BaseModelConfig) -> StepRef:
    """The base LM θ₀ (built from a config and warmed up, or loaded from the hub/a directory)."""
    store = open_store(root)
    corpus = load_corpus(store, dataset.resolve())
    ref = build_base(store, corpus, config)
    step = StepRef.of(store, ref, **ref.metadata)
    run_logger().info("base model %s: %s", ref.key[:12], ref.metadata)
    publish_link(step, "base target LM (Hugging Face model directory)")
    return step


@dataclass(frozen=True)
class LabelShard:
    """One shard of label work: its (split, subset) units and what they are computed from.

    A flow parameter of the ``label-shard`` deployment, so every field is JSON-serialisable.

    Attributes:
        root: storage root URI.
        dataset: the dataset version (``dataset`` artifact).
        base: the base LM θ₀ (``base_model`` artifact).
        splits: the splits (``splits`` artifact).
        finetune: the subset fine-tuning config.
        units: the shard's ``(split_id, subset_id)`` units.
        name: a readable shard name (``3-s1.8-s1.15``).
    """

    root: str
    dataset: StepRef
    base: StepRef
    splits: StepRef
    finetune: FinetuneConfig
    units: list[Unit]
    name: str


@store_task("label-shard", "label-shard-{shard.name}", gpu=True)
def label_shard(shard: LabelShard) -> list[StepRef]:
    """Fine-tune and evaluate the (split, subset) units of one shard; existing units are
    skipped, so a killed shard resumes where it stopped."""
    store = open_store(shard.root)
    corpus = load_corpus(store, shard.dataset.resolve())
    splits_list = read_splits(store, shard.splits.resolve())
    progress = Progress(f"label shard {shard.name}: {len(shard.units)} subsets")
    logger = run_logger()

    def report(done: int, total: int, outcome: UnitOutcome) -> None:
        progress.update(done, total)
        state = "computed" if outcome.computed else "reused"
        logger.info(
            "unit (%d, %d) %s [%d/%d]", outcome.split_id, outcome.subset_id, state, done, total
        )

    outcomes = run_label_units(
        store,
        corpus,
        shard.base.resolve(),
        splits_list,
        shard.finetune,
        units=[tuple(u) for u in shard.units],
        progress=report,
    )
    return [StepRef.of(store, o.ref, computed=o.computed) for o in outcomes]


@store_task("gather-labels")
def gather_labels_task(
    root: str,
    dataset: StepRef,
    base: StepRef,
    splits: StepRef,
    finetune: FinetuneConfig,
    labels_config: dict,
) -> StepRef:
    """The subset-losses table of every unit (each unit must exist: shards ran first)."""
    store = open_store(root)
    corpus = load_corpus(store, dataset.resolve())
    base_ref = base.resolve()
    splits_ref = splits.resolve()
    unit_refs = [
        store.get(UNIT_STAGE, unit_key(corpus, base_ref, split, j, finetune)[0])
        for split in read_splits(store, splits_ref)
        for j in split.subset_ids
    ]
    ref = gather_labels(store, splits_ref, unit_refs, labels_config)
    step = StepRef.of(store, ref, **ref.metadata)
    publish_link(step, "subset-losses table (labels)")
    return step
