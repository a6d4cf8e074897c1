"""The token bag: a dense embedding of an example in the target LM's own token-embedding space.

b(z) = (mean of E[v] over the tokens v the target LM reads of z's response − c) · s · √w, where E is
the target LM's input-embedding table θ₀ (``(V, d_lm)``), the tokens are those the LM is
fine-tuned and scored on (``lm.data.read_token_ids`` at the labels' ``max_length``), c and s centre
and scale the bags of a corpus (fitted on the label corpus: mean zero, mean squared norm one) and w
is the weight the encoder's training chose on held-out labels. b(x)·b(z) = w · (a soft token
overlap of x and z in the geometry the LM learns its next tokens in). The encoder appends b to its
projected embedding, so one dot product scores both (DESIGN.md §2, label-efficient recipe).

Why: at the ``mini`` scale the subset labels mostly measure which response tokens a subset
teaches. Exact token overlap (BM25) captures part of that; the token bag adds tokens the LM treats
alike, which is what the gradient methods (LoGra) add to BM25 on the held-out label split
(``benchmarks/label_signal.py``).

Saved in a folder of its own: ``token_bag.safetensors`` (the table and the centre, float32),
``token_bag.json`` (max length, scale, weight) and the target LM's tokenizer in ``tokenizer/``.
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
    """Centred, scaled mean token embeddings of examples' responses (module docstring).

    Args:
        tokenizer: the target LM's transformers tokenizer (it must have an EOS token).
        table: ``(V, d_lm)`` float32, the target LM's input embeddings; a token id ≥ V is an error.
        max_length: the labels' fine-tuning ``max_length`` (which response tokens the LM reads).
        center: ``(d_lm,)`` float32 subtracted from every bag (zeros until ``fit``).
        scale: multiplies the centred bag (1 until ``fit``).
        weight: w ≥ 0; bags carry √w so that their dot products carry w.
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
    ) -> None:
        table = np.ascontiguousarray(table, dtype=np.float32)
        if table.ndim != 2:
            raise ValueError(f"table must be (vocab, d), got shape {table.shape}")
        if weight < 0:
            raise ValueError(f"weight={weight} is invalid; allowed: >= 0")
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

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Any, max_length: int) -> TokenBag:
        """A bag over ``model``'s input embeddings (a transformers causal LM), not yet fitted."""
        table = model.get_input_embeddings().weight.detach().float().cpu().numpy()
        return cls(tokenizer, table, max_length)

    @property
    def dim(self) -> int:
        """Width d_lm of a bag."""
        return int(self.table.shape[1])

    def mean_embeddings(self, examples: Sequence[Example]) -> np.ndarray:
        """``(n, d_lm)`` float32: each example's mean input embedding over the response tokens
        the LM reads (before centring, scaling and weighting)."""
        out = np.empty((len(examples), self.dim), dtype=np.float32)
        for row, example in enumerate(examples):
            ids = read_token_ids(
                self.tokenizer, example.prompt, example.response, self.max_length, True
            )
            if max(ids) >= self.table.shape[0]:
                raise ValueError(
                    f"example {example.example_id!r}: token id {max(ids)} is outside the "
                    f"embedding table ({self.table.shape[0]} rows); the tokenizer and the table "
                    "disagree"
                )
            out[row] = self.table[ids].mean(axis=0)
        return out

    def fit(self, examples: Sequence[Example]) -> TokenBag:
        """Set the centre to the examples' mean bag and the scale so that their centred bags have
        a mean squared norm of 1; returns ``self``."""
        self.fit_encode(examples)
        return self

    def fit_encode(self, examples: Sequence[Example]) -> np.ndarray:
        """``fit`` on ``examples``, then their ``(n, d_lm)`` float32 bags (``encode``), reading
        each example's tokens once."""
        if not examples:
            raise ValueError("fit needs at least one example")
        means = self.mean_embeddings(examples)
        self.center = means.mean(axis=0)
        mean_square = float(((means - self.center) ** 2).sum(axis=1).mean())
        self.scale = 1.0 / math.sqrt(mean_square) if mean_square > 0 else 1.0
        return self._finish(means)

    def encode(self, examples: Sequence[Example]) -> np.ndarray:
        """``(n, d_lm)`` float32 b(z) of each example (module docstring)."""
        return self._finish(self.mean_embeddings(examples))

    def _finish(self, means: np.ndarray) -> np.ndarray:
        """Centre, scale and weight ``(n, d_lm)`` mean embeddings."""
        return (means - self.center) * np.float32(self.scale * math.sqrt(self.weight))

    def save(self, directory: Path) -> None:
        """Write the table, the centre, the settings and the tokenizer into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {"table": torch.from_numpy(self.table), "center": torch.from_numpy(self.center)},
            str(directory / TABLE_FILE),
        )
        settings = {"max_length": self.max_length, "scale": self.scale, "weight": self.weight}
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
        )
