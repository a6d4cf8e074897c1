"""Warm-up (short pretraining) of the scratch base LM on the corpus's base share.

A randomly initialised model gives every target the same, uninformative loss; warming it up on
text of the same kind first makes fine-tuning on a subset move target losses in a data-dependent
way (DESIGN.md §6: held-out loss 9.05 → 4.79 in 780 steps). The text is each example in the LM
format (``lm_prompt(prompt) + " " + response``), EOS-separated, concatenated and cut into blocks
of ``block_size`` tokens; the loss is on every token. Training stops when the held-out loss has
not improved by ``min_improvement`` for ``patience`` evaluations, or at the ``max_steps`` budget;
the best held-out checkpoint is kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from airrep_core.config.labels import BaseModelConfig
from airrep_core.data.examples import Example, lm_prompt
from airrep_core.runtime import precision_context

log = logging.getLogger("airrep.warmup")

MIN_LR_FRACTION = 0.1
"""The cosine schedule decays the learning rate to this fraction of its peak at ``max_steps``."""


@dataclass
class WarmupResult:
    """``heldout_curve``: ``(step, held-out loss)`` at step 0 and at every evaluation."""

    steps: int
    best_loss: float
    stopped_early: bool
    heldout_curve: list[tuple[int, float]]


def warmup_text(example: Example) -> str:
    """The example as plain LM text, the same format fine-tuning sees (without the template)."""
    return f"{lm_prompt(example.prompt)} {example.response}"


def pack_blocks(tokenizer: object, texts: Sequence[str], block_size: int) -> torch.Tensor:
    """Concatenate the texts' tokens, each followed by EOS, and cut into full blocks.

    Returns:
        ``(n_blocks, block_size)`` int64; the tail shorter than a block is dropped.
    Raises:
        ValueError: the texts make less than one block.
    """
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    stream = [token for ids in encoded for token in (*ids, eos)]
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ValueError(
            f"{len(texts)} texts make {len(stream)} tokens, less than one block of {block_size}"
        )
    return torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(
        n_blocks, block_size
    )


@torch.no_grad()
def block_loss(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> float:
    """Mean next-token cross-entropy (nats) over every predicted token of ``blocks`` ``(B, T)``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(device)
        with precision_context(precision, device):
            logits = model(input_ids=batch).logits
        loss = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            batch[:, 1:].reshape(-1),
            reduction="sum",
        )
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train(was_training)
    return total / count


def warm_up(
    model: torch.nn.Module,
    train_blocks: torch.Tensor,
    heldout_blocks: torch.Tensor,
    config: BaseModelConfig,
    device: torch.device,
) -> WarmupResult:
    """Pretrain ``model`` in place on ``train_blocks`` ``(N, T)`` int64 (module docstring).

    AdamW (``config.learning_rate``, ``weight_decay``), linear warm-up then cosine decay over the
    ``max_steps`` budget, grad-norm clip 1.0, epochs over the blocks in a seeded order. On return
    the model holds the weights of the best held-out evaluation.
    """
    if len(train_blocks) < config.batch_size:
        raise ValueError(
            f"{len(train_blocks)} warm-up blocks, fewer than one batch of {config.batch_size}"
        )
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, config.lr_warmup_steps, config.max_steps)
    )

    def evaluate() -> float:
        return block_loss(model, heldout_blocks, config.batch_size, device, config.precision)

    best_loss = evaluate()
    best_state = _clone_state(model)
    curve = [(0, best_loss)]
    evaluations_without_gain = 0
    step = 0
    stopped_early = False
    model.train()
    while step < config.max_steps and not stopped_early:
        order = torch.randperm(len(train_blocks), generator=generator)
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            batch = train_blocks[order[start : start + config.batch_size]].to(device)
            with precision_context(config.precision, device):
                logits = model(input_ids=batch).logits
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % config.eval_every == 0 or step == config.max_steps:
                heldout = evaluate()
                curve.append((step, heldout))
                log.info("warm-up step %d/%d: held-out loss %.4f", step, config.max_steps, heldout)
                if heldout < best_loss - config.min_improvement:
                    best_loss, best_state = heldout, _clone_state(model)
                    evaluations_without_gain = 0
                else:
                    evaluations_without_gain += 1
                    stopped_early = evaluations_without_gain >= config.patience
            if step >= config.max_steps or stopped_early:
                break
    model.load_state_dict(best_state)
    model.eval()
    return WarmupResult(
        steps=step, best_loss=best_loss, stopped_early=stopped_early, heldout_curve=curve
    )


def _warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear 0 → 1 over ``warmup_steps``, cosine 1 → 0.1 after."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
