"""Exact chunked top-k == brute-force argsort, round-robin selection == a hand-written reference,
and the approximate index against the exact search."""

from __future__ import annotations

import numpy as np
import pytest

from airrep_core.attribution.search import (
    IvfIndex,
    exact_top_and_bottom_k,
    exact_top_k,
    recall_at_k,
    round_robin_select,
)


def tied_data(seed: int, n: int = 53, d: int = 6, q: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Queries and a matrix of small integers: scores are exact and tie often."""
    rng = np.random.default_rng(seed)
    matrix = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    queries = rng.integers(-1, 2, size=(q, d)).astype(np.float32)
    queries[0] = 0.0  # a query whose scores all tie
    return queries, matrix


def brute_force(queries: np.ndarray, matrix: np.ndarray, k: int, largest: bool):
    scores = queries.astype(np.float32) @ matrix.astype(np.float32).T
    order = np.argsort(-scores if largest else scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("chunk_rows", [1, 7, 53, 100])
@pytest.mark.parametrize("k", [1, 4, 60])
@pytest.mark.parametrize("largest", [True, False])
def test_exact_top_k_equals_stable_argsort(seed, chunk_rows, k, largest) -> None:
    queries, matrix = tied_data(seed)
    result = exact_top_k(queries, matrix, k, largest=largest, chunk_rows=chunk_rows)
    scores, order = brute_force(queries, matrix, k, largest)
    np.testing.assert_array_equal(result.indices, order)
    np.testing.assert_array_equal(result.scores, scores)
    assert result.indices.dtype == np.int64 and result.scores.dtype == np.float32


@pytest.mark.parametrize("chunk_rows", [5, 64, 1000, 1024, 2048])
@pytest.mark.parametrize(("rows", "dtype"), [(777, np.float16), (2600, np.float32)])
def test_chunked_equals_one_shot_on_continuous_data(chunk_rows, rows, dtype) -> None:
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((rows, 32)).astype(dtype)  # 2600 rows: several product blocks
    queries = rng.standard_normal((9, 32)).astype(np.float32)
    one_shot = exact_top_k(queries, matrix, 10, chunk_rows=10_000)
    chunked = exact_top_k(queries, matrix, 10, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(chunked.indices, one_shot.indices)
    # BLAS may sum a product in another order for another chunk width: scores agree to rounding.
    np.testing.assert_allclose(chunked.scores, one_shot.scores, rtol=1e-6)
    _, order = brute_force(queries, matrix, 10, largest=True)
    np.testing.assert_array_equal(chunked.indices, order)


def test_top_and_bottom_in_one_pass_equal_separate_searches() -> None:
    queries, matrix = tied_data(4)
    top, bottom = exact_top_and_bottom_k(queries, matrix, 5, chunk_rows=8)
    separate_top = exact_top_k(queries, matrix, 5, chunk_rows=8)
    separate_bottom = exact_top_k(queries, matrix, 5, largest=False, chunk_rows=8)
    np.testing.assert_array_equal(top.indices, separate_top.indices)
    np.testing.assert_array_equal(bottom.indices, separate_bottom.indices)
    np.testing.assert_array_equal(bottom.scores, separate_bottom.scores)
    assert (np.diff(bottom.scores, axis=1) >= 0).all()


@pytest.mark.parametrize(
    ("queries", "matrix", "k", "message"),
    [
        (np.zeros((0, 4)), np.zeros((5, 4), np.float32), 3, "no queries"),
        (np.zeros((2, 3)), np.zeros((5, 4), np.float32), 3, r"queries must be \(n_query, 4\)"),
        (np.full((1, 4), np.nan), np.zeros((5, 4), np.float32), 3, "NaN"),
        (np.zeros((1, 4)), np.zeros((5, 4), np.float32), 0, "k=0"),
        (np.zeros((1, 4)), np.zeros((0, 4), np.float32), 3, "empty matrix"),
    ],
)
def test_exact_top_k_rejects_bad_input(queries, matrix, k, message) -> None:
    with pytest.raises(ValueError, match=message):
        exact_top_k(queries, matrix, k)


def reference_round_robin(targets: np.ndarray, pool: np.ndarray, budget: int) -> list[int]:
    """The paper's rule written out: walk ranks, then targets, skip rows already taken."""
    scores = targets @ pool.T
    rankings = [np.argsort(-row, kind="stable").tolist() for row in scores]
    taken: list[int] = []
    for rank in range(pool.shape[0]):
        for ranking in rankings:
            if ranking[rank] not in taken:
                taken.append(ranking[rank])
            if len(taken) == budget:
                return taken
    raise AssertionError("budget larger than the pool")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("budget", [1, 5, 17, 40, 53])
@pytest.mark.parametrize("chunk_rows", [4, 64])
def test_round_robin_selection_equals_reference(seed, budget, chunk_rows) -> None:
    targets, pool = tied_data(seed, q=6)
    chosen = round_robin_select(targets, pool, budget, chunk_rows=chunk_rows)
    assert chosen.indices.tolist() == reference_round_robin(targets, pool, budget)
    scores = targets @ pool.T
    ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
    # each row was taken from the list where it ranks best (earliest target on a tie)
    for row, rank, target, score in zip(
        chosen.indices, chosen.ranks, chosen.targets, chosen.scores, strict=True
    ):
        assert rank == ranks[:, row].min()
        assert target == int(np.argmin(ranks[:, row]))
        assert score == scores[target, row]


def test_round_robin_deepens_when_targets_share_their_best_rows() -> None:
    rng = np.random.default_rng(5)
    pool = rng.standard_normal((200, 8)).astype(np.float32)
    targets = np.repeat(rng.standard_normal((1, 8)).astype(np.float32), 10, axis=0)
    chosen = round_robin_select(targets, pool, 150)
    assert chosen.indices.tolist() == reference_round_robin(targets, pool, 150)
    assert (chosen.targets == 0).all()  # identical targets: the first one always ranks best


@pytest.mark.parametrize("budget", [0, 54, 2.5])
def test_round_robin_rejects_bad_budget(budget) -> None:
    targets, pool = tied_data(0)
    with pytest.raises(ValueError, match=r"allowed: 1\.\.53"):
        round_robin_select(targets, pool, budget)


def test_ivf_index_with_every_cell_probed_is_exact_and_saves(tmp_path) -> None:
    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    index = IvfIndex.build(matrix, nlist=16, seed=0)
    exact_top, exact_bottom = exact_top_and_bottom_k(queries, matrix, 10)
    approx_top = index.search(queries, 10, nprobe=16)
    approx_bottom = index.search(queries, 10, nprobe=16, largest=False)
    np.testing.assert_array_equal(approx_top.indices, exact_top.indices)
    np.testing.assert_array_equal(approx_bottom.indices, exact_bottom.indices)
    np.testing.assert_allclose(approx_top.scores, exact_top.scores, rtol=1e-5, atol=1e-5)
    assert recall_at_k(approx_top, exact_top) == 1.0
    assert 0.0 < recall_at_k(index.search(queries, 10, nprobe=1), exact_top) < 1.0
    index.save(tmp_path / "ivf.faiss")
    loaded = IvfIndex.load(tmp_path / "ivf.faiss")
    np.testing.assert_array_equal(
        loaded.search(queries, 10, nprobe=4).indices, index.search(queries, 10, nprobe=4).indices
    )


@pytest.fixture
def torch_threads():
    """Set torch's thread count (the exact search's worker count) for one test, then restore."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("chunk_rows", [7, 1000, 1024, 2500, 100_000])
def test_float16_store_equals_float32_store_of_the_rounded_vectors(tmp_path, chunk_rows) -> None:
    rng = np.random.default_rng(7)
    half = rng.standard_normal((3001, 48)).astype(np.float16)
    queries = rng.standard_normal((5, 48)).astype(np.float32)
    np.save(tmp_path / "half.npy", half)
    stored = np.load(tmp_path / "half.npy", mmap_mode="r")  # read-only, as a store view
    rounded = half.astype(np.float32)
    top16, bottom16 = exact_top_and_bottom_k(queries, stored, 10, chunk_rows=chunk_rows)
    top32, bottom32 = exact_top_and_bottom_k(queries, rounded, 10, chunk_rows=chunk_rows)
    for got, want in ((top16, top32), (bottom16, bottom32)):
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.scores, want.scores)  # bit for bit, not to rounding
    _, order = brute_force(queries, rounded, 10, largest=True)
    np.testing.assert_array_equal(top16.indices, order)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_worker_threads_give_the_same_result_with_ties(torch_threads, threads, dtype) -> None:
    rng = np.random.default_rng(9)
    matrix = rng.integers(-2, 3, size=(5000, 4)).astype(dtype)  # every score ties thousands
    queries = rng.integers(-1, 2, size=(4, 4)).astype(np.float32)
    queries[0] = 0.0
    torch_threads(threads)
    top, bottom = exact_top_and_bottom_k(queries, matrix, 25, chunk_rows=700)
    for result, largest in ((top, True), (bottom, False)):
        scores, order = brute_force(queries, matrix, 25, largest)
        np.testing.assert_array_equal(result.indices, order)
        np.testing.assert_array_equal(result.scores, scores)


def test_read_only_memory_map_is_searched_without_warnings(tmp_path) -> None:
    import warnings

    np.save(tmp_path / "m.npy", np.eye(4, dtype=np.float16))
    stored = np.load(tmp_path / "m.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = exact_top_k(np.eye(4, dtype=np.float32)[2:3], stored, 1)
    assert result.indices.tolist() == [[2]]


def test_search_latency_benchmark_reports_its_verdicts() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from airrep_core.config.embedding import SearchConfig

    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "benchmarks.search_latency", "--rows", "3000", "--dim", "16"]
    command += ["--clusters", "20", "--batch", "4", "--repeats", "1", "--nlist", "8"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    out, default = done.stdout, SearchConfig()
    assert "streaming read bandwidth (float32 matrix, measured now)" in out
    assert "float16 vs float32, 1 query:" in out and "float16 vs float32, 4 queries:" in out
    assert "one query, float16:" in out and "floor at" in out
    assert f"(SearchConfig nlist={default.nlist}, nprobe={default.nprobe}): recall@10" in out
