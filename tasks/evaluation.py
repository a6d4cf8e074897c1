"""The evaluation harness over the artifact store (DESIGN.md §3): plain step functions.

Stages and keys (``content_key(stage, config, inputs)``):

- ``lds-ground-truth``: one evaluation set's LDS ground truth. Config: the set's name, the
  sampling, fine-tune and noise-ceiling settings; inputs: the dataset version and the base LM.
  Its writer draws pool/test (no shared prompt, ``eval_sets.draw_pool_and_test_by_prompt``),
  fine-tunes K subsets through the label-generation units (``tasks.labels.run_label_units``: one
  artifact per subset, so a killed run resumes) and gathers them into a ``labels`` artifact
  (key in the metadata); the noise ceiling's first ``noise_subsets`` subsets, retrained with
  ``noise_seed``, are ``noise_losses.parquet``.
- ``lds-scores``: one method on one ground truth: group scores, LDS per target, timing and
  storage in the metadata. Inputs: the ground truth and what the method reads (the encoder for
  AirRep, the base LM for the model methods), so a rerun only loads them.
- ``classification-scores``: one method on one classification test (top-1 same class).
- ``data-selection``: one selection (a method's top N, or N random) for the target task, its
  fine-tune (a label unit) and the target loss.
- ``evaluation-report``: Markdown, Parquet tables and the PNG chart of everything above.

Honesty: ``evaluate`` refuses an AirRep encoder whose training dataset shares an example (by
content hash) with any evaluation set, and the test examples are never used to fit or tune.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airrep_core.baselines import MODEL_METHODS, Attributor, build_attributor
from airrep_core.config.baselines import (
    Bm25Config,
    EncoderBaselineConfig,
    GradDotConfig,
    LograConfig,
    RdsConfig,
    TfidfConfig,
    TrakConfig,
)
from airrep_core.config.evaluation import AIRREP_METHODS, EvaluationConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.evaluation.airrep_attributor import AirRepAttributor
from airrep_core.evaluation.classification import (
    ClassificationTask,
    balanced_task,
    classes_with_enough_examples,
    top1_accuracy,
)
from airrep_core.evaluation.eval_sets import (
    P3_HELDOUT_SHARE,
    draw_pool_and_test_by_prompt,
    p3_task,
    split_templates,
)
from airrep_core.evaluation.lds_eval import group_rule, lds_of, noise_ceiling, score_subsets
from airrep_core.evaluation.report import (
    NOISE_CEILING,
    ReportTables,
    render_markdown,
    write_report,
)
from airrep_core.evaluation.selection import random_selection, select_top_n
from airrep_core.examples import Example
from airrep_core.labels import SplitLabels
from airrep_core.sampling import Split
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from storage.datasets import DATASET_STAGE, DatasetVersion, import_dataset, latest_version
from storage.errors import ArtifactNotFound
from storage.sample_data import sample_dataset
from storage.tables import read_table, write_table
from tasks import labels
from tasks.encoder import load_encoder, train_encoder_artifact

GROUND_TRUTH_STAGE = "lds-ground-truth"
SCORES_STAGE = "lds-scores"
CLASSIFICATION_STAGE = "classification-scores"
SELECTION_STAGE = "data-selection"
REPORT_STAGE = "evaluation-report"
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
SOURCE_TASK_SETS = ("p3", "dolly", "gsm8k", "hh_rlhf_harmless")
"""The mixed pool of the ``source`` classification test (label = the evaluation set)."""

_BASELINE_CONFIGS = {
    "encoder": EncoderBaselineConfig,
    "tfidf": TfidfConfig,
    "bm25": Bm25Config,
    "rds": RdsConfig,
    "grad_dot": GradDotConfig,
    "logra": LograConfig,
    "trak": TrakConfig,
}

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


def pool_and_test(corpus: labels.Corpus, config: EvaluationConfig) -> tuple[tuple[str, ...], ...]:
    """``(pool_ids, test_ids)`` of an evaluation set (pure: the corpus and the sampling seed)."""
    sampling = config.sampling
    return draw_pool_and_test_by_prompt(
        corpus.examples, sampling.pool_size, sampling.n_test, sampling.seed
    )


def check_held_out(
    store: ArtifactStore, training_dataset_key: str, eval_sets: dict[str, labels.Corpus]
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
    corpus: labels.Corpus
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
    dataset_ref = dataset.ref if isinstance(dataset, DatasetVersion) else dataset
    stage_config = ground_truth_config(name, config)
    inputs = [dataset_ref.key, base_ref.key]
    key = content_key(GROUND_TRUTH_STAGE, stage_config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        corpus = labels.load_corpus(store, dataset_ref)
        pool_ids, test_ids = pool_and_test(corpus, config)
        splits_ref = labels.build_evaluation_splits(
            store, corpus, config.sampling, pool_ids, test_ids
        )
        splits = labels.read_splits(store, splits_ref)
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
    corpus = labels.load_corpus(store, store.get(DATASET_STAGE, ref.inputs[0]))
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


# ---- methods ---------------------------------------------------------------------------------


class MethodFactory:
    """Builds every method of the table and names what its scores depend on.

    ``encoder_ref``: the trained AirRep ``encoder`` artifact. Target LMs are loaded from base
    artifacts on demand (one kept at a time).
    """

    def __init__(
        self, store: ArtifactStore, config: EvaluationConfig, encoder_ref: ArtifactRef
    ) -> None:
        self.store = store
        self.config = config
        self.encoder_ref = encoder_ref
        self._encoder = None
        self._lm: tuple[str, Any, Any] | None = None

    def settings(self, method: str) -> dict[str, Any]:
        """The method's settings (part of its artifacts' keys)."""
        if method in AIRREP_METHODS:
            return {
                "pooling": "attention" if method == "airrep" else "mean",
                "batch_size": self.config.airrep_batch_size,
                "precision": self.config.airrep_precision,
            }
        return _BASELINE_CONFIGS[method].preset(self.config.baseline_preset).to_dict()

    def inputs(self, method: str, base_key: str) -> list[str]:
        """Artifact keys the method's scores depend on besides the data."""
        if method in AIRREP_METHODS:
            return [self.encoder_ref.key]
        return [base_key] if method in MODEL_METHODS else []

    def build(self, method: str, base_key: str) -> Attributor:
        """A fresh attributor of ``method`` (model methods on the base LM ``base_key``)."""
        if method in AIRREP_METHODS:
            if self._encoder is None:
                self._encoder = load_encoder(self.store, self.encoder_ref)
            settings = self.settings(method)
            return AirRepAttributor(
                self._encoder, settings["pooling"], settings["batch_size"], settings["precision"]
            )
        if method not in MODEL_METHODS:
            return build_attributor(method, self.config.baseline_preset)
        if self._lm is None or self._lm[0] != base_key:
            from airrep_core.lm_loading import load_causal_lm

            base_dir = self.store.local_dir(self.store.get(labels.BASE_STAGE, base_key))
            model, tokenizer = load_causal_lm(base_dir)
            self._lm = (base_key, model, tokenizer)
        return build_attributor(
            method, self.config.baseline_preset, model=self._lm[1], tokenizer=self._lm[2]
        )


def score_method(
    store: ArtifactStore, method: str, truth_ref: ArtifactRef, factory: MethodFactory
) -> ArtifactRef:
    """The ``lds-scores`` artifact of ``method`` on a ground truth (computed when absent):
    ``group_scores.parquet`` (target_id, subset_id, score) and ``lds.parquet`` (target_id, lds);
    metadata: lds, stderr, timings, storage per example, the group rule."""
    base_key = truth_ref.inputs[1]
    stage_config = {
        "method": method,
        "settings": factory.settings(method),
        "group_rule": group_rule(method),
    }
    inputs = [truth_ref.key, *factory.inputs(method, base_key)]
    key = content_key(SCORES_STAGE, stage_config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        truth = load_ground_truth(store, truth_ref)
        log.info("%s: scoring %s", truth.name, method)
        result = score_subsets(
            factory.build(method, base_key),
            truth.pool,
            truth.targets,
            truth.labels.subset_members,
            method,
        )
        lds = lds_of(result.group_scores, truth.labels.losses)
        n_targets, n_subsets = result.group_scores.shape
        pq.write_table(
            pa.table(
                {
                    "target_id": np.repeat(truth.labels.target_ids, n_subsets),
                    "subset_id": np.tile(np.arange(n_subsets, dtype=np.int64), n_targets),
                    "score": result.group_scores.reshape(-1),
                }
            ),
            staging / "group_scores.parquet",
        )
        pq.write_table(
            pa.table({"target_id": list(truth.labels.target_ids), "lds": lds.per_target}),
            staging / "lds.parquet",
        )
        return {
            "eval_set": truth.name,
            "method": method,
            "lds": lds.mean,
            "stderr": lds.stderr,
            "n_targets": n_targets,
            "n_subsets": n_subsets,
            "group_rule": group_rule(method),
            "fit_seconds": round(result.fit_seconds, 3),
            "score_seconds": round(result.score_seconds, 3),
            "n_train": result.n_train,
            "storage_floats_per_example": result.storage_floats_per_example,
        }

    return store.build(SCORES_STAGE, key, config=stage_config, inputs=inputs, writer=writer)


def lds_row(scores_ref: ArtifactRef) -> dict[str, Any]:
    """The LDS table row of an ``lds-scores`` artifact (read from its manifest)."""
    names = (
        "eval_set", "method", "lds", "stderr", "n_targets", "n_subsets", "group_rule",
        "fit_seconds", "score_seconds", "n_train", "storage_floats_per_example",
    )  # fmt: skip
    return {name: scores_ref.metadata[name] for name in names}


# ---- classification --------------------------------------------------------------------------


def classification_task(
    store: ArtifactStore, task: str, config: EvaluationConfig
) -> tuple[ClassificationTask, list[str]]:
    """The classification test ``task`` and the keys of the datasets it reads."""
    per_class, n_queries, seed = (
        config.classification_pool_per_class,
        config.classification_queries,
        config.sampling.seed,
    )
    if task == "hh_chosen_rejected":
        corpus = labels.load_corpus(store, resolve_eval_dataset(store, "hh_rlhf_harmless"))
        examples = list(corpus.examples.values())
        built = balanced_task(
            task, examples, [e.group or "" for e in examples], per_class, n_queries, seed
        )
        return built, [corpus.key]
    if task == "p3_task":
        corpus = labels.load_corpus(store, resolve_eval_dataset(store, "p3"))
        examples = list(corpus.examples.values())
        tasks = [p3_task(e.group or "") for e in examples]
        kept = set(classes_with_enough_examples(tasks, per_class, n_queries))
        pairs = [(e, t) for e, t in zip(examples, tasks, strict=True) if t in kept]
        built = balanced_task(
            task, [e for e, _ in pairs], [t for _, t in pairs], per_class, n_queries, seed
        )
        return built, [corpus.key]
    if task == "source":
        examples, names, keys = [], [], []
        for name in SOURCE_TASK_SETS:
            corpus = labels.load_corpus(store, resolve_eval_dataset(store, name))
            examples += list(corpus.examples.values())
            names += [name] * len(corpus.examples)
            keys.append(corpus.key)
        return balanced_task(task, examples, names, per_class, n_queries, seed), keys
    raise ValueError(f"classification task {task!r} is unknown")


def classify(
    store: ArtifactStore,
    task: str,
    method: str,
    config: EvaluationConfig,
    factory: MethodFactory,
    base_key: str,
) -> ArtifactRef:
    """The ``classification-scores`` artifact of ``method`` on test ``task``:
    ``predictions.parquet`` (query, its class, the retrieved example, its class)."""
    stage_config = {
        "task": task,
        "method": method,
        "settings": factory.settings(method),
        "per_class": config.classification_pool_per_class,
        "n_queries": config.classification_queries,
        "seed": config.sampling.seed,
    }
    built, dataset_keys = classification_task(store, task, config)
    inputs = [*dataset_keys, *factory.inputs(method, base_key)]
    key = content_key(CLASSIFICATION_STAGE, stage_config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        log.info("classification %s: %s", task, method)
        attributor = factory.build(method, base_key)
        attributor.fit(list(built.pool))
        scores = attributor.score(list(built.queries))
        top = scores.argmax(axis=1)
        pq.write_table(
            pa.table(
                {
                    "query_id": [e.example_id for e in built.queries],
                    "query_class": list(built.query_labels),
                    "retrieved_id": [built.pool[i].example_id for i in top],
                    "retrieved_class": [built.pool_labels[i] for i in top],
                }
            ),
            staging / "predictions.parquet",
        )
        return {
            "task": task,
            "method": method,
            "accuracy": top1_accuracy(scores, built.query_labels, built.pool_labels),
            "chance": built.chance_accuracy(),
            "n_queries": len(built.queries),
            "n_pool": len(built.pool),
        }

    return store.build(CLASSIFICATION_STAGE, key, config=stage_config, inputs=inputs, writer=writer)


# ---- data selection --------------------------------------------------------------------------


def merged_corpus(corpora: Sequence[labels.Corpus]) -> labels.Corpus:
    """One corpus over several datasets; ``ValueError`` when an id names different content."""
    examples: dict[str, Example] = {}
    hashes: dict[str, str] = {}
    for corpus in corpora:
        for example_id, example in corpus.examples.items():
            digest = corpus.content_hashes[example_id]
            if hashes.setdefault(example_id, digest) != digest:
                raise ValueError(f"example id {example_id!r} names different content in two sets")
            examples[example_id] = example
    key = hashlib.sha256("+".join(c.key for c in corpora).encode()).hexdigest()
    return labels.Corpus(key, examples, hashes)


def selection_candidates(
    store: ArtifactStore, config: EvaluationConfig
) -> tuple[labels.Corpus, list[str], list[str]]:
    """``(corpus, candidate_ids, target_ids)``: the target set's test examples and a seeded
    draw of ``selection_pool_per_set`` from each pool set's train pool (never a test example)."""
    corpora, candidates = [], []
    target_ids: list[str] = []
    for name in dict.fromkeys([config.selection_target, *config.selection_pool_sets]):
        corpus = labels.load_corpus(store, resolve_eval_dataset(store, name))
        pool_ids, test_ids = pool_and_test(corpus, config)
        if name == config.selection_target:
            target_ids = list(test_ids)
        if name in config.selection_pool_sets:
            n = min(config.selection_pool_per_set, len(pool_ids))
            picked = random_selection(len(pool_ids), n, config.sampling.seed)
            candidates += [pool_ids[i] for i in picked]
        corpora.append(corpus)
    return merged_corpus(corpora), sorted(set(candidates)), target_ids


def select_and_finetune(
    store: ArtifactStore,
    selection: str,
    config: EvaluationConfig,
    factory: MethodFactory,
    base_ref: ArtifactRef,
) -> ArtifactRef:
    """The ``data-selection`` artifact of ``selection`` (a method, or ``"random"``): the N chosen
    candidates (``selected.parquet``), fine-tuned on as one label unit; metadata: the target
    task's mean loss (for ``random``: the mean over ``selection_random_draws`` draws, and the base
    LM's loss before any fine-tune)."""
    stage_config = {
        "selection": selection,
        "settings": {} if selection == "random" else factory.settings(selection),
        "target": config.selection_target,
        "pool_sets": list(config.selection_pool_sets),
        "per_set": config.selection_pool_per_set,
        "n": config.selection_size,
        "draws": config.selection_random_draws if selection == "random" else 1,
        "sampling": config.sampling.to_dict(),
        "finetune": config.finetune.to_dict(),
    }
    corpus, candidate_ids, target_ids = selection_candidates(store, config)
    method_inputs = [] if selection == "random" else factory.inputs(selection, base_ref.key)
    inputs = [corpus.key, base_ref.key, *method_inputs]
    key = content_key(SELECTION_STAGE, stage_config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        log.info("data selection for %s: %s", config.selection_target, selection)
        candidates = [corpus.examples[i] for i in candidate_ids]
        targets = [corpus.examples[i] for i in target_ids]
        if selection == "random":
            chosen = [
                random_selection(len(candidates), config.selection_size, seed)
                for seed in range(config.selection_random_draws)
            ]
        else:
            attributor = factory.build(selection, base_ref.key)
            attributor.fit(candidates)
            chosen = [select_top_n(attributor.score(targets), config.selection_size)]
        losses = []
        for draw, indices in enumerate(chosen):
            members = tuple(sorted(candidate_ids[i] for i in indices))
            split = Split(draw, tuple(sorted(target_ids)), tuple(candidate_ids), (members,))
            (outcome,) = labels.run_label_units(store, corpus, base_ref, [split], config.finetune)
            unit = read_table(store, outcome.ref, labels.UNIT_FILE, "subset_losses")
            losses.append(float(np.mean(unit.column("loss").to_numpy())))
        pq.write_table(
            pa.table(
                {
                    "draw": np.repeat(
                        np.arange(len(chosen), dtype=np.int64), config.selection_size
                    ),
                    "example_id": [candidate_ids[i] for indices in chosen for i in indices],
                }
            ),
            staging / "selected.parquet",
        )
        metadata = {
            "target": config.selection_target,
            "selection": selection,
            "n": config.selection_size,
            "target_loss": float(np.mean(losses)),
            "draws": len(chosen),
        }
        if selection == "random":
            from airrep_core.finetune import SubsetFinetuner

            finetuner = SubsetFinetuner(store.local_dir(base_ref), config.finetune)
            metadata["base_loss"] = float(np.mean(finetuner.target_losses(targets)))
        return metadata

    return store.build(SELECTION_STAGE, key, config=stage_config, inputs=inputs, writer=writer)


# ---- the whole evaluation --------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    """What ``evaluate`` returns: the report artifact and its tables."""

    report: ArtifactRef
    tables: ReportTables

    @property
    def markdown(self) -> str:
        """The report's Markdown (the content of its ``report.md``)."""
        return render_markdown(self.tables)


def used_sets(config: EvaluationConfig) -> list[str]:
    """Every evaluation set ``config`` reads (LDS, classification, selection, transfer)."""
    names = [*config.eval_sets, *config.transfer_eval_sets]
    if config.selection_methods:
        names += [config.selection_target, *config.selection_pool_sets]
    if "hh_chosen_rejected" in config.classification_tasks:
        names.append("hh_rlhf_harmless")
    if "p3_task" in config.classification_tasks:
        names.append("p3")
    if "source" in config.classification_tasks:
        names += SOURCE_TASK_SETS
    return list(dict.fromkeys(names))


def _lds_rows(
    store: ArtifactStore,
    truth_refs: dict[str, ArtifactRef],
    methods: Sequence[str],
    factory: MethodFactory,
) -> tuple[list[dict[str, Any]], list[str]]:
    rows, keys = [], []
    for truth_ref in truth_refs.values():
        for method in methods:
            ref = score_method(store, method, truth_ref, factory)
            rows.append(lds_row(ref))
            keys.append(ref.key)
        ceiling = ceiling_row(load_ground_truth(store, truth_ref))
        if ceiling is not None:
            rows.append(ceiling)
    return rows, keys


def evaluate(
    store: ArtifactStore,
    config: EvaluationConfig,
    encoder_ref: ArtifactRef,
    base_ref: ArtifactRef,
    transfer_base_ref: ArtifactRef | None = None,
    command: str = "",
    progress: labels.UnitProgress | None = None,
) -> EvaluationResult:
    """Every evaluation of ``config`` and the ``evaluation-report`` artifact (all cached).

    Args:
        encoder_ref: the AirRep encoder; its training dataset must share no example with any
            evaluation set (``check_held_out``).
        base_ref: the base LM of the ground truth (the one AirRep's labels came from).
        transfer_base_ref: another base LM for the cross-model transfer table (skipped if None).
        command: the command that reproduces the report (printed in it).
    """
    datasets = {name: resolve_eval_dataset(store, name) for name in used_sets(config)}
    corpora = {name: labels.load_corpus(store, d) for name, d in datasets.items()}
    check_held_out(store, encoder_ref.inputs[1], corpora)
    factory = MethodFactory(store, config, encoder_ref)
    truths = {
        name: build_ground_truth(store, name, datasets[name], base_ref, config, progress)
        for name in config.eval_sets
    }
    methods = config.method_list(config.methods)
    lds_rows, keys = _lds_rows(store, truths, methods, factory)
    keys += [t.key for t in truths.values()]

    classification_rows = []
    for task in config.classification_tasks:
        for method in config.method_list(config.classification_methods):
            ref = classify(store, task, method, config, factory, base_ref.key)
            classification_rows.append(dict(ref.metadata))
            keys.append(ref.key)

    selection_rows = []
    if config.selection_methods:
        random_ref = select_and_finetune(store, "random", config, factory, base_ref)
        base_loss = random_ref.metadata["base_loss"]
        for selection in ["random", *config.method_list(config.selection_methods)]:
            ref = select_and_finetune(store, selection, config, factory, base_ref)
            selection_rows.append({**ref.metadata, "base_loss": base_loss})
            keys.append(ref.key)

    transfer_rows: list[dict[str, Any]] = []
    if transfer_base_ref is not None and config.transfer_eval_sets:
        transfer_truths = {
            name: build_ground_truth(
                store, name, resolve_eval_dataset(store, name), transfer_base_ref, config, progress
            )
            for name in config.transfer_eval_sets
        }
        rows, transfer_keys = _lds_rows(
            store, transfer_truths, config.method_list(config.transfer_methods), factory
        )
        base_name = transfer_base_ref.metadata.get("model", transfer_base_ref.key[:12])
        transfer_rows = [{**row, "base": base_name} for row in rows]
        keys += transfer_keys + [t.key for t in transfer_truths.values()]

    notes = [
        f"AirRep encoder {encoder_ref.key[:12]} trained on dataset {encoder_ref.inputs[1][:12]}, "
        "which shares no example with any evaluation set (checked by content hash).",
        f"Ground truth: base LM {base_ref.metadata.get('model', base_ref.key[:12])}; each set's "
        f"pool and test examples share no prompt; K={config.sampling.n_subsets} subsets of "
        f"{config.sampling.subset_size}, {config.sampling.n_test} test examples.",
        "Group score: AirRep uses attention pooling (airrep) or the mean (airrep_mean); every "
        "other method sums its per-example scores.",
        "Time: fit (featurise the pool) + score (the test examples), summed over the sets, on "
        "this machine; for throughput at scale see benchmarks/attribution_speed.py.",
    ]
    tables = ReportTables(
        lds_rows, classification_rows, selection_rows, transfer_rows, command, tuple(notes)
    )
    report_config = {"evaluation": config.to_dict(), "command": command}
    report_inputs = [encoder_ref.key, base_ref.key, *sorted(set(keys))]
    report_key = content_key(REPORT_STAGE, report_config, report_inputs)
    report = store.build(
        REPORT_STAGE,
        report_key,
        config=report_config,
        inputs=report_inputs,
        writer=lambda staging: {"files": write_report(staging, tables)},
    )
    return EvaluationResult(report, tables)


# ---- the benchmark end to end ----------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """``run_bench``'s outcome: the report and the artifacts it rests on."""

    evaluation: EvaluationResult
    encoder_ref: ArtifactRef
    base_ref: ArtifactRef
    labels_key: str
    command: str


def bench_command(
    preset: str,
    eval_sets: Sequence[str] | None,
    root: str | None,
    transfer_sets: Sequence[str] | None = None,
) -> str:
    """The CLI command that reproduces a benchmark run."""
    parts = ["airrep", "bench", "lds", "--preset", preset]
    for name in eval_sets or ():
        parts += ["--eval-set", name]
    for name in transfer_sets or ():
        parts += ["--transfer-set", name]
    if root:
        parts += ["--root", root]
    return shlex.join(parts)


def run_bench(
    store: ArtifactStore,
    preset: str,
    eval_sets: Sequence[str] | None = None,
    root: str | None = None,
    progress: Callable[[str], None] | None = None,
    transfer_sets: Sequence[str] | None = None,
) -> BenchResult:
    """The LDS benchmark at ``preset`` end to end, every step cached in ``store``:
    P3 split by template, labels on ``flan_p3_train`` (``LabelsConfig.preset``), the AirRep encoder
    (``EncoderStageConfig.preset``), the transfer base LM when there are transfer sets (the
    preset's, or ``transfer_sets``), then ``evaluate``."""
    say = progress or log.info
    config = EvaluationConfig.preset(preset)
    if eval_sets:
        config = config.replace(eval_sets=tuple(eval_sets))
    if transfer_sets:
        config = config.replace(transfer_eval_sets=tuple(transfer_sets))
    command = bench_command(preset, eval_sets, root, transfer_sets)
    say("importing P3 split by template (train / held out)")
    p3_train, _ = import_p3_holdout(store)
    labels_config = LabelsConfig.preset(preset)
    say(f"labels for AirRep on {P3_TRAIN_DATASET} ({preset})")
    labels_result = labels.generate_labels(store, p3_train, labels_config)
    labels_ref = store.get(labels.LABELS_STAGE, labels_result.labels_key)
    say("training the AirRep encoder")
    encoder_ref = train_encoder_artifact(
        store, p3_train.ref, labels_ref, EncoderStageConfig.preset(preset)
    )
    base_ref = store.get(labels.BASE_STAGE, labels_result.base_key)
    transfer_base_ref = None
    if config.transfer_eval_sets:
        say(f"transfer base LM ({config.transfer_base.architecture})")
        corpus = labels.load_corpus(store, p3_train)
        transfer_base_ref = labels.build_base(store, corpus, config.transfer_base)
    say("evaluating")
    result = evaluate(store, config, encoder_ref, base_ref, transfer_base_ref, command)
    return BenchResult(result, encoder_ref, base_ref, labels_result.labels_key, command)
