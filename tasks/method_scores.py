"""Scoring the methods over the artifact store (DESIGN.md §3): LDS and classification.

Stages and keys (``content_key(stage, config, inputs)``):

- ``lds-scores``: one method on one ground truth (``tasks.ground_truth``): group scores, LDS per
  target, timing and storage in the metadata. Inputs: the ground truth and what the method reads
  (the encoder for AirRep, the base LM for the model methods), so a rerun only loads them.
- ``classification-scores``: one method on one classification test (top-1 same class).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.evaluation.classification import (
    ClassificationTask,
    balanced_task,
    classes_with_enough_examples,
    top1_accuracy,
)
from airrep_core.evaluation.eval_sets import p3_task
from airrep_core.evaluation.lds_eval import lds_of, score_subsets
from airrep_core.methods.interface import Attributor
from airrep_core.methods.registry import build_method, method_spec
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from tasks import labels
from tasks.caching import store_task
from tasks.corpus import load_corpus
from tasks.encoder import load_encoder
from tasks.ground_truth import (
    load_ground_truth,
    resolve_eval_dataset,
)
from tasks.monitoring import run_logger
from tasks.references import StepRef, open_store

SCORES_STAGE = "lds-scores"
CLASSIFICATION_STAGE = "classification-scores"

SOURCE_TASK_SETS = ("p3", "dolly", "gsm8k", "hh_rlhf_harmless")
"""The mixed pool of the ``source`` classification test (label = the evaluation set)."""


log = logging.getLogger("airrep.evaluation")


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
        self.config = resolved(config)
        self.encoder_ref = encoder_ref
        self._encoder = None
        self._lm: tuple[str, Any, Any] | None = None

    def settings(self, method: str) -> dict[str, Any]:
        """The method's settings (part of its artifacts' keys)."""
        spec = method_spec(method)
        if spec.config_class is None:  # AirRep: the evaluation config's airrep_* fields
            return {
                "pooling": "attention" if method == "airrep" else "mean",
                "batch_size": self.config.airrep_batch_size,
                "precision": self.config.airrep_precision,
            }
        return resolved(spec.config_class.preset(self.config.baseline_preset)).to_dict()

    def inputs(self, method: str, base_key: str) -> list[str]:
        """Artifact keys the method's scores depend on besides the data."""
        needs = method_spec(method).needs
        if needs == "encoder":
            return [self.encoder_ref.key]
        return [base_key] if needs == "base_lm" else []

    def build(self, method: str, base_key: str) -> Attributor:
        """A fresh attributor of ``method`` (model methods on the base LM ``base_key``)."""
        needs = method_spec(method).needs
        extra: dict[str, Any] = {}
        if needs == "encoder":
            if self._encoder is None:
                self._encoder = load_encoder(self.store, self.encoder_ref)
            extra = {"encoder": self._encoder, "settings": self.settings(method)}
        elif needs == "base_lm":
            if self._lm is None or self._lm[0] != base_key:
                from airrep_core.lm.loading import load_causal_lm

                base_dir = self.store.local_dir(self.store.get(labels.BASE_STAGE, base_key))
                model, tokenizer = load_causal_lm(base_dir)
                self._lm = (base_key, model, tokenizer)
            extra = {"model": self._lm[1], "tokenizer": self._lm[2]}
        return build_method(method, self.config.baseline_preset, **extra)


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
        "group_rule": method_spec(method).group_rule,
    }
    inputs = [truth_ref.key, *factory.inputs(method, base_key)]
    key = content_key(SCORES_STAGE, stage_config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        truth = load_ground_truth(store, truth_ref)
        log.info("%s: scoring %s", truth.name, method)
        attributor = factory.build(method, base_key)
        result = score_subsets(
            attributor,
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
            "group_rule": attributor.group_rule,
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
        corpus = load_corpus(store, resolve_eval_dataset(store, "hh_rlhf_harmless"))
        examples = list(corpus.examples.values())
        built = balanced_task(
            task, examples, [e.group or "" for e in examples], per_class, n_queries, seed
        )
        return built, [corpus.key]
    if task == "p3_task":
        corpus = load_corpus(store, resolve_eval_dataset(store, "p3"))
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
            corpus = load_corpus(store, resolve_eval_dataset(store, name))
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
    test: tuple[ClassificationTask, list[str]],
) -> ArtifactRef:
    """The ``classification-scores`` artifact of ``method`` on test ``task``:
    ``predictions.parquet`` (query, its class, the retrieved example, its class). ``test``:
    ``classification_task(store, task, config)``, built once for every method."""
    stage_config = {
        "task": task,
        "method": method,
        "settings": factory.settings(method),
        "per_class": config.classification_pool_per_class,
        "n_queries": config.classification_queries,
        "seed": config.sampling.seed,
    }
    built, dataset_keys = test
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


@store_task("score-method", "score-{method}-{truth.summary[eval_set]}")
def score_method_task(
    root: str, method: str, truth: StepRef, encoder: StepRef, config: EvaluationConfig
) -> StepRef:
    """``method``'s group scores and LDS against one ground truth."""
    store = open_store(root)
    factory = MethodFactory(store, config, encoder.resolve())
    ref = score_method(store, method, truth.resolve(), factory)
    row = lds_row(ref)
    run_logger().info(
        "%s on %s: LDS %.4f ± %.4f", method, row["eval_set"], row["lds"], row["stderr"]
    )
    return StepRef.of(store, ref, **row)


def classifications(
    store: ArtifactStore, config: EvaluationConfig, factory: MethodFactory, base_ref: ArtifactRef
) -> list[ArtifactRef]:
    """The ``classification-scores`` artifact of every (test, method) of ``config`` (each test
    built once: its sets are read once, not per method)."""
    refs = []
    for task in config.classification_tasks:
        test = classification_task(store, task, config)
        refs += [
            classify(store, task, method, config, factory, base_ref.key, test)
            for method in config.method_list(config.classification_methods)
        ]
    return refs


def factory_step(
    root: str,
    encoder: StepRef,
    base: StepRef,
    config: EvaluationConfig,
    step: Callable[..., list[ArtifactRef]],
) -> list[StepRef]:
    """Run a step of the evaluation that needs the method factory (``classifications``,
    ``data_selection.selections``) over the store; its artifacts as references."""
    store = open_store(root)
    factory = MethodFactory(store, config, encoder.resolve())
    refs = step(store, config, factory, base.resolve())
    for ref in refs:
        run_logger().info("%s: %s", step.__name__, ref.metadata)
    return [StepRef.of(store, ref, **ref.metadata) for ref in refs]


@store_task("classification", "classify-{config.classification_tasks}")
def classify_task(
    root: str, encoder: StepRef, base: StepRef, config: EvaluationConfig
) -> list[StepRef]:
    """Every method's top-1 same-class accuracy on every classification test of ``config``."""
    return factory_step(root, encoder, base, config, classifications)
