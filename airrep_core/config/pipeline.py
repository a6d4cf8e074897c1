"""The end-to-end pipeline's config: one preset name sets every stage (DESIGN.md §5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from airrep_core.config.base import StageConfig, help_field, require
from airrep_core.config.embedding import EmbeddingConfig
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.teacher import TeacherConfig


@dataclasses.dataclass(frozen=True)
class EncoderStageConfig(StageConfig):
    """Training the encoder on a label set: the trainer's config and the held-out splits."""

    train: EncoderTrainConfig = dataclasses.field(
        default_factory=EncoderTrainConfig, metadata={"help": "the trainer's config"}
    )
    validation_splits: int = help_field(
        1, "the last N label splits are held out for validation and checkpoint selection"
    )
    teacher: TeacherConfig = dataclasses.field(
        default_factory=TeacherConfig,
        metadata={
            "help": "the teacher of the pre-training steps (used when train.teacher_steps > 0)"
        },
    )

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {"validation_splits": 1},
        "mini": {"validation_splits": 1},
        "paper": {"validation_splits": 5},
    }

    def validate(self) -> None:
        require(
            self.validation_splits >= 0, self, "validation_splits", self.validation_splits, ">= 0"
        )


@dataclasses.dataclass(frozen=True)
class PipelineConfig(StageConfig):
    """The end-to-end pipeline: which datasets play which role, and every stage's config."""

    corpus: str = help_field(
        "flan_p3_train",
        "dataset the labels (and so the encoder) are trained on; the default is the sample P3 "
        "without its held-out templates (the P3 evaluation set)",
    )
    labels: LabelsConfig = dataclasses.field(
        default_factory=LabelsConfig, metadata={"help": "label generation"}
    )
    encoder: EncoderStageConfig = dataclasses.field(
        default_factory=EncoderStageConfig, metadata={"help": "encoder training"}
    )
    pool: str = help_field("flan_p3", "dataset embedded as the attribution pool")
    pool_rows: int = help_field(0, "rows sampled from the pool dataset (0 = all of it)")
    embedding: EmbeddingConfig = dataclasses.field(
        default_factory=EmbeddingConfig, metadata={"help": "the embedding store"}
    )
    query_dataset: str = help_field(
        "dolly", "dataset whose first example is attributed at the end of a run, as an example"
    )
    evaluation: EvaluationConfig = dataclasses.field(
        default_factory=EvaluationConfig,
        metadata={"help": "the evaluation stage (LDS against baselines; DESIGN.md §3)"},
    )

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {"pool_rows": 200},
        "mini": {"pool_rows": 5000},
        "paper": {"pool_rows": 0},
    }

    def validate(self) -> None:
        require(self.pool_rows >= 0, self, "pool_rows", self.pool_rows, ">= 0 (0 = all)")
        for name in ("corpus", "pool", "query_dataset"):
            require(bool(getattr(self, name)), self, name, getattr(self, name), "a dataset name")
