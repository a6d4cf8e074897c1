"""Training the AirRep encoder on split labels (DESIGN.md §2, "Labels", "Loss", "Training").

``train_encoder`` runs the steps: each takes one split (least used first), a least-seen-first
sample of its targets and subsets, computes the exact gradient of the weighted pairwise ranking
loss with the two-pass trick (``training_step``), clips the gradient norm and takes an AdamW
step (linear warm-up, then a constant learning rate). Every ``validate_every`` steps it scores the
held-out splits (LDS, ranking accuracy, ranking loss) and keeps the best encoder by validation
LDS. With a checkpoint directory the run is resumable: started again on the same directory it
continues from the last checkpoint (model, optimizer, sampler, generators, step, history).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.data.examples import Example
from airrep_core.data.labels import SplitLabels, normalise_losses
from airrep_core.encoder import checkpoint as ckpt
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.ranking_loss import pairwise_ranking_loss
from airrep_core.encoder.scoring import group_scores, pad_membership
from airrep_core.encoder.training_sampler import LeastSeenSampler
from airrep_core.encoder.training_step import StepBatch, two_pass_backward
from airrep_core.evaluation.metrics import lds, ranking_accuracy
from airrep_core.runtime import resolve_device

logger = logging.getLogger(__name__)

# Config fields that may change when a run is resumed (they do not change what a step computes).
RESUMABLE_CHANGES = frozenset({"steps", "validate_every", "checkpoint_every"})


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback receives after every step.

    ``validation`` holds ``lds``, ``ranking_accuracy`` and ``ranking_loss`` (means over the
    held-out splits) on validation steps, else None.
    """

    step: int
    steps: int
    loss: float
    learning_rate: float
    seconds: float
    validation: dict[str, float] | None = None


ProgressCallback = Callable[[TrainProgress], None]


@dataclass
class TrainResult:
    """The trained encoder (the best by validation LDS when there was validation, else the last)
    and the run's record."""

    encoder: AirRepEncoder
    best_step: int | None
    best_validation: dict[str, float] | None
    history: list[dict] = field(default_factory=list)


class TokenCache:
    """Token ids of examples by id, in the encoder text format, tokenised once."""

    def __init__(self, encoder: AirRepEncoder, examples: Mapping[str, Example]) -> None:
        self.encoder = encoder
        self.examples = examples
        self.cache: dict[str, list[int]] = {}

    def get(self, example_ids: Sequence[str], where: str) -> list[list[int]]:
        missing = [i for i in dict.fromkeys(example_ids) if i not in self.cache]
        if missing:
            unknown = [i for i in missing if i not in self.examples]
            if unknown:
                raise ValueError(
                    f"{where}: example id(s) {unknown[:5]} not found in the examples "
                    f"({len(unknown)} missing)"
                )
            texts = [self.encoder.example_text(self.examples[i]) for i in missing]
            self.cache.update(zip(missing, self.encoder.tokenize(texts), strict=True))
        return [self.cache[i] for i in example_ids]


def build_step_batch(
    split: SplitLabels,
    normalised: np.ndarray,
    target_indices: np.ndarray,
    subset_indices: np.ndarray,
    tokens: TokenCache,
) -> StepBatch:
    """The pre-tokenised batch of a split's chosen targets and subsets.

    ``normalised``: the split's ``(n_subsets, n_targets)`` r̂ over all its subsets.
    """
    where = f"split {split.split_id}"
    member_ids = list(
        dict.fromkeys(m for j in subset_indices for m in split.subset_members[int(j)])
    )
    position = {m: k for k, m in enumerate(member_ids)}
    membership, mask = pad_membership(
        [[position[m] for m in split.subset_members[int(j)]] for j in subset_indices]
    )
    return StepBatch(
        target_token_ids=tokens.get([split.target_ids[int(t)] for t in target_indices], where),
        member_token_ids=tokens.get(member_ids, where),
        membership=membership,
        mask=mask,
        labels=np.ascontiguousarray(normalised[np.ix_(subset_indices, target_indices)].T),
    )


def evaluate_encoder(
    encoder: AirRepEncoder,
    splits: Sequence[SplitLabels],
    examples: Mapping[str, Example],
    config: EncoderTrainConfig,
    tokens: TokenCache | None = None,
) -> dict[str, float]:
    """Held-out metrics, each the mean over ``splits`` (dropout off, no gradient).

    Per split: its first ``config.validation_max_targets`` targets against all its subsets;
    ``lds`` = mean over targets of Spearman(f(x, Sⱼ), −ℓⱼ) (NaN → 0); ``ranking_accuracy`` and
    ``ranking_loss`` over the valid pairs of r̂ (T_min/T_max of the config).
    """
    if not splits:
        raise ValueError("evaluate_encoder needs at least one split")
    tokens = tokens or TokenCache(encoder, examples)
    totals = {"lds": 0.0, "ranking_accuracy": 0.0, "ranking_loss": 0.0}
    for split in splits:
        n_targets = min(config.validation_max_targets, len(split.target_ids))
        batch = build_step_batch(
            split,
            normalise_losses(split.losses, config.label_clip),
            np.arange(n_targets),
            np.arange(len(split.subset_ids)),
            tokens,
        )
        target_emb = encoder.encode_token_ids(
            batch.target_token_ids, config.encode_batch_size, precision=config.precision
        )
        member_emb = encoder.encode_token_ids(
            batch.member_token_ids, config.encode_batch_size, precision=config.precision
        )
        scores = group_scores(target_emb, member_emb, batch.membership, batch.mask, config.pooling)
        totals["lds"] += lds(scores, split.losses[:, :n_targets].T)
        accuracy = ranking_accuracy(scores, batch.labels, config.t_min)
        totals["ranking_accuracy"] += 0.0 if np.isnan(accuracy) else accuracy
        loss = pairwise_ranking_loss(
            torch.from_numpy(scores), torch.from_numpy(batch.labels), config.t_min, config.t_max
        )
        totals["ranking_loss"] += float(loss)
    return {name: value / len(splits) for name, value in totals.items()}


def learning_rate_at(step: int, config: EncoderTrainConfig) -> float:
    """Linear warm-up over ``warmup_steps`` (0-based ``step``), then constant."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    return config.learning_rate


def train_encoder(
    train_splits: Sequence[SplitLabels],
    examples: Mapping[str, Example],
    config: EncoderTrainConfig,
    *,
    validation_splits: Sequence[SplitLabels] = (),
    checkpoint_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    encoder: AirRepEncoder | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train an AirRep encoder on the labels of ``train_splits``.

    Args:
        train_splits: labelled splits; each step uses one.
        examples: every target and subset member by ``example_id``.
        config: the stage config (presets ``tiny``/``mini``/``paper``).
        validation_splits: held-out splits for validation and best-checkpoint selection.
        checkpoint_dir: local directory for resumable checkpoints; a run started on a directory
            holding a checkpoint continues from it (the config may differ only in
            ``steps``/``validate_every``/``checkpoint_every``).
        progress: called after every step with a ``TrainProgress``.
        encoder: the encoder to train; default ``AirRepEncoder.from_config`` of the config.
        device: default CUDA when available, else CPU.
    Returns:
        ``TrainResult`` with the best encoder by validation LDS (the last one without validation).
    """
    if not train_splits:
        raise ValueError("train_encoder needs at least one training split")
    device = torch.device(device) if device else resolve_device("auto")
    root = ckpt.CheckpointRoot(checkpoint_dir) if checkpoint_dir is not None else None
    resume_from = root.latest() if root is not None else None
    if resume_from is not None:
        encoder = AirRepEncoder.from_pretrained(resume_from / ckpt.ENCODER_DIR)
    elif encoder is None:
        encoder = AirRepEncoder.from_config(config)
    encoder.to(device)
    optimizer = torch.optim.AdamW(
        encoder.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    sampler = LeastSeenSampler(
        [len(s.target_ids) for s in train_splits],
        [len(s.subset_ids) for s in train_splits],
        config.seed,
    )
    state = {"step": 0, "history": [], "best_step": None, "best_validation": None}
    if resume_from is not None:
        state = _resume(resume_from, config, train_splits, optimizer, sampler, device)
        logger.info("resumed encoder training from %s at step %d", resume_from, state["step"])
    else:
        torch.manual_seed(config.seed)  # dropout masks

    normalised = [normalise_losses(s.losses, config.label_clip) for s in train_splits]
    tokens = TokenCache(encoder, examples)
    best_in_memory: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()
    encoder.train(config.dropout)
    for step in range(state["step"], config.steps):
        sample = sampler.next_step(config.targets_per_step, config.subsets_per_step)
        split = train_splits[sample.split_index]
        batch = build_step_batch(
            split,
            normalised[sample.split_index],
            sample.target_indices,
            sample.subset_indices,
            tokens,
        )
        learning_rate = learning_rate_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        optimizer.zero_grad(set_to_none=True)
        loss = two_pass_backward(
            encoder,
            batch,
            pooling=config.pooling,
            t_min=config.t_min,
            t_max=config.t_max,
            chunk_size=config.grad_chunk_size,
            precision=config.precision,
        )
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.grad_clip)
        optimizer.step()
        done = step + 1

        validation = None
        if validation_splits and (done % config.validate_every == 0 or done == config.steps):
            validation = evaluate_encoder(encoder, validation_splits, examples, config, tokens)
            encoder.train(config.dropout)
            best = state["best_validation"]
            if best is None or validation["lds"] > best["lds"]:
                state["best_step"], state["best_validation"] = done, validation
                if root is not None:
                    root.write("best", done, lambda d, v=validation: _fill_best(d, encoder, v))
                else:
                    best_in_memory = {
                        k: v.detach().clone() for k, v in encoder.state_dict().items()
                    }
        record = {
            "step": done,
            "loss": loss,
            "learning_rate": learning_rate,
            "split": split.split_id,
        }
        if validation is not None:
            record["validation"] = validation
        state["history"].append(record)
        state["step"] = done
        if root is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            root.write(
                "step", done, lambda d: _fill_step(d, encoder, optimizer, sampler, state, config)
            )
        logger.info(
            "step %d/%d loss %.4f lr %.2e%s",
            done,
            config.steps,
            loss,
            learning_rate,
            f" validation {validation}" if validation else "",
        )
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(TrainProgress(done, config.steps, loss, learning_rate, elapsed, validation))

    if state["best_step"] is not None:
        if root is not None:
            best_dir = root.best()
            assert best_dir is not None
            encoder = AirRepEncoder.from_pretrained(best_dir / ckpt.ENCODER_DIR).to(device)
        elif best_in_memory is not None:
            encoder.load_state_dict(best_in_memory)
    encoder.eval()
    return TrainResult(encoder, state["best_step"], state["best_validation"], state["history"])


def _comparable(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k not in RESUMABLE_CHANGES}


def _fill_step(
    directory: Path,
    encoder: AirRepEncoder,
    optimizer: torch.optim.Optimizer,
    sampler: LeastSeenSampler,
    state: dict,
    config: EncoderTrainConfig,
) -> None:
    encoder.save(directory / ckpt.ENCODER_DIR)
    ckpt.save_optimizer(optimizer, directory)
    ckpt.save_rng(encoder.device, directory)
    ckpt.write_json(
        directory / ckpt.TRAINER_STATE,
        {**state, "sampler": sampler.state_dict(), "config": config.to_dict()},
    )


def _fill_best(directory: Path, encoder: AirRepEncoder, validation: dict[str, float]) -> None:
    encoder.save(directory / ckpt.ENCODER_DIR)
    ckpt.write_json(directory / "metrics.json", validation)


def _resume(
    directory: Path,
    config: EncoderTrainConfig,
    train_splits: Sequence[SplitLabels],
    optimizer: torch.optim.Optimizer,
    sampler: LeastSeenSampler,
    device: torch.device,
) -> dict:
    saved = ckpt.read_json(directory / ckpt.TRAINER_STATE)
    before, now = _comparable(saved["config"]), _comparable(config.to_dict())
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise ValueError(
            f"{directory}: the checkpoint was written with another config; differing fields "
            f"{changed} (only {sorted(RESUMABLE_CHANGES)} may change on resume)"
        )
    try:
        sampler.load_state_dict(saved.pop("sampler"))
    except ValueError as e:
        raise ValueError(
            f"{directory}: {e} (split ids: {[s.split_id for s in train_splits]})"
        ) from e
    ckpt.load_optimizer(optimizer, directory)
    ckpt.load_rng(device, directory)
    saved.pop("config")
    return saved
