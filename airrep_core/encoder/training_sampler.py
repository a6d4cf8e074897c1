"""Least-seen-first sampling of the encoder training steps (DESIGN.md §2, "Training").

A step takes one split (the least used so far), a sample of its targets and a sample of its
subsets, each time the least seen ones first, ties broken by a seeded random draw. The whole
state (counts and the generator) round-trips through JSON, so a resumed run continues the exact
same sequence of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StepSample:
    """What one training step uses: a split index and sorted target / subset indices into it."""

    split_index: int
    target_indices: np.ndarray
    subset_indices: np.ndarray


class LeastSeenSampler:
    """Seeded least-seen-first sampler over splits, and over the targets and subsets of each."""

    def __init__(self, n_targets: Sequence[int], n_subsets: Sequence[int], seed: int) -> None:
        """``n_targets[k]`` / ``n_subsets[k]``: sizes of split k."""
        if len(n_targets) != len(n_subsets) or not n_targets:
            raise ValueError(
                f"need one target count and one subset count per split, got {len(n_targets)} "
                f"and {len(n_subsets)} (at least one split)"
            )
        self.split_counts = np.zeros(len(n_targets), dtype=np.int64)
        self.target_counts = [np.zeros(int(n), dtype=np.int64) for n in n_targets]
        self.subset_counts = [np.zeros(int(n), dtype=np.int64) for n in n_subsets]
        self.rng = np.random.Generator(np.random.PCG64(int(seed)))

    def next_step(self, targets_per_step: int, subsets_per_step: int) -> StepSample:
        """Draw the next step's split, targets and subsets (all of them when fewer exist)."""
        split = int(_least_seen(self.split_counts, 1, self.rng)[0])
        targets = _least_seen(self.target_counts[split], targets_per_step, self.rng)
        subsets = _least_seen(self.subset_counts[split], subsets_per_step, self.rng)
        return StepSample(split, targets, subsets)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the counts and the generator's state."""
        return {
            "split_counts": self.split_counts.tolist(),
            "target_counts": [c.tolist() for c in self.target_counts],
            "subset_counts": [c.tolist() for c in self.subset_counts],
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; the split sizes must match this sampler's."""
        shapes = (
            [len(c) for c in state["target_counts"]],
            [len(c) for c in state["subset_counts"]],
        )
        mine = ([len(c) for c in self.target_counts], [len(c) for c in self.subset_counts])
        if shapes != mine or len(state["split_counts"]) != len(self.split_counts):
            raise ValueError(
                f"sampler state is for splits with (targets, subsets) sizes {shapes}, "
                f"but this run's splits have {mine}"
            )
        self.split_counts = np.asarray(state["split_counts"], dtype=np.int64)
        self.target_counts = [np.asarray(c, dtype=np.int64) for c in state["target_counts"]]
        self.subset_counts = [np.asarray(c, dtype=np.int64) for c in state["subset_counts"]]
        self.rng.bit_generator.state = state["rng"]


def _least_seen(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The ``k`` least seen indices (random tie-break), sorted; their counts are incremented."""
    tie_break = rng.random(len(counts))
    order = np.lexsort((tie_break, counts))
    chosen = np.sort(order[: min(k, len(counts))])
    counts[chosen] += 1
    return chosen
