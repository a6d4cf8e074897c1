"""The teacher stage over the artifact store (DESIGN.md §2, "Label-efficient recipe").

Stages and keys (``content_key(stage, config, inputs)``):

- ``teacher-method-scores``: one teacher method's scores of the drawn (target, candidate) pairs:
  ``scores.parquet`` (``teacher_scores`` table). Inputs: the corpus version, the labels (whose
  held-out splits are kept out of the draw) and, for gradient methods, the base LM θ₀. One unit
  per method, so a killed stage resumes after the methods already scored.
- ``teacher-scores``: every method's scores and the fused teacher (``method = "fused"``), the
  table the encoder's teacher pre-training reads.

The teacher reads only the label corpus, minus every example of the held-out label splits; it
never sees an evaluation set (the evaluation refuses an encoder whose corpus shares an example
with one, ``tasks.ground_truth.check_held_out``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.config.teacher import TeacherConfig
from airrep_core.encoder.head_training import split_example_ids
from airrep_core.encoder.teacher import TeacherScores, draw_teacher_examples, fuse_scores
from airrep_core.methods.registry import build_method, method_spec
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from storage.tables import read_table, write_table
from tasks import labels
from tasks.caching import store_task
from tasks.corpus import Corpus, load_corpus
from tasks.monitoring import Progress, publish_link, run_logger
from tasks.references import StepRef, open_store

TEACHER_STAGE = "teacher-scores"
TEACHER_METHOD_STAGE = "teacher-method-scores"
SCORES_FILE = "scores.parquet"
FUSED = "fused"

log = logging.getLogger("airrep.teacher")


def held_out_ids(store: ArtifactStore, labels_ref: ArtifactRef, validation_splits: int) -> set[str]:
    """Every target and subset member of the last ``validation_splits`` splits of the labels."""
    splits = labels.load_split_labels(store, labels_ref)
    held = splits[len(splits) - validation_splits :] if validation_splits else []
    return set(split_example_ids(held))


def build_teacher(
    store: ArtifactStore,
    dataset: ArtifactRef,
    labels_ref: ArtifactRef,
    base_ref: ArtifactRef,
    config: TeacherConfig,
    validation_splits: int,
    progress: Callable[[int, int], None] | None = None,
) -> ArtifactRef:
    """The ``teacher-scores`` artifact (built when absent, one method unit at a time).

    Args:
        dataset: the label corpus (the dataset version the labels were made from).
        labels_ref: the labels; their last ``validation_splits`` splits are excluded.
        base_ref: the base LM θ₀ (read by gradient teachers only).
        progress: called with (methods done, methods) after each method unit.
    """
    stage_config = {"teacher": config.to_dict(), "validation_splits": validation_splits}
    inputs = [dataset.key, labels_ref.key, base_ref.key]
    key = content_key(TEACHER_STAGE, stage_config, inputs)
    if store.exists(TEACHER_STAGE, key):
        return store.get(TEACHER_STAGE, key)
    corpus = load_corpus(store, dataset)
    excluded = held_out_ids(store, labels_ref, validation_splits)
    target_ids, candidate_ids = draw_teacher_examples(
        corpus.examples, excluded, config.n_targets, config.n_candidates, config.seed
    )
    units = []
    for done, method in enumerate(config.methods):
        units.append(
            _method_unit(
                store,
                corpus,
                base_ref,
                config,
                method,
                target_ids,
                candidate_ids,
                inputs,
                validation_splits,
            )
        )
        if progress is not None:
            progress(done + 1, len(config.methods))

    def writer(staging: Path) -> dict[str, Any]:
        per_method = {
            method: _unit_matrix(store, unit, target_ids, candidate_ids)
            for method, unit in zip(config.methods, units, strict=True)
        }
        fused = fuse_scores(per_method, config.method_weights())
        tables = [_long_table(m, target_ids, candidate_ids, s) for m, s in per_method.items()]
        tables.append(_long_table(FUSED, target_ids, candidate_ids, fused))
        rows = write_table(staging / SCORES_FILE, pa.concat_tables(tables), "teacher_scores")
        return {
            "methods": list(config.methods),
            "n_targets": len(target_ids),
            "n_candidates": len(candidate_ids),
            "excluded_examples": len(excluded),
            "rows": rows,
        }

    return store.build(TEACHER_STAGE, key, config=stage_config, inputs=inputs, writer=writer)


def load_teacher(store: ArtifactStore, ref: ArtifactRef, method: str = FUSED) -> TeacherScores:
    """The teacher's ``(n_targets, n_candidates)`` scores of ``method`` (default: fused)."""
    table = read_table(store, ref, SCORES_FILE, "teacher_scores")
    rows = table.filter(pc.equal(table["method"], method))
    if rows.num_rows == 0:
        raise ValueError(f"teacher artifact {ref.uri} has no scores of method {method!r}")
    targets = sorted(set(rows["target_id"].to_pylist()))
    candidates = sorted(set(rows["candidate_id"].to_pylist()))
    return TeacherScores(
        tuple(targets), tuple(candidates), _matrix(rows, targets, candidates, ref.uri)
    )


def _method_unit(
    store: ArtifactStore,
    corpus: Corpus,
    base_ref: ArtifactRef,
    config: TeacherConfig,
    method: str,
    target_ids: list[str],
    candidate_ids: list[str],
    inputs: list[str],
    validation_splits: int,
) -> ArtifactRef:
    """One method's ``teacher-method-scores`` unit (built when absent)."""
    needs_lm = method_spec(method).needs == "base_lm"
    unit_inputs = inputs if needs_lm else inputs[:2]
    unit_config = {
        "method": method,
        "baseline_preset": config.baseline_preset,
        # the method's settings with "auto" device/precision resolved (part of the key)
        "settings": resolved(
            method_spec(method).config_class.preset(config.baseline_preset)
        ).to_dict(),
        "draw": {
            "n_targets": config.n_targets,
            "n_candidates": config.n_candidates,
            "seed": config.seed,
        },
        "validation_splits": validation_splits,
    }
    key = content_key(TEACHER_METHOD_STAGE, unit_config, unit_inputs)

    def writer(staging: Path) -> dict[str, Any]:
        model = tokenizer = None
        if needs_lm:
            from airrep_core.lm.loading import load_causal_lm

            model, tokenizer = load_causal_lm(store.local_dir(base_ref))
        attributor = build_method(method, config.baseline_preset, model=model, tokenizer=tokenizer)
        attributor.fit([corpus.examples[i] for i in candidate_ids])
        scores = attributor.score([corpus.examples[i] for i in target_ids])
        log.info("teacher %s: %d x %d pairs scored", method, *scores.shape)
        table = _long_table(method, target_ids, candidate_ids, scores)
        return {"rows": write_table(staging / SCORES_FILE, table, "teacher_scores")}

    return store.build(
        TEACHER_METHOD_STAGE, key, config=unit_config, inputs=unit_inputs, writer=writer
    )


def _unit_matrix(
    store: ArtifactStore, unit: ArtifactRef, target_ids: list[str], candidate_ids: list[str]
) -> np.ndarray:
    table = read_table(store, unit, SCORES_FILE, "teacher_scores")
    return _matrix(table, target_ids, candidate_ids, unit.uri)


def _matrix(table: pa.Table, targets: list[str], candidates: list[str], uri: str) -> np.ndarray:
    """``(len(targets), len(candidates))`` float32 from a long ``teacher_scores`` table."""
    t_index = {t: k for k, t in enumerate(targets)}
    c_index = {c: k for k, c in enumerate(candidates)}
    matrix = np.full((len(targets), len(candidates)), np.nan, dtype=np.float32)
    rows = [t_index[t] for t in table["target_id"].to_pylist()]
    cols = [c_index[c] for c in table["candidate_id"].to_pylist()]
    matrix[rows, cols] = table["score"].to_numpy()
    if np.isnan(matrix).any():
        raise ValueError(f"{uri}: teacher scores miss {int(np.isnan(matrix).sum())} pairs")
    return matrix


def _long_table(
    method: str, target_ids: list[str], candidate_ids: list[str], scores: np.ndarray
) -> pa.Table:
    n_t, n_c = len(target_ids), len(candidate_ids)
    return pa.table(
        {
            "target_id": np.repeat(np.asarray(target_ids, dtype=object), n_c),
            "candidate_id": np.tile(np.asarray(candidate_ids, dtype=object), n_t),
            "method": [method] * (n_t * n_c),
            "score": np.asarray(scores, dtype=np.float32).reshape(-1),
        }
    )


@store_task(
    "teacher-scores",
    "teacher-{config.teacher.n_targets}x{config.teacher.n_candidates}",
    gpu=True,
    timeout_h=12,
)
def teacher_scores_task(
    root: str, dataset: StepRef, labels: StepRef, base: StepRef, config: EncoderStageConfig
) -> StepRef:
    """The teacher's scores of (target, candidate) pairs of the label corpus, one unit per
    teacher method (a killed run resumes after the finished methods)."""
    store = open_store(root)
    teacher = config.teacher
    progress = Progress(f"teacher scores: {' + '.join(teacher.methods)}")
    ref = build_teacher(
        store,
        dataset.resolve(),
        labels.resolve(),
        base.resolve(),
        teacher,
        config.validation_splits,
        progress=progress.update,
    )
    step = StepRef.of(store, ref, **ref.metadata)
    run_logger().info("teacher %s: %s", ref.key[:12], ref.metadata)
    publish_link(step, "teacher scores (Parquet: target, candidate, method, score)")
    return step
