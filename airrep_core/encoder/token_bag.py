"""The token bag: a dense embedding of an example in the target LM's own token-embedding space.

b(z) = (Σ_t idf(v_t) E[v_t] / Σ_t idf(v_t) − c) · s · √w over the tokens v_1 … v_n the target LM
reads of z's response (``lm.data.read_token_ids`` at the labels' ``max_length``: the tokens it is
fine-tuned and scored on). E is the target LM's input-embedding table θ₀ (``(V, d_lm)``); idf(v) is
BM25's (lucene) inverse document frequency of v over the fitted corpus, so that rare tokens weigh
more than the ones every response shares (all 1 for the plain mean, ``idf_weighted=False``); c and
s centre and scale the bags of that corpus (mean zero, mean squared norm one) and w is the weight
the encoder's training chose on held-out labels. b(x)·b(z) = w · (a soft token overlap of x and z
in the geometry the LM learns its next tokens in). The encoder appends b to its projected
embedding, so one dot product scores both (DESIGN.md §2, label-efficient recipe).

A query (the side that is attributed) whose response reads more than ``max_query_tokens`` tokens
gets a zero bag (``encode_queries``): on the label splits the bag helps targets of a few tokens
and costs on long ones, whose exact n-gram overlap the hybrid's lexical term already scores
(``benchmarks/label_signal.py``). Training examples (the stored side) always carry their bag.

Why: at the ``mini`` scale the subset labels mostly measure which response tokens a subset
teaches. Exact token overlap (BM25) captures part of that; the token bag adds tokens the LM treats
alike, which is what the gradient methods (LoGra) add to BM25 on the held-out label split.

Saved in a folder of its own: ``token_bag.safetensors`` (the table, the centre and the idf,
float32), ``token_bag.json`` (max length, scale, weight, max query tokens) and the target LM's
tokenizer in ``tokenizer/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from airrep_core.data.examples import Example
from airrep_core.lm.data import read_token_ids

TABLE_FILE = "token_bag.safetensors"
SETTINGS_FILE = "token_bag.json"
TOKENIZER_DIR = "tokenizer"


class TokenBag:
    """Centred, scaled, idf-weighted mean token embeddings of responses (module docstring).

    Args:
        tokenizer: the target LM's transformers tokenizer (it must have an EOS token).
        table: ``(V, d_lm)`` float32, the target LM's input embeddings; a token id ≥ V is an error.
        max_length: the labels' fine-tuning ``max_length`` (which response tokens the LM reads).
        center: ``(d_lm,)`` float32 subtracted from every bag (zeros until ``fit``).
        scale: multiplies the centred bag (1 until ``fit``).
        weight: w ≥ 0; bags carry √w so that their dot products carry w.
        idf: ``(V,)`` float32 token weights (all 1 until ``fit`` sets them, or when
            ``idf_weighted`` is False).
        idf_weighted: whether ``fit`` sets ``idf`` from the corpus (else the plain mean).
        max_query_tokens: queries reading more tokens get a zero bag (0 = never).
    """

    def __init__(
        self,
        tokenizer: Any,
        table: np.ndarray,
        max_length: int,
        *,
        center: np.ndarray | None = None,
        scale: float = 1.0,
        weight: float = 1.0,
        idf: np.ndarray | None = None,
        idf_weighted: bool = True,
        max_query_tokens: int = 0,
    ) -> None:
        table = np.ascontiguousarray(table, dtype=np.float32)
        if table.ndim != 2:
            raise ValueError(f"table must be (vocab, d), got shape {table.shape}")
        if weight < 0:
            raise ValueError(f"weight={weight} is invalid; allowed: >= 0")
        if max_query_tokens < 0:
            raise ValueError(f"max_query_tokens={max_query_tokens} is invalid; allowed: >= 0")
        self.tokenizer = tokenizer
        self.table = table
        self.max_length = int(max_length)
        self.center = (
            np.zeros(table.shape[1], np.float32)
            if center is None
            else np.asarray(center, np.float32)
        )
        self.scale = float(scale)
        self.weight = float(weight)
        self.idf = (
            np.ones(table.shape[0], np.float32) if idf is None else np.asarray(idf, np.float32)
        )
        if self.idf.shape != (table.shape[0],):
            raise ValueError(f"idf must be ({table.shape[0]},), got shape {self.idf.shape}")
        self.idf_weighted = bool(idf_weighted)
        self.max_query_tokens = int(max_query_tokens)

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, tokenizer: Any, max_length: int, **settings: Any
    ) -> TokenBag:
        """A bag over ``model``'s input embeddings (a transformers causal LM), not yet fitted;
        ``settings``: the constructor's keywords (``idf_weighted``, ``max_query_tokens``)."""
        table = model.get_input_embeddings().weight.detach().float().cpu().numpy()
        return cls(tokenizer, table, max_length, **settings)

    @property
    def dim(self) -> int:
        """Width d_lm of a bag."""
        return int(self.table.shape[1])

    def read_tokens(self, examples: Sequence[Example]) -> list[list[int]]:
        """The response token ids the LM reads of each example (checked against the table)."""
        rows = []
        for example in examples:
            ids = read_token_ids(
                self.tokenizer, example.prompt, example.response, self.max_length, True
            )
            if max(ids) >= self.table.shape[0]:
                raise ValueError(
                    f"example {example.example_id!r}: token id {max(ids)} is outside the "
                    f"embedding table ({self.table.shape[0]} rows); the tokenizer and the table "
                    "disagree"
                )
            rows.append(ids)
        return rows

    def mean_embeddings(self, tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """``(n, d_lm)`` float32: each token list's idf-weighted mean input embedding (before
        centring, scaling and weighting)."""
        out = np.empty((len(tokens), self.dim), dtype=np.float32)
        for row, ids in enumerate(tokens):
            weights = self.idf[ids]
            out[row] = weights @ self.table[ids] / weights.sum()
        return out

    def fit(self, examples: Sequence[Example]) -> TokenBag:
        """``fit_tokens`` on the examples' tokens (``read_tokens``); returns ``self``."""
        self.fit_tokens(self.read_tokens(examples))
        return self

    def fit_tokens(self, tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Set the idf (when ``idf_weighted``) from the token lists, the centre to their mean bag
        and the scale so that their centred bags have a mean squared norm of 1; returns their
        ``(n, d_lm)`` float32 bags (``encode_tokens``)."""
        if not tokens:
            raise ValueError("fit needs at least one example")
        if self.idf_weighted:
            self.idf = bm25_idf(tokens, self.table.shape[0])
        means = self.mean_embeddings(tokens)
        self.center = means.mean(axis=0)
        mean_square = float(((means - self.center) ** 2).sum(axis=1).mean())
        self.scale = 1.0 / math.sqrt(mean_square) if mean_square > 0 else 1.0
        return self._finish(means)

    def encode_tokens(
        self, tokens: Sequence[Sequence[int]], *, queries: bool = False
    ) -> np.ndarray:
        """``(n, d_lm)`` float32 bags of token lists (``read_tokens``): b(z) of stored examples,
        or with ``queries`` b(x) of queries, zero for one past ``max_query_tokens`` (when > 0)."""
        bags = self._finish(self.mean_embeddings(tokens))
        if queries and self.max_query_tokens:
            bags[[len(ids) > self.max_query_tokens for ids in tokens]] = 0.0
        return bags

    def encode(self, examples: Sequence[Example]) -> np.ndarray:
        """``(n, d_lm)`` float32 b(z) of each example (module docstring): the stored side."""
        return self.encode_tokens(self.read_tokens(examples))

    def encode_queries(self, examples: Sequence[Example]) -> np.ndarray:
        """``(n, d_lm)`` float32 b(x) of each query (``encode_tokens`` with ``queries``)."""
        return self.encode_tokens(self.read_tokens(examples), queries=True)

    def _finish(self, means: np.ndarray) -> np.ndarray:
        """Centre, scale and weight ``(n, d_lm)`` mean embeddings."""
        return (means - self.center) * np.float32(self.scale * math.sqrt(self.weight))

    def save(self, directory: Path) -> None:
        """Write the table, the centre, the settings and the tokenizer into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"table": self.table, "center": self.center, "idf": self.idf}
        save_file({k: torch.from_numpy(v) for k, v in tensors.items()}, str(directory / TABLE_FILE))
        settings = {
            "max_length": self.max_length,
            "scale": self.scale,
            "weight": self.weight,
            "idf_weighted": self.idf_weighted,
            "max_query_tokens": self.max_query_tokens,
        }
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))

    @classmethod
    def load(cls, directory: Path) -> TokenBag:
        """The bag ``save`` wrote into ``directory`` (safetensors and JSON, nothing unpickled)."""
        try:
            settings = json.loads((directory / SETTINGS_FILE).read_text())
            tensors = load_file(str(directory / TABLE_FILE))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{directory}: not a saved token bag ({e})") from e
        return cls(
            AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR)),
            tensors["table"].numpy(),
            int(settings["max_length"]),
            center=tensors["center"].numpy(),
            scale=float(settings["scale"]),
            weight=float(settings["weight"]),
            # Bags saved before idf weighting and the query cut-off read as the plain mean.
            idf=tensors["idf"].numpy() if "idf" in tensors else None,
            idf_weighted=bool(settings.get("idf_weighted", False)),
            max_query_tokens=int(settings.get("max_query_tokens", 0)),
        )


def bm25_idf(tokens: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """``(vocab_size,)`` float32 BM25 (lucene) idf over documents given as token-id lists:
    log(1 + (N − df + 0.5) / (df + 0.5)), df = the number of documents holding the token (a token
    no document holds gets the largest value, df = 0)."""
    df = np.zeros(vocab_size, np.float64)
    for ids in tokens:
        df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    n = len(tokens)
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
