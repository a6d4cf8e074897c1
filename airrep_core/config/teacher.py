"""Knobs of the teacher stage (DESIGN.md §2, "Label-efficient recipe": teacher pre-training)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from airrep_core.config.base import PRESET_NAMES, StageConfig, help_field, require
from airrep_core.methods.registry import TEACHER_METHODS


@dataclasses.dataclass(frozen=True)
class TeacherConfig(StageConfig):
    """Which cheap teacher scores which (target, candidate) pairs of the label corpus."""

    methods: tuple[str, ...] = help_field(
        ("bm25_response", "logra"),
        f"teacher methods, from {TEACHER_METHODS}; several are fused (per-target z-scores, summed)",
    )
    weights: tuple[float, ...] = help_field(
        (), "fusion weight of each method, in the order of methods (empty = all 1)"
    )
    n_targets: int = help_field(400, "teacher targets drawn from the label corpus")
    n_candidates: int = help_field(2000, "teacher candidates drawn from the label corpus")
    seed: int = help_field(0, "seed of the draw")
    baseline_preset: str = help_field(
        "mini",
        f"settings preset of the teacher baselines (airrep_core.config.baselines), {PRESET_NAMES}",
    )

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {"n_targets": 12, "n_candidates": 40, "baseline_preset": "tiny"},
        "mini": {"n_targets": 400, "n_candidates": 2000},
        "paper": {"n_targets": 10_000, "n_candidates": 100_000, "baseline_preset": "paper"},
    }

    def validate(self) -> None:
        require(
            isinstance(self.methods, tuple)
            and len(self.methods) > 0
            and len(set(self.methods)) == len(self.methods)
            and set(self.methods) <= set(TEACHER_METHODS),
            self,
            "methods",
            self.methods,
            f"distinct names from {TEACHER_METHODS}",
        )
        require(
            isinstance(self.weights, tuple)
            and len(self.weights) in (0, len(self.methods))
            and all(w >= 0 for w in self.weights),
            self,
            "weights",
            self.weights,
            f"empty or {len(self.methods)} non-negative numbers (one per method)",
        )
        require(self.n_targets >= 1, self, "n_targets", self.n_targets, ">= 1")
        require(self.n_candidates >= 2, self, "n_candidates", self.n_candidates, ">= 2")

    def method_weights(self) -> dict[str, float]:
        """``{method: weight}`` (1 for every method when ``weights`` is empty)."""
        weights = self.weights or (1.0,) * len(self.methods)
        return dict(zip(self.methods, (float(w) for w in weights), strict=True))
