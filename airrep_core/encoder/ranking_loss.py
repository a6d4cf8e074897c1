"""The weighted pairwise ranking loss of AirRep (DESIGN.md §2, "Loss", RankNet-style).

For each target x and each ordered pair of subsets (i, j) with r̂ᵢ − r̂ⱼ > T_min:

    L = mean over valid pairs of  w_ij · −log σ(fᵢ − fⱼ),   w_ij = min(r̂ᵢ − r̂ⱼ, T_max)

with fᵢ = f(x, Sᵢ) the group score (higher = more helpful) and r̂ the normalised labels
(higher = the subset lowered the target's loss more). The paper's T_min = 0.1, T_max = 5.0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

T_MIN = 0.1
T_MAX = 5.0


def valid_pair_mask(labels: torch.Tensor, t_min: float = T_MIN) -> torch.Tensor:
    """Bool ``(n_targets, n_subsets, n_subsets)``: ``[t, i, j]`` is True when r̂ᵢ − r̂ⱼ > t_min.

    ``labels``: ``(n_targets, n_subsets)`` normalised labels r̂ of each target.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (n_targets, n_subsets), got shape {tuple(labels.shape)}")
    gaps = labels.unsqueeze(2) - labels.unsqueeze(1)
    return gaps > t_min


def count_valid_pairs(labels: torch.Tensor, t_min: float = T_MIN) -> int:
    """Number of ordered pairs (t, i, j) with r̂ᵢ − r̂ⱼ > t_min (the loss's denominator)."""
    return int(valid_pair_mask(labels, t_min).sum())


def pairwise_ranking_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    t_min: float = T_MIN,
    t_max: float = T_MAX,
    denominator: int | None = None,
) -> torch.Tensor:
    """The weighted pairwise ranking loss (a float32 scalar).

    Args:
        scores: ``(n_targets, n_subsets)`` group scores f(x, Sᵢ).
        labels: ``(n_targets, n_subsets)`` normalised labels r̂ (same layout; note that
            ``SplitLabels.losses`` is ``(n_subsets, n_targets)``: transpose it).
        t_min: pairs with a label gap ≤ t_min are not used.
        t_max: cap of the pair weight.
        denominator: divide the weighted sum by this instead of the number of valid pairs in
            ``labels``; used to split one step's loss over chunks of targets (pass the step's
            total valid pair count so that the chunk losses add up to the step loss).
    Returns:
        Scalar float32 tensor; 0 (still attached to ``scores``) when there is no valid pair.
    """
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must have the same "
            "shape (n_targets, n_subsets)"
        )
    scores = scores.float()
    labels = labels.to(device=scores.device, dtype=torch.float32)
    gaps = labels.unsqueeze(2) - labels.unsqueeze(1)
    valid = gaps > t_min
    weights = torch.where(valid, gaps.clamp(max=t_max), torch.zeros_like(gaps))
    margins = scores.unsqueeze(2) - scores.unsqueeze(1)
    # −log σ(m) = softplus(−m), computed stably.
    total = (weights * F.softplus(-margins)).sum()
    count = int(valid.sum()) if denominator is None else int(denominator)
    if count == 0:
        return total * 0.0
    return total / count
