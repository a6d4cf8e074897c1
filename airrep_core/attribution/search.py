"""Searching stored embeddings: exact chunked top-k, an approximate IVF index, and round-robin
data selection (DESIGN.md §2 "Scores", §3 "Data selection").

Scores are s(x, z) = Enc(x)ᵀ Enc(z) (higher = more helpful). The exact search streams the stored
``(n, d)`` matrix in chunks of ``chunk_rows`` rows. Within a chunk, ``PRODUCT_ROWS`` rows at a
time are copied (float16: converted, exactly) into a reused, cache-sized float32 buffer and
multiplied with the queries into the chunk's ``(n_query, chunk_rows)`` score buffer; then each
query's best ``k`` of the chunk are selected and merged with the running best. float32 and
float16 stores take the same path with the same shapes, so a float16 store gives bit-identical
results to a float32 store of the same (float16-rounded) vectors while reading half the bytes.

The chunks are shared among ``torch.get_num_threads()`` worker threads, each running
single-threaded torch kernels: on a shared machine, a multi-threaded kernel per block waits at
every barrier for a busy core (measured 10× slower under load). Ties are broken by the lower row
index, so the result equals a stable ``argsort`` of the full score matrix for any chunk size and
thread count.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_CHUNK_ROWS = 32768
PRODUCT_ROWS = 1024
"""Stored rows per matrix product: their float32 copy (1.5 MB at d = 384) stays in cache."""

T = TypeVar("T")

Best = tuple[np.ndarray, np.ndarray]
"""A running best: ``(n_query, k)`` float32 values and int64 rows, sorted (value desc, row asc)."""


@dataclass(frozen=True)
class TopK:
    """The best ``k`` rows per query, best first.

    Attributes:
        scores: ``(n_query, k)`` float32 scores, best first (descending for the most helpful,
            ascending for the most harmful).
        indices: ``(n_query, k)`` int64 rows of the searched matrix; ties: lower row first.
    """

    scores: np.ndarray
    indices: np.ndarray

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def exact_top_k(
    queries: np.ndarray,
    matrix: np.ndarray,
    k: int,
    *,
    largest: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> TopK:
    """The ``k`` rows of ``matrix`` with the largest (or smallest) score for each query.

    Args:
        queries: ``(n_query, d)`` float (converted to float32).
        matrix: ``(n, d)`` float32 or float16, e.g. a memory-mapped store view.
        k: rows per query; ``min(k, n)`` come back.
        largest: True for the most helpful (largest s), False for the most harmful (smallest s).
        chunk_rows: stored rows per selection step; each worker thread holds one
            ``(n_query, chunk_rows)`` float32 score buffer.
    Returns:
        :class:`TopK` equal to ``argsort(-S, stable)[:, :k]`` (``argsort(S, stable)`` when
        ``largest`` is False) of the full score matrix ``S = queries @ matrix.T``.
    """
    top, bottom = _scan(queries, matrix, k, chunk_rows, want_top=largest, want_bottom=not largest)
    result = top if largest else bottom
    assert result is not None
    return result


def exact_top_and_bottom_k(
    queries: np.ndarray, matrix: np.ndarray, k: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[TopK, TopK]:
    """(most helpful, most harmful) of :func:`exact_top_k` in one pass over ``matrix``."""
    top, bottom = _scan(queries, matrix, k, chunk_rows, want_top=True, want_bottom=True)
    assert top is not None and bottom is not None
    return top, bottom


def _scan(
    queries: np.ndarray,
    matrix: np.ndarray,
    k: int,
    chunk_rows: int,
    *,
    want_top: bool,
    want_bottom: bool,
) -> tuple[TopK | None, TopK | None]:
    import torch  # here, not at module level: importing this module stays cheap

    q = _checked_queries(queries, matrix)
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k={k!r} is invalid; allowed: an integer >= 1")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} is invalid; allowed: >= 1")
    n = int(matrix.shape[0])
    if n == 0:
        raise ValueError("cannot search an empty matrix (0 stored rows)")
    k = min(int(k), n)
    source, queries_tensor = _as_tensor(matrix), torch.from_numpy(q)
    results = in_chunk_workers(
        n,
        chunk_rows,
        lambda starts: _scan_chunks(
            queries_tensor, source, starts, chunk_rows, k, want_top, want_bottom
        ),
    )
    top = _merge_all([result[0] for result in results], k) if want_top else None
    bottom = _merge_all([result[1] for result in results], k) if want_bottom else None
    top_k = TopK(top[0], top[1]) if top is not None else None
    bottom_k = TopK(-bottom[0], bottom[1]) if bottom is not None else None
    return top_k, bottom_k


def in_chunk_workers(n: int, chunk_rows: int, work: Callable[[list[int]], T]) -> list[T]:
    """``work(starts)`` in each of ``torch.get_num_threads()`` worker threads (at most one per
    chunk), each running single-threaded torch kernels on its share of the chunk starts
    ``range(0, n, chunk_rows)``: every ``workers``-th start, from its own. Returns the workers'
    results in worker order. The exact search's layout; ``benchmarks/search_latency.py`` reads
    the matrix with it to measure the bandwidth this layout can reach."""
    import torch

    starts = list(range(0, n, chunk_rows))
    workers = max(1, min(torch.get_num_threads(), len(starts)))

    def run(worker: int) -> T:
        torch.set_num_threads(1)  # this worker thread's kernels only (OpenMP is per thread)
        return work(starts[worker::workers])

    with ThreadPoolExecutor(workers, thread_name_prefix="chunk-worker") as pool:
        return list(pool.map(run, range(workers)))


def _as_tensor(matrix: np.ndarray) -> torch.Tensor:
    """``matrix (n, d)`` as a tensor sharing its memory. A read-only memory map is fine: it is
    only read, so torch's warning about non-writable arrays is silenced."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(matrix))


def _scan_chunks(
    queries: torch.Tensor,
    source: torch.Tensor,
    starts: list[int],
    chunk_rows: int,
    k: int,
    want_top: bool,
    want_bottom: bool,
) -> tuple[Best | None, Best | None]:
    """The running best of ``queries (q, d)`` float32 over the chunks of ``source (n, d)``
    (float32 or float16) that begin at ``starts``; the buffers are allocated once."""
    import torch

    n, dim = source.shape
    product_rows = min(PRODUCT_ROWS, chunk_rows)
    rows = torch.empty((product_rows, dim), dtype=torch.float32)
    scores = torch.empty((queries.shape[0], min(chunk_rows, n)), dtype=torch.float32)
    top = bottom = None
    for start in starts:
        chunk = scores[:, : min(start + chunk_rows, n) - start]
        for at in range(0, chunk.shape[1], product_rows):
            block = rows[: min(product_rows, chunk.shape[1] - at)]
            block.copy_(source[start + at : start + at + block.shape[0]])  # float16: exact
            torch.mm(queries, block.T, out=chunk[:, at : at + block.shape[0]])
        if want_top:
            top = _merge(top, _chunk_best(chunk, k, start), k)
        if want_bottom:
            torch.neg(chunk, out=chunk)  # -(q·z) is exact: the smallest become the largest
            bottom = _merge(bottom, _chunk_best(chunk, k, start), k)
    return top, bottom


def _checked_queries(queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D (n, d), got shape {tuple(matrix.shape)}")
    if matrix.dtype not in (np.float32, np.float16):
        raise TypeError(f"matrix dtype {matrix.dtype} is not supported; allowed: float32, float16")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != matrix.shape[1]:
        raise ValueError(
            f"queries must be (n_query, {matrix.shape[1]}), got shape {tuple(np.shape(queries))}"
        )
    if q.shape[0] == 0:
        raise ValueError("no queries given (0 rows)")
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN or infinite values")
    return q


def _chunk_best(scores: torch.Tensor, k: int, offset: int) -> Best:
    """Each row's ``min(k, c)`` largest of ``scores (q, c)``, ties by lower column, unsorted.

    ``topk`` picks an arbitrary subset of the values tied at the k-th largest; rows where that
    matters (more values at or above it than were picked) are redone with the lowest columns.
    """
    import torch

    c = scores.shape[1]
    if c <= k:
        columns = np.broadcast_to(np.arange(c, dtype=np.int64), tuple(scores.shape))
        return scores.numpy().copy(), columns + offset
    picked, picked_columns = torch.topk(scores, k, dim=1, sorted=False)
    values, columns = picked.numpy(), picked_columns.numpy()
    threshold = picked.min(dim=1, keepdim=True).values
    for row in np.flatnonzero((scores >= threshold).sum(dim=1).numpy() > k):
        row_scores, cut = scores[row].numpy(), threshold[row].item()
        above = np.flatnonzero(row_scores > cut)
        ties = np.flatnonzero(row_scores == cut)[: k - above.size]
        columns[row] = np.concatenate([above, ties])
        values[row] = row_scores[columns[row]]
    return values, columns + offset


def _merge(best: Best | None, new: Best, k: int) -> Best:
    """The ``k`` best of the running best and a chunk's candidates, sorted (score desc, row asc)."""
    if best is None:
        values, rows = new
    else:
        values = np.concatenate([best[0], new[0]], axis=1)
        rows = np.concatenate([best[1], new[1]], axis=1)
    order = np.lexsort((rows, -values), axis=1)[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _merge_all(bests: list[Best | None], k: int) -> Best:
    """The ``k`` best of the workers' running bests (None: a worker without chunks)."""
    merged = None
    for best in bests:
        if best is not None:
            merged = _merge(merged, best, k)
    assert merged is not None
    return merged


# ---- approximate search ----------------------------------------------------------------------


class IvfIndex:
    """An approximate inner-product index (faiss ``IndexIVFFlat``) over stored embeddings.

    k-means cells are trained on a seeded sample of the rows; a query visits its ``nprobe`` best
    cells. The most harmful rows are the most helpful of the negated query. Recall against
    :func:`exact_top_k` is measured by ``benchmarks/search_latency.py``.
    """

    def __init__(self, index: object, dim: int) -> None:
        self._index = index
        self.dim = dim

    @classmethod
    def build(
        cls,
        matrix: np.ndarray,
        *,
        nlist: int,
        seed: int,
        train_rows: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> IvfIndex:
        """Train ``nlist`` cells on ``train_rows`` sampled rows (default ``64 * nlist``, at most
        all) and add every row of ``matrix (n, d)`` (float32 or float16), chunk by chunk."""
        faiss = _faiss()
        n, dim = (int(s) for s in matrix.shape)
        nlist = min(int(nlist), n)
        if nlist < 1:
            raise ValueError(f"nlist={nlist} is invalid; allowed: >= 1")
        sample = min(n, train_rows or 64 * nlist)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.train(np.ascontiguousarray(matrix[rows], dtype=np.float32))
        for start in range(0, n, chunk_rows):
            index.add(np.ascontiguousarray(matrix[start : start + chunk_rows], dtype=np.float32))
        return cls(index, dim)

    @property
    def rows(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int, *, nprobe: int, largest: bool = True) -> TopK:
        """Approximate :func:`exact_top_k`; rows it cannot fill get index -1 and score NaN."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n_query, {self.dim}), got {tuple(q.shape)}")
        if q.shape[0] == 0:
            raise ValueError("no queries given (0 rows)")
        self._index.nprobe = int(nprobe)
        k = min(int(k), self.rows)
        scores, indices = self._index.search(q if largest else -q, k)
        scores = scores.astype(np.float32)
        scores[indices < 0] = np.nan
        return TopK(scores if largest else -scores, indices.astype(np.int64))

    def save(self, path: str | Path) -> None:
        """Write the index to a local file (faiss's own format)."""
        _faiss().write_index(self._index, str(path))

    @classmethod
    def load(cls, path: str | Path) -> IvfIndex:
        """Read an index written by :meth:`save`."""
        index = _faiss().read_index(str(path))
        return cls(index, int(index.d))


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            "the approximate index needs faiss-cpu (extra 'bench'): pip install faiss-cpu"
        ) from e
    return faiss


def recall_at_k(approximate: TopK, exact: TopK) -> float:
    """Mean over queries of |approximate ∩ exact| / k (the exact top-k as ground truth)."""
    hits = [
        len(set(a.tolist()) & set(e.tolist()))
        for a, e in zip(approximate.indices, exact.indices, strict=True)
    ]
    return float(np.mean(hits) / exact.k)


# ---- data selection --------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Pool rows chosen for a target task, in the order they were taken.

    Attributes:
        indices: ``(budget,)`` int64 pool rows.
        ranks: ``(budget,)`` int64 0-based rank of the row in the list it was taken from (its
            best rank over the targets).
        targets: ``(budget,)`` int64 target whose list it was taken from.
        scores: ``(budget,)`` float32 s(target, row).
    """

    indices: np.ndarray
    ranks: np.ndarray
    targets: np.ndarray
    scores: np.ndarray


def round_robin_select(
    target_embeddings: np.ndarray,
    pool_embeddings: np.ndarray,
    budget: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Selection:
    """Select ``budget`` pool rows for a target task, round-robin over its examples.

    The paper's rule (§3 "Data selection"): each target ranks the pool by s(target, z), best
    first; rows are taken at rank 0 of target 0, 1, ..., then rank 1 of each target, and so on,
    skipping rows already taken. So a row's position follows its best rank over the targets
    (ties: the earlier target). Only each target's top ``depth`` rows are searched; ``depth``
    grows until the budget is met (the order is a prefix of the full round-robin order).

    Args:
        target_embeddings: ``(n_targets, d)``.
        pool_embeddings: ``(n_pool, d)`` float32 or float16.
        budget: rows to select, ``1 <= budget <= n_pool``.
    """
    n_pool = int(pool_embeddings.shape[0])
    if not isinstance(budget, int | np.integer) or not 1 <= budget <= n_pool:
        raise ValueError(f"budget={budget!r} is invalid; allowed: 1..{n_pool} (the pool size)")
    n_targets = int(np.shape(target_embeddings)[0])
    if n_targets == 0:
        raise ValueError("no target examples given (0 rows)")
    depth = min(n_pool, max(1, math.ceil(2 * budget / n_targets)))
    while True:
        top = exact_top_k(target_embeddings, pool_embeddings, depth, chunk_rows=chunk_rows)
        taken = _round_robin(top, budget)
        if taken is not None:
            return taken
        depth = min(n_pool, depth * 4)


def round_robin_from_scores(scores: np.ndarray, budget: int) -> Selection:
    """``round_robin_select``'s rule on a full ``(n_targets, n_pool)`` score matrix (e.g. hybrid
    scores): each target ranks the whole pool, best first (ties: lower row first)."""
    n_pool = int(scores.shape[1])
    if not isinstance(budget, int | np.integer) or not 1 <= budget <= n_pool:
        raise ValueError(f"budget={budget!r} is invalid; allowed: 1..{n_pool} (the pool size)")
    order = np.argsort(-scores, axis=1, kind="stable")
    taken = _round_robin(TopK(np.take_along_axis(scores, order, 1), order.astype(np.int64)), budget)
    assert taken is not None  # the full ranking holds every row
    return taken


def _round_robin(top: TopK, budget: int) -> Selection | None:
    """The first ``budget`` distinct rows in rank-major order, or None if there are fewer."""
    n_targets = top.indices.shape[0]
    order = top.indices.T.ravel()  # rank 0 of every target, then rank 1, ...
    _, first = np.unique(order, return_index=True)
    if first.size < budget:
        return None
    positions = np.sort(first)[:budget]
    ranks, targets = np.divmod(positions, n_targets)
    return Selection(
        indices=order[positions].astype(np.int64),
        ranks=ranks.astype(np.int64),
        targets=targets.astype(np.int64),
        scores=top.scores[targets, ranks].astype(np.float32),
    )
