"""Representation baselines: the off-the-shelf encoder and RDS (the target LM's hidden states).

- ``EncoderAttributor``: the untrained text encoder (all-MiniLM-L6-v2 without AirRep's projection,
  the paper's "GTE-Small off the shelf" row) on ``encoder_text``; cosine similarity by default.
- ``RdsAttributor`` (representation-based data selection): the mean of the target LM's last-layer
  hidden states (after the final norm) over all tokens of the example (prompt and response, as
  ``lm.data.tokenize_example`` tokenises them); cosine similarity by default.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from airrep_core.config.baselines import EncoderBaselineConfig, RdsConfig
from airrep_core.data.examples import Example
from airrep_core.lm.data import collate, length_sorted_batches, tokenize_example
from airrep_core.methods.interface import Attributor, NotFittedError
from airrep_core.runtime import precision_context


class ExampleEncoder(Protocol):
    """What ``EncoderAttributor`` needs: ``AirRepEncoder.encode_examples`` (n, d) float32."""

    def encode_examples(
        self, examples: Sequence[Example], batch_size: int = 64, *, precision: str = "float32"
    ) -> np.ndarray: ...


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero); float32."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class EmbeddingAttributor(Attributor):
    """Score = similarity of fixed-size embeddings; subclasses define ``embed``."""

    def __init__(self, normalize: bool) -> None:
        super().__init__()
        self.normalize = normalize
        self._train_embeddings: np.ndarray | None = None

    @abc.abstractmethod
    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        """Embeddings ``(n, d)`` float32 of ``examples`` (before normalisation)."""

    def _embed_normalized(self, examples: Sequence[Example]) -> np.ndarray:
        embeddings = np.asarray(self.embed(examples), dtype=np.float32)
        return l2_normalize(embeddings) if self.normalize else embeddings

    def _fit(self, train: Sequence[Example]) -> None:
        self._train_embeddings = self._embed_normalized(train)

    def _score(self, queries: Sequence[Example]) -> np.ndarray:
        if self._train_embeddings is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted")
        return self._embed_normalized(queries) @ self._train_embeddings.T

    @property
    def storage_floats_per_example(self) -> float:
        if self._train_embeddings is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted")
        return float(self._train_embeddings.shape[1])


class EncoderAttributor(EmbeddingAttributor):
    """The off-the-shelf encoder baseline: ``encoder.encode_examples`` then cosine (or dot).

    Build the paper's row with ``AirRepEncoder.from_backbone(config.backbone, projection=False,
    max_length=config.max_length)`` (see ``build_off_the_shelf_encoder``).
    """

    name = "encoder"

    def __init__(
        self, encoder: ExampleEncoder, config: EncoderBaselineConfig | None = None
    ) -> None:
        config = config or EncoderBaselineConfig()
        super().__init__(normalize=config.normalize)
        self.config = config
        self.encoder = encoder

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        return self.encoder.encode_examples(
            examples, self.config.batch_size, precision=self.config.precision
        )


def build_off_the_shelf_encoder(config: EncoderBaselineConfig) -> EncoderAttributor:
    """``EncoderAttributor`` over ``config.backbone`` loaded without AirRep's projection."""
    from airrep_core.encoder.model import AirRepEncoder

    encoder = AirRepEncoder.from_backbone(
        config.backbone, projection=False, max_length=config.max_length
    )
    return EncoderAttributor(encoder, config)


class RdsAttributor(EmbeddingAttributor):
    """RDS: mean-pooled last-layer hidden states of the target LM (float32 ``(n, hidden)``)."""

    name = "rds"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: RdsConfig | None = None,
    ) -> None:
        config = config or RdsConfig()
        super().__init__(normalize=config.normalize)
        self.config = config
        self.model = model
        self.tokenizer = tokenizer

    @torch.no_grad()
    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        tokenized = [
            tokenize_example(self.tokenizer, e.prompt, e.response, self.config.max_length)
            for e in examples
        ]
        device = self.model.device
        out = np.empty((len(examples), self.model.config.hidden_size), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            for indices in length_sorted_batches(
                [len(t) for t in tokenized], self.config.batch_size
            ):
                batch = collate(
                    [tokenized[i] for i in indices], pad_id=pad_token_id(self.tokenizer)
                )
                mask = batch["attention_mask"].to(device)
                with precision_context(self.config.precision, device):
                    hidden = self.model.base_model(
                        input_ids=batch["input_ids"].to(device), attention_mask=mask
                    ).last_hidden_state
                weights = mask.unsqueeze(-1).to(torch.float32)
                pooled = (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1)
                out[indices] = pooled.cpu().numpy()
        finally:
            self.model.train(was_training)
        return out


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id, else its EOS id (padding is masked out, so any id works)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token")
