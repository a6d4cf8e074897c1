"""Lexical baselines: TF-IDF cosine (scikit-learn) and BM25 (bm25s).

Text used for both documents (train examples) and queries: by default ``examples.encoder_text``
— ``"Question: " + prompt (first 256 words) + "\\nAnswer: " + response`` — the text the paper's
encoder sees; the constant ``Question``/``Answer`` words occur in every document and get the
lowest IDF. BM25 can instead read the response alone (``Bm25Config.view``) in the target LM's own
tokens (``Bm25Config.tokens``), optionally only those the LM reads under its fine-tuning truncation
(``Bm25Config.lm_max_length``): the ``bm25_response`` baseline. The hybrid's lexical term adds
n-grams of those tokens (``Bm25Config.ngram_weights``): one BM25 index per order, z-scored per
query and summed with weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from airrep_core.config.baselines import Bm25Config, TfidfConfig
from airrep_core.data.examples import Example, view_text
from airrep_core.lm.data import read_token_ids
from airrep_core.methods.interface import Attributor, NotFittedError, zscore_rows

NGRAM_SEPARATOR = "\x1f"
"""Joins the terms of an n-gram into one BM25 term (the ASCII unit separator: no tokenizer piece
or bm25s word contains it)."""


def ngram_terms(terms: Sequence[str], order: int) -> list[str]:
    """The runs of ``order`` consecutive ``terms``, each joined by ``NGRAM_SEPARATOR`` into one
    term (``order`` = 1: the terms themselves); ``len(terms) - order + 1`` of them, none when the
    text is shorter than ``order``."""
    if order == 1:
        return list(terms)
    return [NGRAM_SEPARATOR.join(terms[k : k + order]) for k in range(len(terms) - order + 1)]


def example_texts(
    examples: Sequence[Example], max_prompt_words: int, view: str = "question_answer"
) -> list[str]:
    """Each example's text in ``view`` (``examples.view_text``): what the lexical methods index
    and query with."""
    return [view_text(e, view, max_prompt_words) for e in examples]


if TYPE_CHECKING:
    import bm25s


class TfidfAttributor(Attributor):
    """Cosine similarity of L2-normalised TF-IDF vectors; IDF from the train set.

    Storage: a sparse row per example; ``storage_floats_per_example`` is the mean number of
    non-zero entries (term indices not counted).
    """

    name = "tfidf"

    def __init__(self, config: TfidfConfig | None = None) -> None:
        super().__init__()
        self.config = config or TfidfConfig()
        self._vectorizer: TfidfVectorizer | None = None
        self._train_matrix = None

    def _fit(self, train: Sequence[Example]) -> None:
        self._vectorizer = TfidfVectorizer(
            lowercase=self.config.lowercase,
            ngram_range=(1, self.config.ngram_max),
            sublinear_tf=self.config.sublinear_tf,
            min_df=self.config.min_df,
            norm="l2",
            dtype=np.float32,
        )
        texts = example_texts(train, self.config.max_prompt_words)
        try:
            self._train_matrix = self._vectorizer.fit_transform(texts)
        except ValueError as e:  # e.g. "empty vocabulary" when every text is stop-words/punctuation
            raise ValueError(f"TF-IDF cannot index the {len(texts)} train texts: {e}") from e

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        if self._vectorizer is None:
            raise NotFittedError("TfidfAttributor is not fitted")
        query_matrix = self._vectorizer.transform(
            example_texts(queries, self.config.max_prompt_words)
        )
        # Rows are L2-normalised, so the dot product is the cosine similarity.
        return np.asarray((query_matrix @ self._train_matrix.T).toarray(), dtype=np.float32)

    @property
    def storage_floats_per_example(self) -> float:
        if self._train_matrix is None:
            raise NotFittedError("TfidfAttributor is not fitted")
        return float(self._train_matrix.nnz / self._train_matrix.shape[0])


class Bm25Attributor(Attributor):
    """BM25 relevance of each train document to the query text (bm25s, numpy backend).

    Terms (``config.tokens``): bm25s words (lowercase, 2+ word characters, English stop-words
    removed with ``stopwords="en"``, no stemming), or the pieces of the target LM's ``tokenizer``
    (a transformers tokenizer): with ``config.lm_max_length`` > 0 exactly the pieces the LM reads
    (``lm.data.read_token_ids``), else the view's text tokenised after a space.
    A query with no indexed term scores 0 everywhere.
    N-grams (``config.ngram_weights`` = (a_1, a_2, ...)): one bm25s index per order n with
    a_n > 0, over ``ngram_terms(terms, n)``. One such order scores its plain BM25; more score
    Σ_n a_n · zscore_rows(BM25_n), z-scored per query over the fitted documents (so a pool's
    ranking needs the whole pool scored, as the hybrid does).
    Storage: ``storage_floats_per_example`` = the mean number of distinct indexed terms (n-grams
    of every order) per document (bm25s stores one precomputed score per (document, term) pair).
    """

    name = "bm25"

    def __init__(self, config: Bm25Config | None = None, tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config or Bm25Config()
        if self.config.needs_tokenizer and tokenizer is None:
            raise ValueError("BM25 over target-LM tokens (tokens='target_lm') needs tokenizer=")
        self.tokenizer = tokenizer
        self._retrievers: dict[int, bm25s.BM25 | None] = {}
        self._floats_per_example = 0.0

    def _tokenize(self, examples: Sequence[Example]) -> list[list[str]]:
        config = self.config
        if config.needs_tokenizer and config.lm_max_length:
            ids = [
                read_token_ids(
                    self.tokenizer,
                    e.prompt,
                    e.response,
                    config.lm_max_length,
                    response_only=config.view == "response",
                )
                for e in examples
            ]
            return [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
        texts = example_texts(examples, config.max_prompt_words, config.view)
        if config.needs_tokenizer:
            ids = self.tokenizer([f" {t}" for t in texts], add_special_tokens=False)["input_ids"]
            return [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
        bm25s = _import_bm25s()
        return bm25s.tokenize(
            texts,
            lower=True,
            stopwords=self.config.stopwords or None,
            return_ids=False,
            show_progress=False,
        )

    @property
    def _orders(self) -> dict[int, float]:
        """``{n: a_n}`` for every order with a positive weight."""
        return {n: a for n, a in enumerate(self.config.ngram_weights, start=1) if a > 0}

    def _fit(self, train: Sequence[Example]) -> None:
        tokens = self._tokenize(train)
        bm25s = _import_bm25s()
        self._retrievers = {}
        floats = 0.0
        for order in self._orders:
            documents = [ngram_terms(doc, order) for doc in tokens]
            floats += float(np.mean([len(set(doc)) for doc in documents]))
            if not any(documents):  # no document is `order` terms long: this order scores 0
                self._retrievers[order] = None
                continue
            retriever = bm25s.BM25(
                k1=self.config.k1, b=self.config.b, method=self.config.method, backend="numpy"
            )
            retriever.index(documents, show_progress=False)
            self._retrievers[order] = retriever
        self._floats_per_example = floats

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        if not self._retrievers:
            raise NotFittedError("Bm25Attributor is not fitted")
        query_tokens = self._tokenize(queries)
        orders = self._orders
        if len(orders) == 1:
            return self._order_scores(query_tokens, next(iter(orders)))
        total = np.zeros((len(queries), self.num_train), dtype=np.float32)
        for order, weight in orders.items():
            total += np.float32(weight) * zscore_rows(self._order_scores(query_tokens, order))
        return total

    def _order_scores(self, query_tokens: Sequence[Sequence[str]], order: int) -> np.ndarray:
        """``(n_query, num_train)`` float32 BM25 of each query's ``order``-grams."""
        scores = np.zeros((len(query_tokens), self.num_train), dtype=np.float32)
        retriever = self._retrievers[order]
        if retriever is None:
            return scores
        vocab = retriever.vocab_dict
        for row, tokens in enumerate(query_tokens):
            known = [term for term in ngram_terms(tokens, order) if term in vocab]
            if known:
                scores[row] = retriever.get_scores(known)
        return scores

    @property
    def storage_floats_per_example(self) -> float:
        if not self._retrievers:
            raise NotFittedError("Bm25Attributor is not fitted")
        return self._floats_per_example


def _import_bm25s():
    """bm25s, imported on first use: it loads numba/llvmlite, whose objects break vLLM's kernel
    registration (vllm.triton_utils.dispatcher) in any process that later starts a vLLM engine.
    Its logger announces every index build at DEBUG, which a DEBUG root handler (Prefect's)
    prints once per fit: only its warnings are kept."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s
