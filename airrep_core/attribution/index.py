"""Attribution queries and data selection on embeddings: the Python API (DESIGN.md §2, §3).

Functions on arrays (any source of embeddings):

- :func:`attribute`: the top-k most helpful and most harmful training rows of each query,
  s(x, z) = Enc(x)ᵀ Enc(z) (higher = more helpful).
- :func:`group_influence`: f(x, S) of one subset S for each query, attention pooling
  Σᵢ softmax(|sᵢ|)ᵢ sᵢ (or the mean ablation).
- :func:`select`: round-robin data selection for a target task (``search.round_robin_select``).

:class:`AttributionIndex` binds an encoder to stored embeddings and their example ids, so that the
same operations take :class:`~airrep_core.data.examples.Example` queries and return records with ids.
In a notebook::

    matrix = storage.embedding_store.load_view(store, view)      # or tasks.embeddings.open_index
    index = AttributionIndex(encoder, matrix.embeddings, matrix.example_ids)
    index.attribute([Example("q", "What is 2+2?", "4")], k=10)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from airrep_core.attribution.hybrid import HybridScorer, top_and_bottom_k
from airrep_core.attribution.search import (
    DEFAULT_CHUNK_ROWS,
    IvfIndex,
    Selection,
    TopK,
    exact_top_and_bottom_k,
    round_robin_from_scores,
    round_robin_select,
)
from airrep_core.config.embedding import SearchConfig
from airrep_core.data.examples import Example
from airrep_core.encoder.scoring import group_scores
from airrep_core.methods.lexical import Bm25Attributor


class ExampleEncoder(Protocol):
    """What embedding a store needs of an encoder: ``AirRepEncoder.encode_examples`` ``(n, d)``
    float32 (the stored side)."""

    def encode_examples(
        self, examples: Sequence[Example], batch_size: int = 64, *, precision: str = "float32"
    ) -> np.ndarray: ...


class QueryEncoder(Protocol):
    """What the index needs of an encoder: ``AirRepEncoder.encode_queries`` ``(n, d)`` float32
    (the stored rows came from its ``encode_examples``)."""

    def encode_queries(
        self, examples: Sequence[Example], batch_size: int = 64, *, precision: str = "float32"
    ) -> np.ndarray: ...


# ---- on arrays ---------------------------------------------------------------------------------


def attribute(
    query_embeddings: np.ndarray,
    train_embeddings: np.ndarray,
    k: int = 10,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    index: IvfIndex | None = None,
    nprobe: int = SearchConfig.nprobe,
) -> tuple[TopK, TopK]:
    """(most helpful, most harmful) training rows of each query.

    Args:
        query_embeddings: ``(n_query, d)`` float32.
        train_embeddings: ``(n_train, d)`` float32 or float16 (e.g. a memory-mapped view).
        k: rows per query and direction (``min(k, n_train)`` come back).
        chunk_rows: stored rows per selection step of the exact search.
        index: an approximate :class:`IvfIndex` over ``train_embeddings``; None = exact.
        nprobe: cells the approximate index visits per query.
    Returns:
        Two :class:`TopK`: scores ``(n_query, k)`` descending and row indices, then the most
        harmful with scores ascending.
    """
    if index is None:
        return exact_top_and_bottom_k(query_embeddings, train_embeddings, k, chunk_rows=chunk_rows)
    return (
        index.search(query_embeddings, k, nprobe=nprobe, largest=True),
        index.search(query_embeddings, k, nprobe=nprobe, largest=False),
    )


def group_influence(
    query_embeddings: np.ndarray,
    train_embeddings: np.ndarray,
    member_rows: Sequence[int] | np.ndarray,
    *,
    pooling: str = "attention",
) -> np.ndarray:
    """f(x, S) of the subset ``S = train_embeddings[member_rows]`` for each query.

    Args:
        query_embeddings: ``(n_query, d)``.
        train_embeddings: ``(n_train, d)`` float32 or float16.
        member_rows: distinct row indices of the subset's members (at least one).
        pooling: ``"attention"`` (the paper's group score) or ``"mean"``.
    Returns:
        ``(n_query,)`` float32 group scores.
    """
    rows = np.asarray(member_rows, dtype=np.int64)
    if rows.ndim != 1 or rows.size == 0:
        raise ValueError("the subset needs at least one member row")
    if np.unique(rows).size != rows.size:
        raise ValueError("the subset's member rows must be distinct")
    if rows.min() < 0 or rows.max() >= train_embeddings.shape[0]:
        raise ValueError(f"member rows must lie in 0..{train_embeddings.shape[0] - 1}")
    members = np.asarray(train_embeddings[np.sort(rows)], dtype=np.float32)
    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    membership = np.arange(members.shape[0], dtype=np.int64)[None, :]
    return group_scores(queries, members, membership, pooling=pooling)[:, 0].astype(np.float32)


def select(
    target_embeddings: np.ndarray,
    pool_embeddings: np.ndarray,
    budget: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Selection:
    """``budget`` pool rows for the target task, round-robin over the targets' rankings."""
    return round_robin_select(target_embeddings, pool_embeddings, budget, chunk_rows=chunk_rows)


# ---- with an encoder and example ids -----------------------------------------------------------


def check_queries(queries: Sequence[Example], source: str = "queries") -> None:
    """Raise ``ValueError`` when there is no query or a query has neither prompt nor response."""
    if isinstance(queries, Example):
        raise TypeError("queries must be a sequence of Example, not one Example")
    if len(queries) == 0:
        raise ValueError(f"{source}: no queries given (empty)")
    for i, query in enumerate(queries, start=1):
        if not isinstance(query, Example):
            raise TypeError(f"{source}, row {i}: expected an Example, got {type(query).__name__}")
        if not query.prompt.strip() and not query.response.strip():
            raise ValueError(
                f"{source}, row {i} ({query.example_id!r}): empty query (no prompt, no response)"
            )


@dataclass(frozen=True)
class SelectedExample:
    """One selected pool example: its id, the order it was taken in, and why."""

    example_id: str
    order: int
    best_rank: int
    target_id: str
    score: float


HYBRID_POOLING = "hybrid sum"
"""The group rule reported by ``group_influence`` for a hybrid encoder."""


class AttributionIndex:
    """An encoder plus stored embeddings ``(n, d)`` and their ``example_ids`` (same order).

    A hybrid encoder (``lexical_weight`` > 0) also needs ``lexical``, a BM25 index fitted on the
    pool's examples in the same row order: every query then scores h(x, z) = ẑ_dot + λ·ẑ_bm25
    (``airrep_core.attribution.hybrid``) exactly over the whole pool (the IVF index is not used), and a
    subset's influence is the sum of its members' h.
    """

    def __init__(
        self,
        encoder: QueryEncoder,
        embeddings: np.ndarray,
        example_ids: Sequence[str] | np.ndarray,
        config: SearchConfig | None = None,
        *,
        approximate: IvfIndex | None = None,
        lexical: Bm25Attributor | None = None,
    ) -> None:
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError(f"embeddings must be a non-empty (n, d) array, got {embeddings.shape}")
        if len(example_ids) != embeddings.shape[0]:
            raise ValueError(
                f"{len(example_ids)} example ids for {embeddings.shape[0]} embedding rows"
            )
        self.encoder = encoder
        self.embeddings = embeddings
        self.example_ids = np.asarray(example_ids, dtype=object)
        self.config = config or SearchConfig()
        if self.config.index == "ivf" and approximate is None:
            approximate = IvfIndex.build(embeddings, nlist=self.config.nlist, seed=self.config.seed)
        self.approximate = approximate if self.config.index == "ivf" else None
        self._row_of: dict[str, int] | None = None
        weight = float(getattr(encoder, "lexical_weight", 0.0))
        if weight > 0 and lexical is None:
            raise ValueError(
                f"the encoder is hybrid (lexical_weight={weight:g}): pass lexical=, a BM25 index "
                "fitted on the pool's examples in the embeddings' row order"
            )
        self.hybrid = (
            HybridScorer(embeddings, lexical, weight, self.config.chunk_rows)
            if weight > 0 and lexical is not None
            else None
        )

    @property
    def rows(self) -> int:
        return int(self.embeddings.shape[0])

    def rows_of(self, example_ids: Sequence[str], source: str = "example ids") -> np.ndarray:
        """``int64`` rows of ``example_ids``; ``KeyError`` naming the unknown ones."""
        if self._row_of is None:
            self._row_of = {e: i for i, e in enumerate(self.example_ids.tolist())}
        unknown = [e for e in example_ids if e not in self._row_of]
        if unknown:
            raise KeyError(
                f"{source}: {len(unknown)} id(s) not in the store (e.g. {unknown[:5]}); the store "
                "holds the dataset's example ids: the data's `id` field, the field named by "
                "--id-field at import, else content hashes"
            )
        return np.asarray([self._row_of[e] for e in example_ids], dtype=np.int64)

    def embed(self, queries: Sequence[Example], source: str = "queries") -> np.ndarray:
        """``(n_query, d)`` float32 embeddings of the queries (checked by :func:`check_queries`)."""
        check_queries(queries, source)
        vectors = self.encoder.encode_queries(
            list(queries), self.config.batch_size, precision=self.config.precision
        )
        return np.asarray(vectors, dtype=np.float32)

    def attribute(self, queries: Sequence[Example], k: int | None = None) -> list[dict[str, Any]]:
        """The most helpful and most harmful training examples of each query, as records.

        Each record: ``query_id``, ``direction`` (``helpful``/``harmful``), ``rank`` (1-based),
        ``example_id``, ``score`` (s(x, z), float). Helpful ranks are by descending score,
        harmful by ascending.
        """
        if self.hybrid is not None:  # exact: the lexical term needs every row's score
            scores = self.hybrid.scores(self.embed(queries), queries)
            helpful, harmful = top_and_bottom_k(scores, k or self.config.k)
        else:
            helpful, harmful = attribute(
                self.embed(queries),
                self.embeddings,
                k or self.config.k,
                chunk_rows=self.config.chunk_rows,
                index=self.approximate,
                nprobe=self.config.nprobe,
            )
        records = []
        for q, query in enumerate(queries):
            for direction, top in (("helpful", helpful), ("harmful", harmful)):
                for rank, (row, score) in enumerate(
                    zip(top.indices[q], top.scores[q], strict=True)
                ):
                    if row < 0:  # the approximate index found fewer rows
                        continue
                    records.append(
                        {
                            "query_id": query.example_id,
                            "direction": direction,
                            "rank": rank + 1,
                            "example_id": str(self.example_ids[row]),
                            "score": float(score),
                        }
                    )
        return records

    def group_influence(
        self,
        subset_ids: Sequence[str],
        queries: Sequence[Example],
        *,
        pooling: str | None = None,
        source: str = "subset",
    ) -> list[dict[str, Any]]:
        """f(x, S) of the subset ``subset_ids`` for each query: records of ``query_id``,
        ``score``, ``pooling``, ``members``."""
        if len(subset_ids) == 0:
            raise ValueError(f"{source}: the subset is empty")
        duplicates = sorted(e for e, n in Counter(subset_ids).items() if n > 1)
        if duplicates:
            raise ValueError(f"{source}: duplicate example ids {duplicates[:5]}")
        rows = self.rows_of(subset_ids, source)
        if self.hybrid is not None:  # the hybrid's group rule: the sum of its members' scores
            pooling = HYBRID_POOLING
            scores = self.hybrid.scores(self.embed(queries), queries)[:, rows].sum(axis=1)
        else:
            pooling = pooling or self.config.pooling
            scores = group_influence(self.embed(queries), self.embeddings, rows, pooling=pooling)
        return [
            {
                "query_id": query.example_id,
                "score": float(score),
                "pooling": pooling,
                "members": len(rows),
            }
            for query, score in zip(queries, scores, strict=True)
        ]

    def select(self, targets: Sequence[Example], budget: int) -> list[SelectedExample]:
        """``budget`` stored examples for the target task, in the order taken (round-robin)."""
        if not isinstance(budget, int) or not 1 <= budget <= self.rows:
            raise ValueError(
                f"budget={budget!r} is invalid; allowed: 1..{self.rows} (the pool size)"
            )
        if self.hybrid is not None:
            scores = self.hybrid.scores(self.embed(targets, "targets"), targets)
            chosen = round_robin_from_scores(scores, budget)
        else:
            chosen = select(
                self.embed(targets, "targets"),
                self.embeddings,
                budget,
                chunk_rows=self.config.chunk_rows,
            )
        return [
            SelectedExample(
                example_id=str(self.example_ids[row]),
                order=i + 1,
                best_rank=int(rank) + 1,
                target_id=targets[int(target)].example_id,
                score=float(score),
            )
            for i, (row, rank, target, score) in enumerate(
                zip(chosen.indices, chosen.ranks, chosen.targets, chosen.scores, strict=True)
            )
        ]
