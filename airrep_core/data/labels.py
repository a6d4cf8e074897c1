"""Empirical labels of one split and their normalisation (DESIGN.md §2, "Labels").

A split's labels are the losses ℓ of each target under the LM fine-tuned on each subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airrep_core.data.shapes import check_shape

LABEL_CLIP = 10.0


@dataclass(frozen=True)
class SplitLabels:
    """The labels of one split.

    Attributes:
        split_id: the split's id.
        target_ids: ``(n_targets,)`` example ids of the split's targets.
        subset_ids: ``(n_subsets,)`` ids of the split's subsets.
        subset_members: ``n_subsets`` lists of the example ids in each subset.
        losses: ``(n_subsets, n_targets)`` float32, ``losses[j, t]`` = mean response-token
            cross-entropy of target ``t`` under the LM fine-tuned on subset ``j``.
    """

    split_id: int
    target_ids: tuple[str, ...]
    subset_ids: tuple[int, ...]
    subset_members: tuple[tuple[str, ...], ...]
    losses: np.ndarray

    def __post_init__(self) -> None:
        check_shape(
            f"split {self.split_id} losses",
            self.losses,
            "(n_subsets, n_targets)",
            (len(self.subset_ids), len(self.target_ids)),
        )
        if len(self.subset_members) != len(self.subset_ids):
            raise ValueError(
                f"split {self.split_id}: {len(self.subset_members)} member lists for "
                f"{len(self.subset_ids)} subsets"
            )

    def normalised(self) -> np.ndarray:
        """``(n_subsets, n_targets)`` float32 normalised labels r̂ (see ``normalise_losses``)."""
        return normalise_losses(self.losses)


def normalise_losses(losses: np.ndarray, clip: float = LABEL_CLIP) -> np.ndarray:
    """Per-target normalised labels r̂ = −(ℓ − mean ℓ) / std ℓ, clipped to [−clip, clip].

    Args:
        losses: ``(n_subsets, n_targets)`` losses; statistics are taken over subsets (axis 0),
            population std, and a std of 0 is replaced by 1 (DESIGN.md §2).
    Returns:
        ``(n_subsets, n_targets)`` float32; higher = the subset helped the target more.
    """
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"losses must be (n_subsets, n_targets), got shape {values.shape}")
    std = values.std(axis=0)
    std[std == 0] = 1.0
    normalised = -(values - values.mean(axis=0)) / std
    return np.clip(normalised, -clip, clip).astype(np.float32)
