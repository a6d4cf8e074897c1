"""AirRep scores as pure functions of embeddings (DESIGN.md §2, "Scores").

Sign convention, everywhere in the project: **higher score = more helpful = lower target loss**.

- one example: s(x, z) = Enc(x)ᵀ Enc(z)                                     (``example_scores``)
- a group S = {z₁..zₙ}: sᵢ = Enc(x)ᵀ Enc(zᵢ), αᵢ = softmax_i(|sᵢ|), f(x, S) = Σᵢ αᵢ sᵢ
  (attention pooling, no parameters, temperature 1); the "mean" ablation is f = mean_i sᵢ
                                                                               (``group_scores``)

Every function takes numpy arrays or torch tensors and returns the same kind (torch keeps the
autograd graph, so the trainer uses these functions too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from airrep_core.config.encoder import POOLINGS

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def example_scores(query_embeddings: Array, train_embeddings: Array) -> Array:
    """Per-example scores s(x, z) = Enc(x)ᵀ Enc(z).

    Args:
        query_embeddings: ``(n_query, d)``.
        train_embeddings: ``(n_train, d)``.
    Returns:
        ``(n_query, n_train)`` in the inputs' dtype.
    """
    _check_2d(query_embeddings, "query_embeddings")
    _check_2d(train_embeddings, "train_embeddings")
    if query_embeddings.shape[1] != train_embeddings.shape[1]:
        raise ValueError(
            f"embedding widths differ: query {query_embeddings.shape[1]}, "
            f"train {train_embeddings.shape[1]}"
        )
    return query_embeddings @ train_embeddings.T


def pool_scores(scores: Array, mask: Array | None = None, pooling: str = "attention") -> Array:
    """Pool per-member scores into group scores over the last axis.

    Args:
        scores: ``(..., n_members)`` per-example scores sᵢ of each group's members.
        mask: optional bool ``(..., n_members)`` (broadcastable); False marks padding of a group
            smaller than ``n_members``. Every group needs at least one member.
        pooling: ``"attention"`` (Σ softmax(|s|)ᵢ sᵢ) or ``"mean"``.
    Returns:
        ``(...)`` group scores f, same kind and dtype as ``scores``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is invalid; allowed: {POOLINGS}")
    is_numpy = isinstance(scores, np.ndarray)
    s = torch.from_numpy(scores) if is_numpy else scores
    if mask is None:
        valid = torch.ones_like(s, dtype=torch.bool)
    else:
        valid = torch.as_tensor(mask, dtype=torch.bool, device=s.device).expand_as(s)
    if bool((valid.sum(dim=-1) == 0).any()):
        raise ValueError("every group needs at least one member (a mask row is all False)")
    if pooling == "mean":
        pooled = torch.where(valid, s, torch.zeros_like(s)).sum(dim=-1) / valid.sum(dim=-1)
    else:
        logits = torch.where(valid, s.abs(), torch.full_like(s, float("-inf")))
        weights = torch.softmax(logits, dim=-1)
        pooled = (weights * torch.where(valid, s, torch.zeros_like(s))).sum(dim=-1)
    pooled = pooled.to(s.dtype)
    return pooled.numpy() if is_numpy else pooled


def group_scores(
    query_embeddings: Array,
    member_embeddings: Array,
    membership: Array | Sequence[Sequence[int]],
    mask: Array | None = None,
    pooling: str = "attention",
) -> Array:
    """Group scores f(x, Sₖ) of every query against every group.

    Args:
        query_embeddings: ``(n_query, d)``.
        member_embeddings: ``(n_members, d)``: the distinct examples the groups draw from.
        membership: ``(n_groups, group_size)`` integer rows into ``member_embeddings``; padded
            entries (any valid index, e.g. 0) are marked False in ``mask``. A list of index lists
            of different lengths is padded here.
        mask: optional bool ``(n_groups, group_size)``; required only for padded arrays.
        pooling: ``"attention"`` or ``"mean"``.
    Returns:
        ``(n_query, n_groups)`` in the inputs' dtype (f(x, Sₖ) at ``[x, k]``).
    """
    if not isinstance(membership, np.ndarray | torch.Tensor):
        membership, mask = pad_membership(membership)
    if mask is None:
        mask = np.ones(tuple(membership.shape), dtype=bool)
    scores = example_scores(query_embeddings, member_embeddings)
    if isinstance(scores, np.ndarray):
        index = np.asarray(membership, dtype=np.int64)
        per_member = scores[:, index]
        return pool_scores(per_member, np.asarray(mask, dtype=bool)[None], pooling)
    index = torch.as_tensor(membership, dtype=torch.long, device=scores.device)
    per_member = scores[:, index]
    mask_t = torch.as_tensor(mask, dtype=torch.bool, device=scores.device)
    return pool_scores(per_member, mask_t.unsqueeze(0), pooling)


def pad_membership(groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pad index lists to ``(n_groups, max size)`` int64 with a bool validity mask."""
    if not groups:
        raise ValueError("no groups given")
    width = max(len(g) for g in groups)
    index = np.zeros((len(groups), width), dtype=np.int64)
    mask = np.zeros((len(groups), width), dtype=bool)
    for row, members in enumerate(groups):
        index[row, : len(members)] = members
        mask[row, : len(members)] = True
    return index, mask


def _check_2d(array: np.ndarray | torch.Tensor, name: str) -> None:
    if not isinstance(array, np.ndarray | torch.Tensor):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}"
        )
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(array.shape)}")
