"""The weighted pairwise ranking loss == a brute-force double loop (DESIGN.md §2, "Loss")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from airrep_core.encoder.ranking_loss import T_MAX, T_MIN, count_valid_pairs, pairwise_ranking_loss


def _brute_force(scores: np.ndarray, labels: np.ndarray, t_min: float, t_max: float) -> float:
    total, count = 0.0, 0
    for t in range(scores.shape[0]):
        for i in range(scores.shape[1]):
            for j in range(scores.shape[1]):
                gap = labels[t, i] - labels[t, j]
                if gap > t_min:
                    weight = min(gap, t_max)
                    total += weight * -math.log(
                        1.0 / (1.0 + math.exp(-(scores[t, i] - scores[t, j])))
                    )
                    count += 1
    return total / count if count else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_brute_force_double_loop(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(4, 6)) * 3
    labels = rng.normal(size=(4, 6)) * 4  # gaps both below T_min and above T_max occur
    labels[0, :3] = labels[0, 3]  # ties: no pair
    got = pairwise_ranking_loss(torch.tensor(scores), torch.tensor(labels))
    expected = _brute_force(scores, labels.astype(np.float32).astype(np.float64), T_MIN, T_MAX)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_chunked_losses_add_up_to_the_full_loss():
    rng = np.random.default_rng(3)
    scores = torch.tensor(rng.normal(size=(7, 5)))
    labels = torch.tensor(rng.normal(size=(7, 5)))
    total = count_valid_pairs(labels)
    parts = [
        pairwise_ranking_loss(scores[s], labels[s], denominator=total)
        for s in (slice(0, 3), slice(3, 7))
    ]
    assert float(sum(parts)) == pytest.approx(
        float(pairwise_ranking_loss(scores, labels)), rel=1e-6
    )


def test_no_valid_pair_gives_zero_with_a_gradient_path():
    scores = torch.zeros((2, 3), requires_grad=True)
    loss = pairwise_ranking_loss(scores, torch.ones((2, 3)))
    loss.backward()
    assert float(loss.detach()) == 0.0 and scores.grad is not None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        pairwise_ranking_loss(torch.zeros((2, 3)), torch.zeros((3, 2)))
