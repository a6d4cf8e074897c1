"""The label-efficient recipe (DESIGN.md §2, "Label-efficient recipe"): train the projection of
an AirRep encoder on cached, frozen backbone features.

With the backbone frozen, every example is encoded once (``pooled_features``) and a training step
is a few small matrix products: Enc(z) = W·p(z) + b on the cached pooled features p(z). Steps are
milliseconds on a CPU, so the projection can see every (target, subset) pair of every split many
times, and teacher pseudo-labels over unlimited pairs, at no extra encoder cost.

Two phases, one optimiser:

1. teacher pre-training (``teacher_steps`` > 0): a step draws targets and ``subsets_per_step``
   pseudo-subsets of the teacher's candidates; a pseudo-subset's label is the sum of the teacher's
   scores of its members (normalised per target like real labels, ``normalise_losses``), and the
   loss is the paper's weighted pairwise ranking loss on the attention-pooled group scores;
2. label steps: the same loss on real subset labels, one training split per step.

Then, on the validation targets, the hybrid's weights (``choose_hybrid_weights``): λ of the BM25
term and w of the token bag (``encoder.token_bag``), each possibly 0.

The loss adds ``anchor_decay`` · (‖W − W₀‖² + ‖b − b₀‖²), a pull towards the start. Every
``validate_every`` steps, and at step 0, the encoder is scored on the held-out splits
(validation LDS); the best step wins, ties going to the earlier step, so with an identity start the
result never validates below the backbone itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from airrep_core.attribution.hybrid import hybrid_group_scores
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.data.examples import Example
from airrep_core.data.labels import SplitLabels, normalise_losses
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.ranking_loss import pairwise_ranking_loss
from airrep_core.encoder.scoring import group_scores, pad_membership
from airrep_core.encoder.teacher import TeacherScores, teacher_ids
from airrep_core.encoder.token_bag import TokenBag
from airrep_core.encoder.training import ProgressCallback, TokenCache, TrainProgress, TrainResult
from airrep_core.evaluation.lds_eval import subset_indices
from airrep_core.evaluation.metrics import lds
from airrep_core.methods.lexical import Bm25Attributor
from airrep_core.runtime import resolve_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSplit:
    """A labelled split over row indices of a feature matrix.

    Attributes:
        split_id: the split's id.
        targets: ``(n_targets,)`` int64 feature rows of the targets.
        membership: ``(n_subsets, max size)`` int64 feature rows of each subset's members.
        mask: ``(n_subsets, max size)`` bool, True where ``membership`` is a real member.
        losses: ``(n_subsets, n_targets)`` float32 losses (``SplitLabels.losses``).
    """

    split_id: int
    targets: np.ndarray
    membership: np.ndarray
    mask: np.ndarray
    losses: np.ndarray


@dataclass
class HeadTrainResult:
    """The step of the best projection (by validation LDS; 0 = the start; None without
    validation, when the projection keeps its last state) and the run's history."""

    best_step: int | None
    best_validation: dict[str, float] | None
    history: list[dict] = field(default_factory=list)


def train_encoder_head(
    train_splits: Sequence[SplitLabels],
    examples: Mapping[str, Example],
    config: EncoderTrainConfig,
    *,
    validation_splits: Sequence[SplitLabels] = (),
    teacher: TeacherScores | None = None,
    lexical_tokenizer: Any = None,
    base_model: Any = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """The label-efficient recipe end to end: a fresh encoder of ``config`` (its projection
    initialised by ``projection_init``), the frozen backbone's features of every example the
    splits and the teacher use (encoded once), then ``train_projection``, then the hybrid's
    weights (``choose_hybrid_weights``). ``lexical_tokenizer`` and ``base_model`` are the
    target LM's tokenizer and model θ₀ (``config.needs_base_lm``): a hybrid encoder keeps the
    tokenizer, an encoder with a token bag the bag over the model's input embeddings, centred and
    scaled on every example training reads.

    Returns the encoder with the best projection (by validation LDS; step 0 is a candidate).
    """
    if config.recipe != "efficient":
        raise ValueError(f"train_encoder_head runs recipe='efficient', not {config.recipe!r}")
    device = torch.device(device) if device else resolve_device("auto")
    encoder = AirRepEncoder.from_config(config).to(device)  # efficient: projection=True
    ids = split_example_ids([*train_splits, *validation_splits])
    if teacher is not None:
        ids = list(dict.fromkeys([*ids, *teacher_ids(teacher)]))
    started = time.perf_counter()
    features = pooled_features(encoder, examples, ids, config)
    logger.info(
        "backbone features of %d examples in %.1f s", len(ids), time.perf_counter() - started
    )
    row_of = {example_id: row for row, example_id in enumerate(ids)}
    projection = encoder.projection
    assert projection is not None
    projection.cpu()
    result = train_projection(
        projection,
        features,
        feature_splits(train_splits, row_of),
        config,
        validation_splits=feature_splits(validation_splits, row_of),
        teacher=TeacherBatches(teacher, row_of) if teacher is not None else None,
        progress=progress,
    )
    if (config.lexical_weights or config.token_bag_weights) and validation_splits:
        if config.needs_base_lm and lexical_tokenizer is None:
            raise ValueError("this recipe reads the target LM: pass lexical_tokenizer=")
        with torch.no_grad():
            embeddings = projection(torch.from_numpy(features)).numpy()
        bag, bags, query_bags = None, None, None
        if config.token_bag_weights:
            if base_model is None:
                raise ValueError("token_bag_weights need the target LM θ₀: pass base_model=")
            bag = TokenBag.from_model(
                base_model,
                lexical_tokenizer,
                config.lexical.lm_max_length,
                max_query_tokens=config.token_bag_max_query_tokens,
            )
            tokens = bag.read_tokens([examples[i] for i in ids])
            bags = bag.fit_tokens(tokens)
            query_bags = bag.encode_tokens(tokens, queries=True)
        choice = choose_hybrid_weights(
            embeddings,
            (bags, query_bags) if bag is not None else None,
            ids,
            validation_splits,
            examples,
            config,
            lexical_tokenizer,
        )
        encoder.lexical_weight = choice.pop("lexical_weight")
        bag_weight = choice.pop("token_bag_weight")
        encoder.lexical = config.lexical
        if encoder.lexical_weight > 0 and config.lexical.needs_tokenizer:
            encoder.lexical_tokenizer = lexical_tokenizer
        if bag is not None and bag_weight > 0:
            bag.weight = bag_weight
            encoder.token_bag = bag
        result.history.append({"step": None, "phase": "hybrid", "validation_by_weight": choice})
        logger.info(
            "hybrid: lexical weight %g, token-bag weight %g (validation LDS by weights %s)",
            encoder.lexical_weight,
            bag_weight,
            choice,
        )
    encoder.to(device).eval()
    return TrainResult(encoder, result.best_step, result.best_validation, result.history)


def choose_hybrid_weights(
    embeddings: np.ndarray,
    bags: tuple[np.ndarray, np.ndarray] | None,
    example_ids: Sequence[str],
    splits: Sequence[SplitLabels],
    examples: Mapping[str, Example],
    config: EncoderTrainConfig,
    lexical_tokenizer: Any = None,
) -> dict[str, float]:
    """The hybrid's weights, chosen on held-out ``splits`` (their first
    ``validation_max_targets`` targets) over the grid w ∈ {0} ∪ ``config.token_bag_weights``
    × λ ∈ {0} ∪ ``config.lexical_weights``.

    Args:
        embeddings: ``(len(example_ids), d)`` float32 projected embeddings, row i = example_ids[i].
        bags: ``(documents, queries)``, each ``(len(example_ids), d_lm)`` float32 token bags at
            weight 1 (``TokenBag.encode_tokens`` without and with ``queries``: the pool reads the
            first, the targets the second), or None for no token bag.
    Each candidate appends √w·bag to the embeddings and scores the plain encoder (its own
    pooling) at λ = 0, ``hybrid_group_scores`` with BM25 (``config.lexical``, fitted on each
    split's pool) at λ > 0. Returns ``{"token_bag_weight": w, "lexical_weight": λ,
    "w=<w> λ=<λ>": validation LDS, ...}``; ties go to the smaller w, then the smaller λ.
    """
    bag_weights = [0.0, *map(float, config.token_bag_weights)] if bags is not None else [0.0]
    lexical_weights = [0.0, *map(float, config.lexical_weights)]
    row_of = {example_id: row for row, example_id in enumerate(example_ids)}
    totals = {(w, lam): 0.0 for w in bag_weights for lam in lexical_weights}
    for split in splits:
        n = min(config.validation_max_targets, len(split.target_ids))
        pool, membership = split_pool(split)
        target_rows = [row_of[t] for t in split.target_ids[:n]]
        pool_rows = [row_of[m] for m in pool]
        losses = split.losses[:, :n].T
        lexical = None
        if config.lexical_weights:
            bm25 = Bm25Attributor(config.lexical, tokenizer=lexical_tokenizer)
            bm25.fit([examples[m] for m in pool])
            lexical = bm25.score([examples[t] for t in split.target_ids[:n]])
        for w in bag_weights:
            targets, pool_embeddings = embeddings[target_rows], embeddings[pool_rows]
            if bags is not None and w > 0:
                root = np.float32(np.sqrt(w))
                targets = np.concatenate([targets, root * bags[1][target_rows]], axis=1)
                pool_embeddings = np.concatenate([pool_embeddings, root * bags[0][pool_rows]], 1)
            plain = group_scores(targets, pool_embeddings, membership, None, config.pooling)
            totals[(w, 0.0)] += lds(plain, losses)
            dots = targets @ pool_embeddings.T
            for lam in lexical_weights[1:]:
                hybrid = hybrid_group_scores(dots, lexical, membership, lam)
                totals[(w, lam)] += lds(hybrid, losses)
    means = {pair: value / len(splits) for pair, value in totals.items()}
    w, lam = max(sorted(means), key=lambda pair: (means[pair], -pair[0], -pair[1]))
    return {
        "token_bag_weight": w,
        "lexical_weight": lam,
        **{f"w={a:g} λ={b:g}": v for (a, b), v in means.items()},
    }


def split_pool(split: SplitLabels) -> tuple[list[str], list[np.ndarray]]:
    """A split's pool (every subset member, sorted by id) and each subset's int64 index array
    into it (``lds_eval.subset_indices``)."""
    pool = sorted({m for members in split.subset_members for m in members})
    return pool, subset_indices(pool, split.subset_members)


def pooled_features(
    encoder: AirRepEncoder,
    examples: Mapping[str, Example],
    example_ids: Sequence[str],
    config: EncoderTrainConfig,
) -> np.ndarray:
    """``(len(example_ids), d)`` float32 backbone features (before the projection) of the
    examples in the encoder text format; ids must be distinct and present in ``examples``."""
    return encoder.encode_token_ids(
        TokenCache(encoder, examples).get(example_ids, "backbone features"),
        config.encode_batch_size,
        precision=config.precision,
        pooled_only=True,
    )


def feature_splits(splits: Sequence[SplitLabels], row_of: Mapping[str, int]) -> list[FeatureSplit]:
    """``splits`` as ``FeatureSplit`` over the rows ``row_of`` maps example ids to."""
    result = []
    for split in splits:
        membership, mask = pad_membership(
            [[row_of[m] for m in members] for members in split.subset_members]
        )
        result.append(
            FeatureSplit(
                split.split_id,
                np.asarray([row_of[t] for t in split.target_ids], dtype=np.int64),
                membership,
                mask,
                np.asarray(split.losses, dtype=np.float32),
            )
        )
    return result


def split_example_ids(splits: Sequence[SplitLabels]) -> list[str]:
    """Every target and subset member of ``splits``, each once, in first-seen order."""
    ids: dict[str, None] = {}
    for split in splits:
        ids.update(dict.fromkeys(split.target_ids))
        for members in split.subset_members:
            ids.update(dict.fromkeys(members))
    return list(ids)


def validation_lds(
    projection: nn.Linear,
    features: torch.Tensor,
    splits: Sequence[FeatureSplit],
    config: EncoderTrainConfig,
) -> float:
    """Mean over ``splits`` of the LDS of the first ``validation_max_targets`` targets against
    every subset (attention or mean pooling of the config), without gradient."""
    with torch.no_grad():
        embeddings = projection(features).numpy()
    total = 0.0
    for split in splits:
        n = min(config.validation_max_targets, len(split.targets))
        scores = group_scores(
            embeddings[split.targets[:n]], embeddings, split.membership, split.mask, config.pooling
        )
        total += lds(scores, split.losses[:, :n].T)
    return total / len(splits)


def train_projection(
    projection: nn.Linear,
    features: np.ndarray,
    train_splits: Sequence[FeatureSplit],
    config: EncoderTrainConfig,
    *,
    validation_splits: Sequence[FeatureSplit] = (),
    teacher: TeacherBatches | None = None,
    progress: ProgressCallback | None = None,
) -> HeadTrainResult:
    """Train ``projection`` (in place, then set to the best state) on frozen ``features``.

    Args:
        projection: the encoder's ``Linear(d, d)``; its state at the call is W₀, b₀.
        features: ``(n_rows, d)`` float32 pooled backbone features every split indexes.
        train_splits: labelled splits (label steps cycle through them).
        config: ``steps`` label steps of ``targets_per_step`` x ``subsets_per_step``, after
            ``teacher_steps`` teacher steps; AdamW with ``learning_rate``, ``warmup_steps``,
            ``weight_decay``, ``grad_clip``; ``anchor_decay``; validation every
            ``validate_every`` steps.
        validation_splits: held-out splits for the best-step choice.
        teacher: the teacher's pseudo-subset source, required when ``teacher_steps`` > 0.
        progress: called after every step with a ``TrainProgress``.
    """
    if config.teacher_steps and teacher is None:
        raise ValueError(f"teacher_steps={config.teacher_steps} needs teacher scores")
    if not train_splits and config.steps:
        raise ValueError("train_projection needs at least one training split for label steps")
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    start = {k: v.detach().clone() for k, v in projection.state_dict().items()}
    optimizer = torch.optim.AdamW(
        projection.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    rng = np.random.default_rng(config.seed)
    normalised = [
        normalise_losses(s.losses, config.label_clip) for s in train_splits if config.steps
    ]
    total_steps = config.teacher_steps + config.steps
    history: list[dict] = []
    best_step: int | None = None
    best_validation: dict[str, float] | None = None
    best_state = start

    def validate(step: int) -> dict[str, float] | None:
        nonlocal best_step, best_validation, best_state
        if not validation_splits:
            return None
        value = {"lds": validation_lds(projection, x, validation_splits, config)}
        if best_validation is None or value["lds"] > best_validation["lds"]:
            best_step, best_validation = step, value
            best_state = {k: v.detach().clone() for k, v in projection.state_dict().items()}
        return value

    start_validation = validate(0)
    if start_validation is not None:
        history.append({"step": 0, "phase": "start", "validation": start_validation})
    started = time.perf_counter()
    for step in range(total_steps):
        phase = "teacher" if step < config.teacher_steps else "labels"
        if phase == "teacher":
            assert teacher is not None
            targets, membership, mask, labels = teacher.draw(rng, config)
        else:
            index = (step - config.teacher_steps) % len(train_splits)
            targets, membership, mask, labels = _label_batch(
                train_splits[index], normalised[index], rng, config
            )
        lr = config.learning_rate * min(1.0, (step + 1) / max(config.warmup_steps, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        # Only the step's rows go through the projection (the loss reads no others).
        rows, inverse = np.unique(
            np.concatenate([targets, membership.ravel()]), return_inverse=True
        )
        embeddings = projection(x[torch.from_numpy(rows)])
        scores = group_scores(
            embeddings[torch.from_numpy(inverse[: len(targets)])],
            embeddings,
            torch.from_numpy(inverse[len(targets) :].reshape(membership.shape)),
            torch.from_numpy(mask),
            config.pooling,
        )
        loss = pairwise_ranking_loss(scores, torch.from_numpy(labels), config.t_min, config.t_max)
        if config.anchor_decay > 0:
            drift = sum(((p - start[n]) ** 2).sum() for n, p in projection.named_parameters())
            loss = loss + config.anchor_decay * drift
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(projection.parameters(), config.grad_clip)
        optimizer.step()
        done = step + 1
        record = {"step": done, "phase": phase, "loss": loss.item(), "learning_rate": lr}
        validation = None
        if done % config.validate_every == 0 or done == total_steps:
            validation = validate(done)
        if validation is not None:
            record["validation"] = validation
        history.append(record)
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(TrainProgress(done, total_steps, record["loss"], lr, elapsed, validation))
    logger.info(
        "projection: %d steps in %.1f s, best step %s validation %s",
        total_steps,
        time.perf_counter() - started,
        best_step,
        best_validation,
    )
    if validation_splits:
        projection.load_state_dict(best_state)
    return HeadTrainResult(best_step, best_validation, history)


def _label_batch(
    split: FeatureSplit,
    normalised: np.ndarray,
    rng: np.random.Generator,
    config: EncoderTrainConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random sample of a split's targets and subsets: (target rows, membership, mask,
    ``(n_targets, n_subsets)`` normalised labels)."""
    n_targets, n_subsets = len(split.targets), len(split.membership)
    t = np.sort(rng.choice(n_targets, min(config.targets_per_step, n_targets), replace=False))
    s = np.sort(rng.choice(n_subsets, min(config.subsets_per_step, n_subsets), replace=False))
    labels = np.ascontiguousarray(normalised[np.ix_(s, t)].T)
    return split.targets[t], split.membership[s], split.mask[s], labels


class TeacherBatches:
    """Pseudo-subsets of the teacher's candidates, labelled by the teacher (over feature rows).

    ``teacher``: the fused teacher scores ``(n_targets, n_candidates)``; ``row_of`` maps its
    example ids to feature rows.
    """

    def __init__(self, teacher: TeacherScores, row_of: Mapping[str, int]) -> None:
        self.targets = np.asarray([row_of[t] for t in teacher.target_ids], dtype=np.int64)
        self.candidates = np.asarray([row_of[c] for c in teacher.candidate_ids], dtype=np.int64)
        self.scores = np.asarray(teacher.scores, dtype=np.float64)

    def draw(
        self, rng: np.random.Generator, config: EncoderTrainConfig
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(target rows, membership, mask, ``(n_targets, n_subsets)`` normalised labels) of
        ``targets_per_step`` targets and ``subsets_per_step`` pseudo-subsets of
        ``teacher_subset_size`` candidates each (without repeats inside a pseudo-subset)."""
        n_targets, n_candidates = self.scores.shape
        size = min(config.teacher_subset_size, n_candidates)
        t = np.sort(rng.choice(n_targets, min(config.targets_per_step, n_targets), replace=False))
        members = np.stack(
            [rng.choice(n_candidates, size, replace=False) for _ in range(config.subsets_per_step)]
        )
        # Group teacher score = sum over members; as a "loss" (lower = better) for normalise_losses.
        group = self.scores[t][:, members].sum(axis=2)  # (n_targets, n_subsets)
        labels = normalise_losses(-group.T, config.label_clip).T
        mask = np.ones(members.shape, dtype=bool)
        return self.targets[t], self.candidates[members], mask, np.ascontiguousarray(labels)
