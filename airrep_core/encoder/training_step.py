"""One training step's exact gradient with bounded memory: the two-pass trick (DESIGN.md §2).

The step loss L (``ranking_loss.pairwise_ranking_loss`` over the (targets × subsets) group score
matrix) depends on the encoder through the target embeddings E_T and the subset members'
embeddings E_U. Its gradient is the sum of the paths through E_T and through E_U:

- pass 1: encode the members without gradient, as a leaf E_U that records dL/dE_U; encode the
  targets with gradient and backpropagate the loss through them (chunks of targets: the loss is
  a sum over targets divided by the step's number of valid pairs, so chunk losses add up to L);
- pass 2: re-encode the members, one chunk at a time with gradient, and backpropagate
  ⟨E_chunk, dL/dE_chunk⟩, accumulating into the same ``.grad``.

NOTE(paper): the paper re-encodes one subset at a time and recomputes the loss with the target
embeddings detached; we re-encode chunks of the step's distinct members and backpropagate the
cached dL/dE_U, which is the same gradient (chain rule) without recomputing the loss, encodes a
member shared by several subsets once, and bounds memory by ``chunk_size`` examples.

Dropout stays exact: the generator state before each member chunk of pass 1 is replayed for the
same chunk in pass 2, so both passes see the same masks (the state after pass 1 is restored at
the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from airrep_core.data.shapes import check_shape
from airrep_core.encoder.checkpoint import capture_rng_state, restore_rng_state
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.ranking_loss import count_valid_pairs, pairwise_ranking_loss
from airrep_core.encoder.scoring import group_scores
from airrep_core.runtime import precision_context


@dataclass(frozen=True)
class StepBatch:
    """The texts and labels of one step, pre-tokenised.

    Attributes:
        target_token_ids: ``n_targets`` token id lists.
        member_token_ids: ``n_members`` token id lists of the distinct subset members.
        membership: ``(n_subsets, max_subset_size)`` int64 rows into the members.
        mask: ``(n_subsets, max_subset_size)`` bool, False on padding.
        labels: ``(n_targets, n_subsets)`` float32 normalised labels r̂.
    """

    target_token_ids: Sequence[Sequence[int]]
    member_token_ids: Sequence[Sequence[int]]
    membership: np.ndarray
    mask: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        expected = (len(self.target_token_ids), self.membership.shape[0])
        check_shape("step labels", self.labels, "(n_targets, n_subsets)", expected)
        if self.mask.shape != self.membership.shape:
            raise ValueError(f"mask {self.mask.shape} != membership {self.membership.shape}")


def chunk_slices(n: int, chunk_size: int) -> list[slice]:
    """``[0, n)`` cut into consecutive slices of at most ``chunk_size``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid; allowed: >= 1")
    return [slice(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def two_pass_backward(
    encoder: AirRepEncoder,
    batch: StepBatch,
    *,
    pooling: str,
    t_min: float,
    t_max: float,
    chunk_size: int,
    precision: str = "float32",
) -> float:
    """Accumulate dL/dθ of the step loss into the encoder's ``.grad``; return L (a float).

    The encoder's mode is left as is (train mode = dropout on). Gradients add to existing
    ``.grad``: zero them before the step.
    """
    device = encoder.device
    labels = torch.as_tensor(batch.labels, dtype=torch.float32, device=device)
    n_valid = count_valid_pairs(labels, t_min)
    member_slices = chunk_slices(len(batch.member_token_ids), chunk_size)

    # Pass 1a: members without gradient, remembering the generator state of each chunk.
    chunk_rng_states = []
    parts = []
    with torch.no_grad(), precision_context(precision, device):
        for part in member_slices:
            chunk_rng_states.append(capture_rng_state(device))
            parts.append(encoder.embed_token_ids(batch.member_token_ids[part]))
    members = torch.cat(parts).float().requires_grad_(True)

    # Pass 1b: targets with gradient, against the member leaf.
    loss_value = 0.0
    for part in chunk_slices(len(batch.target_token_ids), chunk_size):
        with precision_context(precision, device):
            targets = encoder.embed_token_ids(batch.target_token_ids[part])
        scores = group_scores(targets.float(), members, batch.membership, batch.mask, pooling)
        loss = pairwise_ranking_loss(scores, labels[part], t_min, t_max, denominator=n_valid)
        loss.backward()
        loss_value += float(loss.detach())
    after_pass_one = capture_rng_state(device)

    # Pass 2: members again, chunk by chunk with gradient, replaying pass 1's dropout masks.
    member_grads = members.grad
    if member_grads is not None:
        for part, state in zip(member_slices, chunk_rng_states, strict=True):
            restore_rng_state(state, device)
            with precision_context(precision, device):
                embeddings = encoder.embed_token_ids(batch.member_token_ids[part])
            (embeddings.float() * member_grads[part]).sum().backward()
    restore_rng_state(after_pass_one, device)
    return loss_value
