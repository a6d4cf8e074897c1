"""Fine-tune the base LM θ₀ on one subset, then evaluate the split's targets (DESIGN.md §2).

``SubsetFinetuner`` loads θ₀ once and serves many subsets: before each subset it restores the
same initial weights (and LoRA init) and reseeds, so two subsets differ only in their data. The
loop is plain PyTorch (no HF Trainer): AdamW, optional linear warm-up then constant / linear /
cosine schedule, grad-norm clip, response-only loss (prompt tokens masked, ``lm.data``), the
prompt template of DESIGN.md §2 (the chat template where the tokenizer has one).

The training loss is the mean cross-entropy over the batch's response tokens, computed from the
decoder's hidden states at the response positions only: the LM head (often the biggest matmul of
a small model: hidden x vocab) never runs on prompt tokens. This is exactly the loss of
``model(labels=...)`` (a test checks it), at a fraction of the cost when prompts are long.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from airrep_core.config.labels import FinetuneConfig
from airrep_core.data.examples import Example
from airrep_core.lm.data import IGNORE_INDEX, collate
from airrep_core.lm.loading import load_causal_lm
from airrep_core.lm.loss import pad_token_id, response_losses_for_model, tokenize_pairs
from airrep_core.records import JsonRecord
from airrep_core.runtime import precision_context, resolve_device, resolve_precision


@dataclass
class FinetuneStats(JsonRecord):
    """Cost of one subset's fine-tune and evaluation (for throughput reports).

    ``train_tokens`` counts non-padding tokens over all epochs, ``response_tokens`` the tokens
    the loss is taken on; ``final_train_loss`` is the mean loss of the last epoch's batches.
    """

    steps: int
    train_tokens: int
    response_tokens: int
    final_train_loss: float
    train_seconds: float
    eval_seconds: float


class SubsetFinetuner:
    """Fine-tunes one copy of θ₀ on subset after subset, always from the same start.

    Args:
        model_dir: a Hugging Face model directory (or hub id) of θ₀ with its tokenizer.
        config: fine-tuning and evaluation settings.

    Memory: one model, its AdamW state and one float32 copy of the initial trainable weights
    (the LoRA matrices only, with ``method="lora"``).
    """

    def __init__(self, model_dir: str | Path, config: FinetuneConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.eval_precision = resolve_precision(config.eval_precision, self.device)
        model, self.tokenizer = load_causal_lm(model_dir, self.device)
        if config.method == "lora":
            model = _with_lora(model, config)
        else:
            model.requires_grad_(True)
        self.model = model
        self.pad_id = pad_token_id(self.tokenizer)
        self._parameters = [p for p in model.parameters() if p.requires_grad]
        self._initial = [p.detach().clone() for p in self._parameters]

    def reset(self) -> None:
        """Restore the initial (θ₀, LoRA-init) weights."""
        with torch.no_grad():
            for parameter, initial in zip(self._parameters, self._initial, strict=True):
                parameter.copy_(initial)

    def run(
        self, subset: Sequence[Example], targets: Sequence[Example]
    ) -> tuple[np.ndarray, FinetuneStats]:
        """Reset, fine-tune on ``subset``, evaluate ``targets``.

        Returns:
            ``(losses, stats)``: ``losses`` ``(len(targets),)`` float32, each target's mean
            response-token cross-entropy ℓ under the fine-tuned model, in ``targets`` order.
        """
        started = time.perf_counter()
        stats = self.train(subset)
        train_seconds = time.perf_counter() - started
        losses = self.target_losses(targets)
        stats.train_seconds = round(train_seconds, 3)
        stats.eval_seconds = round(time.perf_counter() - started - train_seconds, 3)
        return losses, stats

    def train(self, subset: Sequence[Example]) -> FinetuneStats:
        """Reset and fine-tune on ``subset`` (``config.epochs`` epochs, seeded batch order)."""
        if not subset:
            raise ValueError("cannot fine-tune on an empty subset")
        config = self.config
        tokenized = tokenize_pairs(
            self.tokenizer, [(e.prompt, e.response) for e in subset], config.max_length
        )
        self.reset()
        torch.manual_seed(config.seed)
        order_generator = torch.Generator().manual_seed(config.seed)
        steps_per_epoch = math.ceil(len(tokenized) / config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        optimizer = torch.optim.AdamW(
            self._parameters,
            lr=config.learning_rate,
            betas=config.adam_betas,
            weight_decay=config.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, total_steps, config)
        )
        self.model.train()
        train_tokens = response_tokens = 0
        epoch_losses: list[float] = []
        for _ in range(config.epochs):
            epoch_losses = []
            order = torch.randperm(len(tokenized), generator=order_generator).tolist()
            for start in range(0, len(order), config.batch_size):
                batch = collate(
                    [tokenized[i] for i in order[start : start + config.batch_size]], self.pad_id
                )
                loss, n_response = response_token_loss(
                    self.model, batch, self.device, self.precision
                )
                loss.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self._parameters, config.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                epoch_losses.append(float(loss.detach()))
                train_tokens += int(batch["attention_mask"].sum())
                response_tokens += n_response
        self.model.eval()
        return FinetuneStats(
            steps=total_steps,
            train_tokens=train_tokens,
            response_tokens=response_tokens,
            final_train_loss=float(np.mean(epoch_losses)),
            train_seconds=0.0,
            eval_seconds=0.0,
        )

    def target_losses(self, targets: Sequence[Example], precision: str | None = None) -> np.ndarray:
        """``(len(targets),)`` float32 mean response-token losses under the current weights.

        ``precision`` overrides ``config.eval_precision`` (``"float32"``/``"bf16"``/``"auto"``).
        """
        precision = self.eval_precision if precision is None else precision
        with precision_context(precision, self.device):
            return response_losses_for_model(
                self.model,
                self.tokenizer,
                [(e.prompt, e.response) for e in targets],
                self.config.eval_batch_size,
                self.config.max_length,
            )


def response_token_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, precision: str
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the batch's response tokens, LM head on those positions only.

    Args:
        model: a transformers causal LM (or a peft wrapper of one).
        batch: ``lm.data.collate`` output: ``input_ids``, ``attention_mask``, ``labels`` ``(B, T)``.
    Returns:
        ``(loss, n)``: a float32 scalar with grad, equal to ``model(**batch).loss``, and the number
        ``n`` of response tokens it averages over.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    next_tokens = batch["labels"][:, 1:].to(device)
    keep = next_tokens != IGNORE_INDEX
    with precision_context(precision, device):
        hidden = causal_lm.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), next_tokens[keep]), int(keep.sum())


def lr_multiplier(step: int, total_steps: int, config: FinetuneConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up over ``warmup_ratio`` of the steps,
    then constant, linear to 0 or cosine to 0 (``config.lr_schedule``)."""
    warmup_steps = round(config.warmup_ratio * total_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if config.lr_schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _with_lora(model: torch.nn.Module, config: FinetuneConfig) -> torch.nn.Module:
    """Wrap ``model`` with freshly initialised LoRA adapters (seeded: the same init every run)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
