"""AirRep behind the ``Attributor`` interface (DESIGN.md §2 "Scores", §3 "LDS").

Per-example score s(x, z) = Enc(x)ᵀ Enc(z); the group score of a subset S is AirRep's own rule,
not the baselines' sum: attention pooling f(x, S) = Σᵢ softmax_i(|sᵢ|) sᵢ, or the mean-pooling
ablation f = mean_i sᵢ (``airrep_core.encoder.scoring.pool_scores``).

A hybrid encoder (``encoder.lexical_weight`` > 0, chosen on held-out labels) scores
h(x, z) = ẑ_enc(x, z) + λ · ẑ_bm25(x, z), both z-scored per query over the fitted pool
(``airrep_core.attribution.hybrid``), and a subset by the sum of its members' h: BM25 is fitted on the same
pool, so the method stores one embedding per example plus BM25's per-term scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from airrep_core.attribution.hybrid import hybrid_scores
from airrep_core.config.encoder import POOLINGS
from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.scoring import example_scores, pad_membership, pool_scores
from airrep_core.methods.interface import (
    Attributor,
    NotFittedError,
    check_scores,
    check_subsets,
    sum_group_scores,
)
from airrep_core.methods.lexical import Bm25Attributor
from airrep_core.methods.registry import method_spec

POOLING_METHOD_NAMES = {"attention": "airrep", "mean": "airrep_mean"}
"""Table name of AirRep with each group pooling."""


class AirRepAttributor(Attributor):
    """A (trained) AirRep encoder: embeddings once, dot products, AirRep's group pooling.

    Args:
        encoder: the encoder (``AirRepEncoder.from_pretrained`` of an ``encoder`` artifact).
        pooling: ``"attention"`` (the method) or ``"mean"`` (the ablation).
        batch_size: encoder batch size.
        precision: ``"float32"``, ``"bf16"`` (autocast) or ``"auto"``.
        hybrid: use the encoder's lexical term when it has one (False: the dot product alone).
    """

    def __init__(
        self,
        encoder: AirRepEncoder,
        pooling: str = "attention",
        batch_size: int = 64,
        precision: str = "float32",
        *,
        hybrid: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is invalid; allowed: {POOLINGS}")
        self.name = POOLING_METHOD_NAMES[pooling]
        self.encoder = encoder
        self.pooling = pooling
        self.batch_size = batch_size
        self.precision = precision
        self._train_embeddings: np.ndarray | None = None
        self.lexical = (
            Bm25Attributor(encoder.lexical, tokenizer=encoder.lexical_tokenizer)
            if hybrid and encoder.lexical_weight > 0
            else None
        )

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        """``(n, d)`` float32 embeddings Enc(z) of training examples (the stored side)."""
        return self.encoder.encode_examples(examples, self.batch_size, precision=self.precision)

    def _fit(self, train: Sequence[Example]) -> None:
        self._train_embeddings = self.embed(train)
        if self.lexical is not None:
            self.lexical.fit(train)

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        if self._train_embeddings is None:
            raise NotFittedError("AirRepAttributor is not fitted")
        queries_embedded = self.encoder.encode_queries(
            queries, self.batch_size, precision=self.precision
        )
        scores = example_scores(queries_embedded, self._train_embeddings)
        if self.lexical is None:
            return scores
        return hybrid_scores(scores, self.lexical.score(queries), self.encoder.lexical_weight)

    @property
    def storage_floats_per_example(self) -> float:
        """d (one embedding per training example), plus BM25's scores for a hybrid encoder."""
        lexical = self.lexical.storage_floats_per_example if self.lexical is not None else 0.0
        return float(self.encoder.dim) + lexical

    @property
    def group_rule(self) -> str:
        """How subset scores are formed (for the report)."""
        bag = self.encoder.token_bag
        dot = f"dot incl. token bag w={bag.weight:g}" if bag is not None else "dot"
        if bag is not None and bag.max_query_tokens:
            dot += f" on queries of ≤ {bag.max_query_tokens} tokens"
        if self.lexical is not None:
            weights = self.encoder.lexical.ngram_weights
            orders = [str(n) for n, a in enumerate(weights, start=1) if a > 0]
            bm25 = "BM25" if orders == ["1"] else f"BM25 of {','.join(orders)}-grams"
            return f"sum of hybrid scores (z-scored {dot} + {self.encoder.lexical_weight:g}·{bm25})"
        rule = method_spec(self.name).group_rule
        return f"{rule} ({dot})" if bag is not None else rule

    def group_score(self, scores: np.ndarray, subsets: Sequence[np.ndarray]) -> np.ndarray:
        """Subset scores ``(n_query, n_subsets)`` float32 with AirRep's pooling.

        ``scores``: ``(n_query, n_train)`` per-example scores sᵢ; ``subsets``: index arrays into
        the train set. Attention: f(x, S) = Σ_{i∈S} softmax(|s|)ᵢ sᵢ; mean: f = mean_{i∈S} sᵢ.
        """
        scores = check_scores(scores)
        subsets = check_subsets(subsets, scores.shape[1])
        if self.lexical is not None:
            return sum_group_scores(scores, subsets)
        if any(len(s) == 0 for s in subsets):
            raise ValueError("AirRep pooling needs every subset to have at least one member")
        index, mask = pad_membership([s.tolist() for s in subsets])
        per_member = scores.astype(np.float64)[:, index]
        pooled = pool_scores(per_member, mask[None], self.pooling)
        return np.asarray(pooled, dtype=np.float32)
