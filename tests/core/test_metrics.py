"""LDS == the mean of scipy.stats.spearmanr with NaN -> 0; ranking accuracy by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from airrep_core.evaluation.metrics import lds, per_target_spearman, ranking_accuracy


def test_lds_equals_scipy_spearman_mean_with_nan_as_zero():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(9, 12))
    losses = rng.normal(size=(9, 12)) - 0.3 * scores
    scores[1] = 2.0  # constant scores: NaN in scipy
    losses[2] = 5.0  # constant losses: NaN in scipy
    scores[3, :6] = scores[3, 6:]  # ties: average ranks
    losses[4] = np.round(losses[4])
    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(len(scores)):
            rho = spearmanr(scores[t], -losses[t]).statistic
            expected.append(0.0 if np.isnan(rho) else rho)
    np.testing.assert_allclose(per_target_spearman(scores, losses), expected, atol=1e-12)
    assert lds(scores, losses) == pytest.approx(float(np.mean(expected)), abs=1e-12)


def test_ranking_accuracy_counts_correctly_ordered_valid_pairs():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 5))
    labels = rng.normal(size=(3, 5))
    correct = total = 0
    for t in range(3):
        for i in range(5):
            for j in range(5):
                if labels[t, i] - labels[t, j] > 0.1:
                    total += 1
                    correct += scores[t, i] > scores[t, j]
    assert ranking_accuracy(scores, labels) == pytest.approx(correct / total)
    assert ranking_accuracy(labels, labels) == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        lds(np.zeros((2, 3)), np.zeros((3, 2)))
