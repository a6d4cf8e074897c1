"""Knobs of the evaluation harness (DESIGN.md §3): LDS ground truth, methods, classification,
data selection and cross-model transfer, in one frozen config with presets.

Presets:

- ``tiny`` (tests, about a minute on 2 cores): Dolly only, K = 6 subsets of 16 from a pool of 64,
  8 test examples, the tiny base LM; every method at its ``tiny`` settings.
- ``mini`` (the CPU benchmark, about 2 h on 2 AVX2 cores with its labels and encoder): P3
  (held-out templates), Dolly, GSM8K and HH-RLHF harmless, each K = 24 subsets of 50 from a pool
  of 500 (10% of the pool, as in DESIGN.md §6) and 100 test examples; 8 subsets retrained with a
  second seed for the noise ceiling. Cross-model transfer is opt-in (``--transfer-set``): a Llama
  warmed up for 150 steps.
- ``paper``: the paper's sizes (100 subsets of 1,000, 1,000 test examples) on a GPU.

The ground truth fine-tunes exactly as label generation does: ``finetune`` defaults to the
``FinetuneConfig`` of the same preset.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from airrep_core.config.base import PRECISIONS, PRESET_NAMES, StageConfig, help_field, require
from airrep_core.config.labels import BaseModelConfig, EvaluationSamplingConfig, FinetuneConfig
from airrep_core.methods.registry import ALL_METHODS

CLASSIFICATION_TASKS = ("hh_chosen_rejected", "source", "p3_task")
"""Top-1 same-class tests: HH-RLHF chosen vs rejected, source dataset of a mixed pool, P3 task."""


def _methods(config: StageConfig, name: str) -> None:
    value = getattr(config, name)
    require(
        isinstance(value, tuple)
        and len(set(value)) == len(value)
        and set(value) <= set(ALL_METHODS),
        config,
        name,
        value,
        f"distinct names from {ALL_METHODS}",
    )


@dataclasses.dataclass(frozen=True)
class EvaluationConfig(StageConfig):
    """Which evaluation sets, ground-truth sizes, methods and extra tests (DESIGN.md §3)."""

    eval_sets: tuple[str, ...] = help_field(
        ("p3", "dolly", "gsm8k", "hh_rlhf_harmless"),
        "evaluation sets: built-in names (p3, dolly, gsm8k, hh_rlhf_harmless) or any imported "
        "dataset's name",
    )
    sampling: EvaluationSamplingConfig = dataclasses.field(
        default_factory=EvaluationSamplingConfig,
        metadata={"help": "pool / test sizes and K subsets of each evaluation set"},
    )
    finetune: FinetuneConfig = dataclasses.field(
        default_factory=FinetuneConfig,
        metadata={"help": "fine-tuning of the base LM on each subset (as in label generation)"},
    )
    noise_subsets: int = help_field(
        16, "noise ceiling: the first N subsets retrained with noise_seed (0 = no ceiling)"
    )
    noise_seed: int = help_field(1, "fine-tune seed of the noise-ceiling retraining")
    methods: tuple[str, ...] = help_field(ALL_METHODS, f"methods scored, from {ALL_METHODS}")
    baseline_preset: str = help_field(
        "mini", f"settings preset of the baselines (airrep_core.config.baselines), {PRESET_NAMES}"
    )
    airrep_batch_size: int = help_field(64, "AirRep encoder batch size")
    airrep_precision: str = help_field("float32", f"AirRep encoding, one of {PRECISIONS}")
    classification_tasks: tuple[str, ...] = help_field(
        CLASSIFICATION_TASKS, f"classification tests, from {CLASSIFICATION_TASKS}"
    )
    classification_methods: tuple[str, ...] = help_field(
        ALL_METHODS, "methods of the classification tests"
    )
    classification_pool_per_class: int = help_field(
        100, "training pool examples per class in each classification test"
    )
    classification_queries: int = help_field(100, "test queries per classification test")
    selection_target: str = help_field(
        "gsm8k", "data selection: the evaluation set whose test examples are the target task"
    )
    selection_pool_sets: tuple[str, ...] = help_field(
        ("p3", "dolly", "gsm8k", "hh_rlhf_harmless"),
        "data selection: evaluation sets whose train pools form the mixed candidate pool",
    )
    selection_pool_per_set: int = help_field(250, "candidates taken from each pool set")
    selection_size: int = help_field(100, "N: examples selected (and drawn at random)")
    selection_random_draws: int = help_field(3, "random selections of N averaged (seeds 0..n-1)")
    selection_methods: tuple[str, ...] = help_field(
        ("airrep", "tfidf", "grad_dot"), "methods used to select (empty = no selection test)"
    )
    transfer_eval_sets: tuple[str, ...] = help_field(
        ("dolly",), "cross-model transfer: evaluation sets re-labelled with transfer_base"
    )
    transfer_base: BaseModelConfig = dataclasses.field(
        default_factory=lambda: BaseModelConfig(architecture="llama"),
        metadata={"help": "the other base LM of the transfer test (another architecture/size)"},
    )
    transfer_methods: tuple[str, ...] = help_field(
        ("airrep", "airrep_mean", "encoder", "tfidf", "grad_dot"),
        "methods scored against the transfer ground truth",
    )

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {
            "eval_sets": ("dolly",),
            "sampling": {"pool_size": 64, "n_test": 8, "n_subsets": 6, "subset_size": 16},
            "noise_subsets": 4,
            "baseline_preset": "tiny",
            "airrep_batch_size": 16,
            "classification_tasks": ("hh_chosen_rejected",),
            "classification_methods": ("airrep", "tfidf", "bm25"),
            "classification_pool_per_class": 16,
            "classification_queries": 12,
            "selection_target": "dolly",
            "selection_pool_sets": ("dolly", "hh_rlhf_harmless"),
            "selection_pool_per_set": 24,
            "selection_size": 8,
            "selection_random_draws": 1,
            "selection_methods": ("airrep", "tfidf"),
            "transfer_eval_sets": (),
            "transfer_base": {"architecture": "llama"},
        },
        "mini": {
            "sampling": {"pool_size": 500, "n_test": 100, "n_subsets": 24, "subset_size": 50},
            "noise_subsets": 8,
            "airrep_precision": "auto",
            # Transfer adds a warm-up and K fine-tunes per set (about 17 min for Dolly):
            # `airrep bench lds --preset mini --transfer-set dolly` adds it to a finished run.
            "transfer_eval_sets": (),
            "transfer_base": {"architecture": "llama", "max_steps": 150},
        },
        "paper": {
            "sampling": {
                "pool_size": 10_000,
                "n_test": 1000,
                "n_subsets": 100,
                "subset_size": 1000,
            },
            "noise_subsets": 20,
            "baseline_preset": "paper",
            "airrep_batch_size": 256,
            "airrep_precision": "auto",
            "classification_pool_per_class": 500,
            "classification_queries": 500,
            "selection_pool_per_set": 2500,
            "selection_size": 1000,
            # Another size of the same family as the paper's target LM.
            "transfer_base": {"model": "Qwen/Qwen2.5-1.5B", "corpus_share": 0.0},
        },
    }

    def validate(self) -> None:
        require(
            isinstance(self.eval_sets, tuple)
            and len(self.eval_sets) > 0
            and len(set(self.eval_sets)) == len(self.eval_sets)
            and all(isinstance(n, str) and n for n in self.eval_sets),
            self,
            "eval_sets",
            self.eval_sets,
            "a non-empty tuple of distinct names",
        )
        for name in ("methods", "classification_methods", "selection_methods", "transfer_methods"):
            _methods(self, name)
        require(len(self.methods) > 0, self, "methods", self.methods, "at least one method")
        require(
            0 <= self.noise_subsets <= self.sampling.n_subsets and self.noise_subsets != 1,
            self,
            "noise_subsets",
            self.noise_subsets,
            f"0 (off) or 2..n_subsets ({self.sampling.n_subsets})",
        )
        require(
            self.noise_seed != self.finetune.seed,
            self,
            "noise_seed",
            self.noise_seed,
            f"a seed other than finetune.seed ({self.finetune.seed})",
        )
        require(
            set(self.classification_tasks) <= set(CLASSIFICATION_TASKS),
            self,
            "classification_tasks",
            self.classification_tasks,
            f"names from {CLASSIFICATION_TASKS}",
        )
        for name in (
            "airrep_batch_size",
            "classification_pool_per_class",
            "classification_queries",
            "selection_pool_per_set",
            "selection_size",
            "selection_random_draws",
        ):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, self, name, value, "an int >= 1")
        if self.selection_methods:
            require(
                len(self.selection_pool_sets) > 0,
                self,
                "selection_pool_sets",
                self.selection_pool_sets,
                "at least one evaluation set when selection_methods is set",
            )
            require(
                self.selection_size < len(self.selection_pool_sets) * self.selection_pool_per_set,
                self,
                "selection_size",
                self.selection_size,
                "fewer than the candidate pool (sets x selection_pool_per_set)",
            )

    def method_list(self, names: typing.Iterable[str]) -> tuple[str, ...]:
        """``names`` in the canonical order of ``ALL_METHODS`` (tables list methods that way)."""
        wanted = set(names)
        return tuple(m for m in ALL_METHODS if m in wanted)
