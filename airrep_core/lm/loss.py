"""Target-LM loss evaluation: each example's mean cross-entropy over its response tokens.

This is the label ℓ of DESIGN.md §2 ("Labels"): for an example x = (prompt, response) and a
model θ, ℓ(x; θ) = −(1/|R|) Σ_{t∈R} log p_θ(x_t | x_{<t}), with R the response tokens of
``lm.data.tokenize_example`` (the EOS token included). Two backends compute it behind the
``LossBackend`` base class: ``TransformersLossBackend`` here (any device, also used in-process right
after fine-tuning through ``response_losses_for_model``) and ``vllm_loss.VLLMLossBackend``
(vLLM prompt logprobs, one engine for a base model and its LoRA adapters).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from airrep_core.lm.data import (
    IGNORE_INDEX,
    MIN_MAX_LENGTH,
    TokenizedExample,
    collate,
    length_sorted_batches,
    tokenize_example,
)
from airrep_core.lm.loading import DTYPES, load_causal_lm
from airrep_core.runtime import resolve_device


class LossBackend(ABC):
    """Computes per-example response losses of a saved model (optionally with a LoRA adapter).

    A backend implements ``_response_losses``; callers use ``response_losses``, documented here
    once for every backend.
    """

    def response_losses(
        self,
        model_dir: Path,
        examples: Sequence[tuple[str, str]],
        *,
        adapter_dir: Path | None = None,
    ) -> np.ndarray:
        """``(n,)`` float32: mean response-token cross-entropy (nats) of each ``(prompt, response)``.

        ``model_dir`` is a ``save_pretrained`` directory holding the model and its tokenizer;
        ``adapter_dir`` a peft LoRA adapter directory on top of it. Order follows ``examples``.
        """
        return self._response_losses(model_dir, examples, adapter_dir)

    @abstractmethod
    def _response_losses(
        self, model_dir: Path, examples: Sequence[tuple[str, str]], adapter_dir: Path | None
    ) -> np.ndarray:
        """The backend's ``response_losses`` (same arguments and result)."""


def tokenize_pairs(
    tokenizer: Any, examples: Sequence[tuple[str, str]], max_length: int
) -> list[TokenizedExample]:
    """``lm.data.tokenize_example`` of each ``(prompt, response)``; errors name the bad index."""
    tokenized = []
    for index, pair in enumerate(examples):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise TypeError(
                f"examples[{index}] must be a (prompt, response) pair, got {pair!r:.80}"
            )
        try:
            tokenized.append(tokenize_example(tokenizer, pair[0], pair[1], max_length))
        except (TypeError, ValueError) as error:
            raise type(error)(f"examples[{index}]: {error}") from error
    return tokenized


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (padding is masked out, so any id is correct)."""
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    if pad_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token")
    return pad_id


def mean_response_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row mean cross-entropy over the labelled (response) tokens.

    Args:
        logits: ``(B, T, V)`` any float dtype; position ``t`` predicts token ``t + 1``.
        labels: ``(B, T)`` int64, ``IGNORE_INDEX`` where no loss is taken (unshifted).

    Returns:
        ``(B,)`` float32 on ``logits``' device; computed in float32, one row at a time so that at
        most ``(n_response_tokens, V)`` float32 logits exist at once.
    """
    shifted_labels = labels[:, 1:]
    losses = torch.empty(labels.shape[0], dtype=torch.float32, device=logits.device)
    for row in range(labels.shape[0]):
        keep = shifted_labels[row] != IGNORE_INDEX
        if not keep.any():
            raise ValueError(f"row {row} of the batch has no response token to take a loss on")
        row_logits = logits[row, :-1][keep].float()
        losses[row] = F.cross_entropy(row_logits, shifted_labels[row][keep], reduction="mean")
    return losses


def response_losses_for_model(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[tuple[str, str]],
    batch_size: int,
    max_length: int,
) -> np.ndarray:
    """Response losses of an already loaded causal LM (e.g. right after fine-tuning).

    Examples are tokenised with ``lm.data.tokenize_example``, batched by length (longest first,
    right padding), run on the model's device without gradients, and returned in input order.
    The model's train/eval mode is restored afterwards.

    Returns:
        ``(n,)`` float32, the mean response-token cross-entropy of each example (DESIGN.md §2).
    """
    tokenized = tokenize_pairs(tokenizer, examples, max_length)
    losses = np.empty(len(tokenized), dtype=np.float32)
    if not tokenized:
        return losses
    device = next(model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for indices in length_sorted_batches([len(t) for t in tokenized], batch_size):
                batch = collate([tokenized[i] for i in indices], pad_id)
                logits = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                ).logits
                losses[indices] = (
                    mean_response_losses(logits, batch["labels"].to(device)).cpu().numpy()
                )
    finally:
        model.train(was_training)
    return losses


class TransformersLossBackend(LossBackend):
    """``LossBackend`` on transformers (+ peft for LoRA adapters), CUDA when available.

    Args:
        batch_size: examples per forward pass (sorted by length, so padding is small).
        max_length: the most tokens per example (``lm.data`` truncation rule).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: weight dtype, one of ``DTYPES``; the loss itself is computed in float32.
    """

    def __init__(
        self, batch_size: int, max_length: int, device: str = "auto", dtype: str = "float32"
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an int >= 1")
        if not isinstance(max_length, int) or max_length < MIN_MAX_LENGTH:
            raise ValueError(
                f"max_length={max_length!r} is invalid; allowed: an int >= {MIN_MAX_LENGTH}"
            )
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is invalid; allowed: {sorted(DTYPES)}")
        resolve_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dtype = dtype

    def _response_losses(
        self, model_dir: Path, examples: Sequence[tuple[str, str]], adapter_dir: Path | None
    ) -> np.ndarray:
        model, tokenizer = load_causal_lm(
            model_dir, adapter_dir=adapter_dir, device=self.device, dtype=self.dtype
        )
        return response_losses_for_model(
            model, tokenizer, examples, self.batch_size, self.max_length
        )
