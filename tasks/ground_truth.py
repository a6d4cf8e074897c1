"""Evaluation sets and their LDS ground truth over the artifact store (DESIGN.md §3).

Evaluation sets: a built-in set's name maps to a dataset (``BUILTIN_EVAL_SETS``), imported from
the sample data when the store lacks it; P3 is split by template into ``flan_p3_train`` (AirRep's
label corpus) and ``flan_p3_heldout`` (the P3 evaluation set).

Stages and keys (``content_key(stage, config, inputs)``):

- ``lds-ground-truth``: one evaluation set's LDS ground truth. Config: the set's name, the
  sampling, fine-tune and noise-ceiling settings; inputs: the dataset version and the base LM.
  Its writer draws pool/test (no shared prompt, ``eval_sets.draw_pool_and_test_by_prompt``),
  fine-tunes K subsets through the label-generation units (``tasks.labels.run_label_units``: one
  artifact per subset, so a killed run resumes) and gathers them into a ``labels`` artifact
  (key in the metadata); the noise ceiling's first ``noise_subsets`` subsets, retrained with
  ``noise_seed``, are ``noise_losses.parquet``.

Honesty: the evaluation's held-out check (``tasks.evaluation.check_encoder_held_out``) refuses
an AirRep encoder whose training dataset shares an example (by content hash) with any evaluation
set (``check_held_out``), and the test examples are never used to fit or tune.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.data.examples import Example
from airrep_core.data.labels import SplitLabels
from airrep_core.evaluation.eval_sets import (
    P3_HELDOUT_SHARE,
    draw_pool_and_test_by_prompt,
    split_templates,
)
from airrep_core.evaluation.lds_eval import noise_ceiling
from airrep_core.evaluation.report import NOISE_CEILING
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from storage.dataset_heads import DATASET_STAGE, DatasetVersion, latest_version
from storage.datasets import import_dataset
from storage.errors import ArtifactNotFound
from storage.sample_data import sample_dataset
from storage.tables import read_table, write_table
from tasks import labels
from tasks.caching import store_task
from tasks.corpus import Corpus, load_corpus
from tasks.data_tasks import dataset_ref, imported_ref
from tasks.monitoring import Progress, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS
from tasks.splits import build_evaluation_splits, read_splits

GROUND_TRUTH_STAGE = "lds-ground-truth"
NOISE_FILE = "noise_losses.parquet"
GROUND_TRUTH_FILE = "ground_truth.json"

P3_TRAIN_DATASET = "flan_p3_train"
P3_HELDOUT_DATASET = "flan_p3_heldout"
BUILTIN_EVAL_SETS = {
    "p3": P3_HELDOUT_DATASET,
    "dolly": "dolly",
    "gsm8k": "gsm8k_train",
    "hh_rlhf_harmless": "hh_rlhf_harmless",
}
"""Built-in evaluation sets -> dataset names (imported from the sample data when absent)."""

log = logging.getLogger("airrep.evaluation")


# ---- evaluation sets --------------------------------------------------------------------------


def import_p3_holdout(
    store: ArtifactStore, share: float = P3_HELDOUT_SHARE
) -> tuple[DatasetVersion, DatasetVersion]:
    """Import the sample P3 data as two datasets split by template (``eval_sets``):
    ``flan_p3_train`` (AirRep's label corpus) and ``flan_p3_heldout`` (the P3 evaluation set).

    Label generation for an honest evaluation must use ``flan_p3_train``, not the whole P3.
    Importing the same files again publishes nothing.
    """
    sample = sample_dataset("flan_p3")
    files = sorted(sample.paths()[0].glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no P3 template files under {sample.paths()[0]}")
    train, heldout = split_templates([f.stem for f in files], share)
    by_name = {f.stem: f for f in files}
    return (
        import_dataset(store, [by_name[t] for t in train], P3_TRAIN_DATASET, skip_invalid=True),
        import_dataset(store, [by_name[t] for t in heldout], P3_HELDOUT_DATASET, skip_invalid=True),
    )


def resolve_eval_dataset(store: ArtifactStore, name: str) -> DatasetVersion:
    """The dataset version of evaluation set ``name``: a built-in set (imported from the sample
    data when the store lacks it) or the latest version of any imported dataset called ``name``."""
    dataset = BUILTIN_EVAL_SETS.get(name, name)
    try:
        return latest_version(store, dataset)
    except ArtifactNotFound:
        if name not in BUILTIN_EVAL_SETS:
            raise
    if name == "p3":
        return import_p3_holdout(store)[1]
    sample = sample_dataset(dataset)
    return import_dataset(store, sample.paths(), sample.name, skip_invalid=sample.skip_invalid)


def pool_and_test(corpus: Corpus, config: EvaluationConfig) -> tuple[tuple[str, ...], ...]:
    """``(pool_ids, test_ids)`` of an evaluation set (pure: the corpus and the sampling seed)."""
    sampling = config.sampling
    return draw_pool_and_test_by_prompt(
        corpus.examples, sampling.pool_size, sampling.n_test, sampling.seed
    )


def check_held_out(
    store: ArtifactStore, training_dataset_key: str, eval_sets: dict[str, Corpus]
) -> None:
    """Raise ``ValueError`` when an example of any evaluation set (by content hash) is in the
    dataset AirRep's labels came from (the table would not be honest)."""
    trained = read_table(
        store, store.get(DATASET_STAGE, training_dataset_key), "examples.parquet", "examples"
    )
    seen = set(trained.column("content_hash").to_pylist())
    for name, corpus in eval_sets.items():
        overlap = [i for i, h in corpus.content_hashes.items() if h in seen]
        if overlap:
            raise ValueError(
                f"evaluation set {name!r} shares {len(overlap)} example(s) with AirRep's training "
                f"dataset {training_dataset_key[:12]} (e.g. {overlap[:3]}); train AirRep on a "
                f"corpus without them (for P3: {P3_TRAIN_DATASET}, see import_p3_holdout)"
            )


# ---- LDS ground truth ------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruth:
    """A loaded ground truth: the examples, the losses and the noise-ceiling losses.

    Attributes:
        name: the evaluation set.
        ref: the ``lds-ground-truth`` artifact.
        corpus: the evaluation set's examples.
        labels: ``SplitLabels`` (``losses`` ``(K, n_test)``).
        noise_losses: ``(noise_subsets, n_test)`` float32 from the second seed, or ``None``.
    """

    name: str
    ref: ArtifactRef
    corpus: Corpus
    labels: SplitLabels
    noise_losses: np.ndarray | None

    @property
    def base_key(self) -> str:
        """The base LM the subsets were fine-tuned from."""
        return self.ref.inputs[1]

    @property
    def pool(self) -> list[Example]:
        """The pool examples the subsets draw from, sorted by id."""
        ids = sorted({m for members in self.labels.subset_members for m in members})
        return [self.corpus.examples[i] for i in ids]

    @property
    def targets(self) -> list[Example]:
        """The test examples, in the order of the losses' columns."""
        return [self.corpus.examples[i] for i in self.labels.target_ids]


def ground_truth_config(name: str, config: EvaluationConfig) -> dict[str, Any]:
    """The ``lds-ground-truth`` stage config of evaluation set ``name``."""
    return {
        "eval_set": name,
        "holdout": "pool/test by prompt",
        "sampling": config.sampling.to_dict(),
        "finetune": config.finetune.to_dict(),
        "noise_subsets": config.noise_subsets,
        "noise_seed": config.noise_seed,
    }


def build_ground_truth(
    store: ArtifactStore,
    name: str,
    dataset: DatasetVersion | ArtifactRef,
    base_ref: ArtifactRef,
    config: EvaluationConfig,
    progress: labels.UnitProgress | None = None,
) -> ArtifactRef:
    """The ``lds-ground-truth`` artifact of evaluation set ``name`` (see the module docstring)."""
    config = resolved(config)
    dataset_ref = dataset.ref if isinstance(dataset, DatasetVersion) else dataset
    stage_config = ground_truth_config(name, config)
    inputs = [dataset_ref.key, base_ref.key]
    key = content_key(GROUND_TRUTH_STAGE, stage_config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        corpus = load_corpus(store, dataset_ref)
        pool_ids, test_ids = pool_and_test(corpus, config)
        splits_ref = build_evaluation_splits(store, corpus, config.sampling, pool_ids, test_ids)
        splits = read_splits(store, splits_ref)
        log.info("%s: ground truth, %d subsets", name, len(splits[0].subsets))
        outcomes = labels.run_label_units(
            store, corpus, base_ref, splits, config.finetune, progress=progress
        )
        labels_ref = labels.gather_labels(
            store, splits_ref, [o.ref for o in outcomes], {"ground_truth": stage_config}
        )
        metadata: dict[str, Any] = {
            "labels_key": labels_ref.key,
            "splits_key": splits_ref.key,
            "n_test": len(test_ids),
            "pool_size": len(pool_ids),
            "n_subsets": len(splits[0].subsets),
            "mean_loss": labels_ref.metadata["mean_loss"],
            "mean_target_spread": labels_ref.metadata["mean_target_spread"],
        }
        if config.noise_subsets:
            log.info("%s: noise ceiling, %d subsets retrained", name, config.noise_subsets)
            noise = labels.run_label_units(
                store,
                corpus,
                base_ref,
                splits,
                config.finetune.replace(seed=config.noise_seed),
                units=[(splits[0].split_id, j) for j in range(config.noise_subsets)],
                progress=progress,
            )
            tables = [read_table(store, o.ref, labels.UNIT_FILE, "subset_losses") for o in noise]
            write_table(staging / NOISE_FILE, pa.concat_tables(tables), "subset_losses")
        (staging / GROUND_TRUTH_FILE).write_text(
            json.dumps({"eval_set": name, "pool_ids": pool_ids, "test_ids": test_ids}, indent=1)
        )
        return metadata

    return store.build(GROUND_TRUTH_STAGE, key, config=stage_config, inputs=inputs, writer=writer)


def load_ground_truth(store: ArtifactStore, ref: ArtifactRef) -> GroundTruth:
    """The examples, losses and noise losses of an ``lds-ground-truth`` artifact."""
    corpus = load_corpus(store, store.get(DATASET_STAGE, ref.inputs[0]))
    split_labels = labels.load_split_labels(store, ref.metadata["labels_key"])[0]
    noise = None
    if NOISE_FILE in ref.files:
        table = read_table(store, ref, NOISE_FILE, "subset_losses").to_pylist()
        column = {t: i for i, t in enumerate(split_labels.target_ids)}
        n = 1 + max(int(r["subset_id"]) for r in table)
        noise = np.full((n, len(column)), np.nan, dtype=np.float32)
        for row in table:
            noise[int(row["subset_id"]), column[row["target_id"]]] = row["loss"]
    return GroundTruth(ref.config["eval_set"], ref, corpus, split_labels, noise)


def ceiling_row(truth: GroundTruth) -> dict[str, Any] | None:
    """The noise-ceiling row of the LDS table (``None`` without retrained subsets)."""
    if truth.noise_losses is None:
        return None
    n = truth.noise_losses.shape[0]
    result = noise_ceiling(truth.labels.losses[:n], truth.noise_losses)
    return {
        "eval_set": truth.name,
        "method": NOISE_CEILING,
        "lds": result.mean,
        "stderr": result.stderr,
        "n_targets": len(result.per_target),
        "n_subsets": n,
        "group_rule": "",
        "fit_seconds": 0.0,
        "score_seconds": 0.0,
        "n_train": 0,
        "storage_floats_per_example": 0.0,
    }


@task(name="split-p3-templates", cache_policy=NO_CACHE, **IO_RETRY_OPTIONS)
def split_p3_task(root: str) -> dict[str, tuple[StepRef, bool]]:
    """Import the sample P3 data split by template into ``flan_p3_train`` (the label corpus) and
    ``flan_p3_heldout`` (the P3 evaluation set); returns ``{name: (ref, latest_changed)}``
    (``imported_ref``, as ``import_dataset_task`` returns)."""
    return {v.name: imported_ref(root, v) for v in import_p3_holdout(open_store(root))}


@task(name="resolve-eval-set", task_run_name="eval-set-{name}", cache_policy=NO_CACHE)
def resolve_eval_set_task(root: str, name: str) -> StepRef:
    """The latest dataset version of evaluation set ``name`` (a built-in set is imported from the
    sample data when the store lacks it). Never cached: "latest" changes with new imports."""
    return dataset_ref(root, resolve_eval_dataset(open_store(root), name))


@store_task("lds-ground-truth", "ground-truth-{name}", gpu=True, timeout_h=12)
def ground_truth_task(
    root: str, name: str, dataset: StepRef, base: StepRef, config: EvaluationConfig
) -> StepRef:
    """Evaluation set ``name``'s LDS ground truth: K subsets of its pool fine-tuned from ``base``
    and every test example's loss (plus the noise-ceiling retraining). Resumes unit by unit."""
    store = open_store(root)
    n_units = config.sampling.n_subsets + config.noise_subsets
    progress = Progress(f"ground truth {name}: {n_units} fine-tunes")
    done = 0

    def report(*_: object) -> None:
        nonlocal done
        done += 1
        progress.update(done, n_units)

    ref = build_ground_truth(store, name, dataset.resolve(), base.resolve(), config, report)
    run_logger().info("ground truth %s: %s", name, ref.metadata)
    return StepRef.of(store, ref, eval_set=name, **ref.metadata)
