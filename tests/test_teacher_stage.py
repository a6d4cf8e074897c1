"""The teacher stage and the label-efficient encoder over the store (tiny preset, real P3 data,
real base LM): reads only the label corpus minus the held-out splits, cached, resumes after a
failure between its method units, and feeds the encoder stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tasks.teacher as teacher_stage
from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.config.teacher import TeacherConfig
from storage.artifacts import ArtifactStore
from storage.datasets import import_dataset
from storage.sample_data import sample_data_dir
from tasks import labels
from tasks.corpus import load_corpus
from tasks.encoder import HISTORY_FILE, load_encoder, train_encoder_artifact
from tasks.teacher import (
    FUSED,
    TEACHER_METHOD_STAGE,
    build_teacher,
    held_out_ids,
    load_teacher,
)

P3_FILE_STRIDE = 40
LABELS = labels.LabelsConfig.preset("tiny")
TEACHER = TeacherConfig.preset("tiny", methods=("bm25", "logra"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory):
    """A store with P3 (8 templates) as the label corpus, Dolly beside it, and tiny labels."""
    store = ArtifactStore(f"file://{tmp_path_factory.mktemp('teacher')}")
    files = sorted((sample_data_dir() / "flan_p3").glob("*.jsonl"))[::P3_FILE_STRIDE]
    corpus = import_dataset(store, files, "p3", skip_invalid=True)
    dolly = import_dataset(store, [sample_data_dir() / "dolly" / "dolly_6400.jsonl"], "dolly")
    result = labels.generate_labels(store, corpus, LABELS)
    return store, corpus, dolly, result


def refs(labelled):
    store, corpus, _, result = labelled
    labels_ref = store.get(labels.LABELS_STAGE, result.labels_key)
    base_ref = store.get(labels.BASE_STAGE, result.base_key)
    return store, corpus.ref, labels_ref, base_ref


def test_teacher_reads_only_the_label_corpus_minus_the_held_out_splits(labelled, monkeypatch):
    store, corpus_ref, labels_ref, base_ref = refs(labelled)
    dolly = labelled[2]
    read = []
    original = load_corpus
    monkeypatch.setattr(
        teacher_stage, "load_corpus", lambda s, d: read.append(d.key) or original(s, d)
    )
    ref = build_teacher(store, corpus_ref, labels_ref, base_ref, TEACHER, validation_splits=1)
    # Every dataset the stage read is the label corpus: never an evaluation set.
    assert read and set(read) == {corpus_ref.key}
    scores = load_teacher(store, ref)
    ids = {*scores.target_ids, *scores.candidate_ids}
    corpus = original(store, corpus_ref)
    assert ids <= set(corpus.examples)
    assert not ids & held_out_ids(store, labels_ref, 1)
    assert not {corpus.content_hashes[i] for i in ids} & set(
        original(store, dolly).content_hashes.values()
    )
    assert not set(scores.target_ids) & set(scores.candidate_ids)
    assert scores.scores.shape == (TEACHER.n_targets, TEACHER.n_candidates)
    # The fused score is the sum of the methods' per-target z-scores.
    per_method = [load_teacher(store, ref, m).scores.astype(np.float64) for m in TEACHER.methods]
    expected = sum((s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True) for s in per_method)
    np.testing.assert_allclose(scores.scores, expected, rtol=1e-4, atol=1e-4)


def test_teacher_is_cached_and_resumes_after_the_finished_methods(labelled, monkeypatch):
    store, corpus_ref, labels_ref, base_ref = refs(labelled)
    config = TEACHER.replace(seed=7)  # a fresh artifact
    built: list[str] = []
    original = teacher_stage.build_method

    def failing_on_logra(method, *args, **kwargs):
        built.append(method)
        if method == "logra":
            raise RuntimeError("killed while scoring logra")
        return original(method, *args, **kwargs)

    monkeypatch.setattr(teacher_stage, "build_method", failing_on_logra)
    with pytest.raises(RuntimeError, match="killed"):
        build_teacher(store, corpus_ref, labels_ref, base_ref, config, validation_splits=1)
    assert built == ["bm25", "logra"]
    assert len(store.list(TEACHER_METHOD_STAGE)) >= 1
    assert not any(
        r.config.get("draw", {}).get("seed") == 7 and r.config["method"] == "logra"
        for r in store.list(TEACHER_METHOD_STAGE)
    )

    built.clear()
    monkeypatch.setattr(
        teacher_stage,
        "build_method",
        lambda m, *a, **k: built.append(m) or original(m, *a, **k),
    )
    ref = build_teacher(store, corpus_ref, labels_ref, base_ref, config, validation_splits=1)
    assert built == ["logra"]  # bm25's unit survived the failure
    built.clear()
    again = build_teacher(store, corpus_ref, labels_ref, base_ref, config, validation_splits=1)
    assert (again.key, built) == (ref.key, [])
    assert load_teacher(store, ref, FUSED).scores.shape == (config.n_targets, config.n_candidates)


def test_efficient_encoder_trains_on_teacher_then_labels(labelled):
    store, corpus_ref, labels_ref, base_ref = refs(labelled)
    stage = EncoderStageConfig.preset(
        "tiny",
        train={
            "recipe": "efficient",
            "projection_init": "identity",
            "normalize": True,
            "teacher_steps": 4,
            "steps": 4,
            "validate_every": 2,
            "learning_rate": 1e-3,
        },
        teacher=TEACHER.to_dict(),
    )
    with pytest.raises(ValueError, match="teacher-scores"):
        train_encoder_artifact(store, corpus_ref, labels_ref, stage)
    teacher_ref = build_teacher(
        store, corpus_ref, labels_ref, base_ref, stage.teacher, stage.validation_splits
    )
    # The recipe's hybrid reads target-LM tokens and its token bag the LM's embeddings: the
    # base LM is an input.
    with pytest.raises(ValueError, match="needs the base LM"):
        train_encoder_artifact(store, corpus_ref, labels_ref, stage, teacher_ref=teacher_ref)
    ref = train_encoder_artifact(
        store, corpus_ref, labels_ref, stage, teacher_ref=teacher_ref, base_ref=base_ref
    )
    assert teacher_ref.key in ref.inputs and base_ref.key in ref.inputs
    history = __import__("json").loads(store.read_bytes(ref, HISTORY_FILE))
    phases = [r.get("phase") for r in history]
    assert phases[0] == "start" and phases.count("teacher") == 4 and phases.count("labels") == 4
    encoder = load_encoder(store, ref)
    assert encoder.normalize and encoder.projection is not None
    assert encoder.text_view == "response"
    assert (encoder.lexical_tokenizer is not None) == (encoder.lexical_weight > 0)
    assert ref.metadata["best_step"] in {r["step"] for r in history if "validation" in r}
    assert Path(store.local_dir(ref)).is_dir()
