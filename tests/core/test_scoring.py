"""Group and example scores == hand-written loops; numpy == torch (DESIGN.md §2, "Scores")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from airrep_core.encoder.scoring import example_scores, group_scores, pad_membership, pool_scores


def _hand_group_score(query: np.ndarray, members: np.ndarray, pooling: str) -> float:
    scores = [float(np.dot(query, z)) for z in members]
    if pooling == "mean":
        return sum(scores) / len(scores)
    top = max(abs(s) for s in scores)
    weights = [math.exp(abs(s) - top) for s in scores]
    return sum(w * s for w, s in zip(weights, scores, strict=True)) / sum(weights)


@pytest.fixture
def embeddings() -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(5, 7))
    members = rng.normal(size=(11, 7)) * 2.0  # large |s| exercises the softmax's stability
    groups = [[0, 1, 2], [3], [4, 5, 6, 7, 8], [9, 10, 0, 1], [2, 2, 5]]  # ragged, repeats
    return queries, members, groups


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_group_scores_equal_a_hand_written_loop(embeddings, pooling):
    queries, members, groups = embeddings
    got = group_scores(queries, members, groups, pooling=pooling)
    assert got.shape == (len(queries), len(groups))
    for x, query in enumerate(queries):
        for k, group in enumerate(groups):
            expected = _hand_group_score(query, members[group], pooling)
            assert got[x, k] == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_torch_and_numpy_agree_and_torch_keeps_the_graph(embeddings, pooling):
    queries, members, groups = embeddings
    index, mask = pad_membership(groups)
    expected = group_scores(queries, members, index, mask, pooling)
    q = torch.tensor(queries, requires_grad=True)
    got = group_scores(q, torch.tensor(members), torch.tensor(index), torch.tensor(mask), pooling)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    got.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_attention_pooling_attends_to_strongly_negative_members():
    # |s| in the softmax: a strongly negative member dominates a weakly positive one.
    scores = np.array([[5.0, -0.1], [-5.0, 0.1]])
    pooled = pool_scores(scores)
    assert pooled[0] > 4.9 and pooled[1] < -4.9


def test_example_scores_are_dot_products(embeddings):
    queries, members, _ = embeddings
    got = example_scores(queries, members)
    for x in range(len(queries)):
        for z in range(len(members)):
            assert got[x, z] == pytest.approx(float(np.dot(queries[x], members[z])), rel=1e-12)


def test_bad_inputs_name_the_problem(embeddings):
    queries, members, _ = embeddings
    with pytest.raises(ValueError, match="pooling='max'"):
        pool_scores(np.zeros((2, 3)), pooling="max")
    with pytest.raises(ValueError, match="widths differ"):
        example_scores(queries, members[:, :3])
    with pytest.raises(ValueError, match="at least one member"):
        pool_scores(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="list"):
        example_scores([[1.0]], members)
