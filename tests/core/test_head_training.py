"""The label-efficient recipe (airrep_core.encoder.head_training, airrep_core.encoder.teacher): the identity start
is the backbone, step 0 is a candidate, training on real labels improves held-out ranking, and
teacher pseudo-subsets are labelled like the teacher's summed scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from encoder_fixtures import unigram_label_set
from p3_fixtures import p3_examples

from airrep_core.config.baselines import Bm25Config
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.encoder.head_training import (
    TeacherBatches,
    choose_hybrid_weights,
    feature_splits,
    pooled_features,
    split_example_ids,
    train_projection,
    validation_lds,
)
from airrep_core.encoder.model import AirRepEncoder, init_projection
from airrep_core.encoder.scoring import group_scores
from airrep_core.encoder.teacher import TeacherScores, draw_teacher_examples, fuse_scores
from airrep_core.errors import ConfigError
from airrep_core.evaluation.metrics import lds
from airrep_core.methods import build_method
from airrep_core.methods.airrep import AirRepAttributor
from airrep_core.methods.interface import zscore_rows
from airrep_core.methods.lexical import Bm25Attributor

CONFIG = EncoderTrainConfig.preset(
    "tiny",
    recipe="efficient",
    projection_init="identity",
    normalize=True,
    max_length=128,
    max_prompt_words=256,
    targets_per_step=16,
    subsets_per_step=8,
    learning_rate=2e-3,
    warmup_steps=2,
    validate_every=10,
    validation_max_targets=16,
    teacher_steps=0,
    # The mechanics below read the paper's text; the response view has tests of its own.
    text_view="question_answer",
    lexical=Bm25Config().to_dict(),
    token_bag_weights=(),  # the token bag has tests of its own (test_token_bag.py)
)


@pytest.fixture(scope="module")
def minilm() -> AirRepEncoder:
    """The real offline MiniLM with an identity projection on normalised pooling."""
    return AirRepEncoder.from_backbone(
        CONFIG.encoder,
        max_length=CONFIG.max_length,
        projection_init="identity",
        normalize=True,
        max_prompt_words=CONFIG.max_prompt_words,
    )


@pytest.fixture(scope="module")
def label_features(minilm):
    splits, examples = unigram_label_set(n_splits=3, n_targets=16, n_subsets=12, subset_size=8)
    ids = split_example_ids(splits)
    features = pooled_features(minilm, examples, ids, CONFIG)
    row_of = {i: k for k, i in enumerate(ids)}
    return features, feature_splits(splits, row_of)


def test_identity_start_scores_exactly_like_the_untrained_encoder_baseline(minilm):
    examples = list(p3_examples(4))
    baseline = build_method("encoder", "tiny")  # MiniLM, cosine, max length 128
    baseline.fit(examples[4:])
    expected = baseline.score(examples[:4])
    embeddings = minilm.encode_examples(examples, batch_size=7)
    ours = embeddings[:4] @ embeddings[4:].T
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    # Features before the projection are the embeddings at the identity start.
    np.testing.assert_allclose(
        minilm.encode_token_ids(
            minilm.tokenize([minilm.example_text(e) for e in examples]), pooled_only=True
        ),
        embeddings,
        atol=1e-6,
    )


def test_projection_inits_and_recipe_rules():
    layer = torch.nn.Linear(5, 5)
    init_projection(layer, "identity", 0)
    assert torch.equal(layer.weight, torch.eye(5)) and not layer.bias.any()
    init_projection(layer, "random", 3)
    other = torch.nn.Linear(5, 5)
    init_projection(other, "random", 3)
    assert torch.equal(layer.weight, other.weight)
    with pytest.raises(ValueError, match="projection_init"):
        init_projection(layer, "zeros", 0)
    with pytest.raises(ConfigError, match="teacher_steps"):
        EncoderTrainConfig.preset("tiny", recipe="paper", teacher_steps=3)
    with pytest.raises(ConfigError, match="steps"):
        EncoderTrainConfig.preset("tiny", recipe="paper", steps=0)
    with pytest.raises(ConfigError, match="lexical_weights"):
        EncoderTrainConfig.preset("tiny", recipe="paper", lexical_weights=(1.0,))
    assert EncoderTrainConfig.preset("tiny", steps=0).steps == 0
    # The small presets default to the label-efficient recipe; the paper's stays selectable.
    for name in ("tiny", "mini"):
        assert EncoderTrainConfig.preset(name).recipe == "efficient"
        paper = EncoderTrainConfig.preset(name, recipe="paper")
        assert (paper.projection_init, paper.normalize, paper.teacher_steps) == ("random", False, 0)
    assert EncoderTrainConfig.preset("mini", recipe="paper").steps == 48
    assert EncoderTrainConfig.preset("paper").recipe == "paper"


def test_step_zero_is_the_start_and_scores_like_the_backbone(label_features):
    features, splits = label_features
    projection = torch.nn.Linear(features.shape[1], features.shape[1])
    init_projection(projection, "identity", 0)
    result = train_projection(
        projection, features, splits[:2], CONFIG.replace(steps=0), validation_splits=splits[2:]
    )
    assert result.best_step == 0
    assert torch.equal(projection.weight, torch.eye(features.shape[1]))
    held = splits[2]
    n = CONFIG.validation_max_targets
    backbone = group_scores(features[held.targets[:n]], features, held.membership, held.mask)
    assert result.best_validation["lds"] == pytest.approx(lds(backbone, held.losses[:, :n].T))


def test_training_on_labels_improves_held_out_ranking_and_keeps_the_best_step(label_features):
    features, splits = label_features
    projection = torch.nn.Linear(features.shape[1], features.shape[1])
    init_projection(projection, "identity", 0)
    x = torch.from_numpy(features)
    start = validation_lds(projection, x, splits[2:], CONFIG)
    result = train_projection(
        projection, features, splits[:2], CONFIG.replace(steps=60), validation_splits=splits[2:]
    )
    validated = [r for r in result.history if "validation" in r]
    assert [r["step"] for r in validated] == [0, 10, 20, 30, 40, 50, 60]
    best = max(validated, key=lambda r: r["validation"]["lds"])
    assert result.best_step == best["step"]  # the first of the best, restored at the end
    assert validation_lds(projection, x, splits[2:], CONFIG) == pytest.approx(
        best["validation"]["lds"]
    )
    assert result.best_validation["lds"] > start + 0.05
    losses = [r["loss"] for r in result.history if r.get("phase") == "labels"]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_anchor_decay_keeps_the_projection_near_its_start(label_features):
    features, splits = label_features
    drifts = []
    for decay in (0.0, 10.0):
        projection = torch.nn.Linear(features.shape[1], features.shape[1])
        init_projection(projection, "identity", 0)
        config = CONFIG.replace(steps=30, anchor_decay=decay, validate_every=30)
        train_projection(projection, features, splits[:2], config)
        drifts.append(float((projection.weight.detach() - torch.eye(features.shape[1])).norm()))
    assert drifts[1] < 0.5 * drifts[0]


def test_teacher_pseudo_subsets_are_labelled_by_the_summed_teacher_scores():
    rng = np.random.default_rng(0)
    teacher = TeacherScores(
        tuple(f"t{i}" for i in range(6)),
        tuple(f"c{i}" for i in range(30)),
        rng.normal(size=(6, 30)).astype(np.float32),
    )
    row_of = {i: k for k, i in enumerate([*teacher.target_ids, *teacher.candidate_ids])}
    batches = TeacherBatches(teacher, row_of)
    config = CONFIG.replace(targets_per_step=4, subsets_per_step=5, teacher_subset_size=7)
    targets, membership, mask, labels = batches.draw(np.random.default_rng(1), config)
    assert targets.shape == (4,) and membership.shape == (5, 7) and mask.all()
    assert all(len(set(row)) == 7 for row in membership)  # no repeats inside a pseudo-subset
    for t, target_row in enumerate(targets):
        summed = teacher.scores[target_row, membership - len(teacher.target_ids)].sum(axis=1)
        # Normalised like real labels: z-scores of the (negated) "loss" = of the summed scores.
        np.testing.assert_allclose(labels[t], scipy.stats.zscore(summed), atol=1e-5)


def test_fused_teacher_is_the_sum_of_per_target_zscores_and_draws_are_disjoint():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 9)), 100 * rng.normal(size=(3, 9)) + 5
    np.testing.assert_allclose(
        fuse_scores({"a": a, "b": b}, {"a": 1.0, "b": 0.5}),
        scipy.stats.zscore(a, axis=1) + 0.5 * scipy.stats.zscore(b, axis=1),
        atol=1e-5,
    )
    np.testing.assert_array_equal(zscore_rows(np.ones((2, 4))), np.zeros((2, 4)))
    ids = [f"e{i}" for i in range(50)]
    targets, candidates = draw_teacher_examples(ids, ids[:10], 5, 20, seed=3)
    assert len(targets) == 5 and len(candidates) == 20
    assert not set(targets) & set(candidates) and not (set(targets) | set(candidates)) & set(
        ids[:10]
    )
    assert (targets, candidates) == draw_teacher_examples(reversed(ids), ids[:10], 5, 20, seed=3)
    with pytest.raises(ValueError, match="eligible"):
        draw_teacher_examples(ids, ids[:40], 5, 20, seed=3)


def test_hybrid_encoder_round_trips_and_scores_dot_plus_weighted_bm25(minilm, tmp_path):
    examples = list(p3_examples(4))
    queries, pool = examples[:4], examples[4:]
    minilm.lexical_weight = 0.5
    try:
        loaded = AirRepEncoder.from_pretrained(minilm.save(tmp_path / "hybrid"))
    finally:
        minilm.lexical_weight = 0.0
    assert loaded.lexical_weight == 0.5 and loaded.normalize
    hybrid = AirRepAttributor(loaded, "attention", batch_size=8)
    hybrid.fit(pool)
    scores = hybrid.score(queries)
    dots = loaded.encode_examples(queries) @ loaded.encode_examples(pool).T
    bm25 = Bm25Attributor(loaded.lexical)
    bm25.fit(pool)
    expected = scipy.stats.zscore(dots, axis=1) + 0.5 * scipy.stats.zscore(
        bm25.score(queries), axis=1
    )
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    subsets = [np.arange(0, 5), np.arange(5, 12)]
    np.testing.assert_allclose(
        hybrid.group_score(scores, subsets),
        np.stack([scores[:, s].sum(axis=1) for s in subsets], axis=1),
        atol=1e-5,
    )
    assert hybrid.storage_floats_per_example > loaded.dim
    # The mean-pooling ablation row reads the embedding alone.
    plain = AirRepAttributor(loaded, "mean", batch_size=8, hybrid=False)
    plain.fit(pool)
    np.testing.assert_allclose(plain.score(queries), dots, atol=1e-5)


def test_lexical_weight_is_the_validation_argmax_over_plain_and_hybrid(label_features, minilm):
    splits, examples = unigram_label_set(n_splits=3, n_targets=16, n_subsets=12, subset_size=8)
    features, _ = label_features
    ids = split_example_ids(splits)
    row_of = {i: k for k, i in enumerate(ids)}
    config = CONFIG.replace(lexical_weights=(0.5, 2.0))
    choice = choose_hybrid_weights(features, None, ids, splits[2:], examples, config)
    by_weight = {float(k.split("λ=")[1]): v for k, v in choice.items() if k.startswith("w=0 ")}
    assert set(by_weight) == {0.0, 0.5, 2.0}
    assert choice["token_bag_weight"] == 0.0
    assert choice["lexical_weight"] == max(by_weight, key=lambda w: (by_weight[w], -w))
    # Brute force for λ = 2 on the one held-out split.
    split = splits[2]
    pool = sorted({m for members in split.subset_members for m in members})
    bm25 = Bm25Attributor(config.lexical)
    bm25.fit([examples[m] for m in pool])
    n = config.validation_max_targets
    lexical = bm25.score([examples[t] for t in split.target_ids[:n]])
    dots = (
        features[[row_of[t] for t in split.target_ids[:n]]] @ features[[row_of[m] for m in pool]].T
    )
    h = scipy.stats.zscore(dots, axis=1) + 2.0 * scipy.stats.zscore(lexical, axis=1)
    groups = np.stack(
        [h[:, [pool.index(m) for m in members]].sum(axis=1) for members in split.subset_members],
        axis=1,
    )
    assert by_weight[2.0] == pytest.approx(lds(groups, split.losses[:, :n].T), abs=1e-6)
