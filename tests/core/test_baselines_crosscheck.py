"""Our Grad-Dot and K-FAC (LoGra without projection) against kronfluence on the same tiny LM.

Slow (two kronfluence analyses and our three fits, ~1-3 min on 2 busy cores); run with
``pytest -m slow tests/core/test_baselines_crosscheck.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from baseline_fixtures import build_tiny_target_lm, train_and_query_examples

pytest.importorskip(
    "kronfluence", reason="kronfluence is the independent reference (extra 'bench')"
)


def load_crosscheck_module():
    """``benchmarks/crosscheck_gradients.py`` by path (``benchmarks`` is not an installed package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "crosscheck_gradients.py"
    spec = importlib.util.spec_from_file_location("crosscheck_gradients", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_exact_scores_agree_with_kronfluence(tmp_path):
    crosscheck = load_crosscheck_module()
    train, queries = train_and_query_examples(n_train=16, n_query=4)
    results = crosscheck.run_crosscheck(build_tiny_target_lm(tmp_path), train, queries)
    print(crosscheck.format_table(results))
    for name in ("grad_dot (exact) vs kronfluence identity", "logra (exact) vs kronfluence kfac"):
        assert results[name]["max_rel_diff"] < 1e-3, name
        assert results[name]["spearman"] > 0.999, name
    # The 8 x 8 projection keeps a clear positive agreement with the exact K-FAC scores.
    assert results["logra (8x8 projection) vs kronfluence kfac"]["spearman"] > 0.3
