"""The end-to-end pipeline's config: one preset name sets every stage (DESIGN.md §5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from airrep_core.config.base import PRESET_NAMES, StageConfig, help_field, require
from airrep_core.config.embedding import EmbeddingConfig
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.teacher import TeacherConfig
from airrep_core.errors import ConfigError


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
            isinstance(self.train, EncoderTrainConfig),
            self,
            "train",
            self.train,
            "EncoderTrainConfig",
        )
        require(
            isinstance(self.teacher, TeacherConfig), self, "teacher", self.teacher, "TeacherConfig"
        )
        require(
            self.validation_splits >= 0, self, "validation_splits", self.validation_splits, ">= 0"
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EncoderStageConfig:
        """The trainer's preset ``name`` and this stage's preset values."""
        if name not in PRESET_NAMES:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {name!r}; allowed: {list(PRESET_NAMES)}"
            )
        values = {**cls.PRESETS[name], **overrides}
        train = values.pop("train", {})
        if isinstance(train, Mapping):
            train = EncoderTrainConfig.preset(name, **train)
        teacher = values.pop("teacher", {})
        if isinstance(teacher, Mapping):
            teacher = TeacherConfig.preset(name, **teacher)
        return cls(train=train, teacher=teacher, **values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderStageConfig:
        """Build from ``{"train": {...}, "teacher": {...}, "validation_splits": N}``."""
        values = dict(values)
        train = values.pop("train", {})
        if not isinstance(train, EncoderTrainConfig):
            train = EncoderTrainConfig.from_dict(train)
        teacher = values.pop("teacher", {})
        if not isinstance(teacher, TeacherConfig):
            teacher = TeacherConfig.from_dict(teacher)
        return cls(train=train, teacher=teacher, **values)


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
        for name, cls in _PIPELINE_PARTS.items():
            value = getattr(self, name)
            require(isinstance(value, cls), self, name, value, f"a {cls.__name__}")
        require(self.pool_rows >= 0, self, "pool_rows", self.pool_rows, ">= 0 (0 = all)")
        for name in ("corpus", "pool", "query_dataset"):
            require(bool(getattr(self, name)), self, name, getattr(self, name), "a dataset name")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PipelineConfig:
        """Every stage at preset ``name``; ``overrides`` set top-level fields or whole parts."""
        if name not in PRESET_NAMES:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {name!r}; allowed: {list(PRESET_NAMES)}"
            )
        parts = {part: part_cls.preset(name) for part, part_cls in _PIPELINE_PARTS.items()}
        return cls.from_dict({**parts, **cls.PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PipelineConfig:
        """Build from a JSON-like dict (parts as dicts or config objects; missing = defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}"
            )
        converted = dict(values)
        for part, part_cls in _PIPELINE_PARTS.items():
            value = converted.get(part)
            if isinstance(value, Mapping):
                converted[part] = part_cls.from_dict(value)
        return cls(**converted)


_PIPELINE_PARTS: dict[str, type[StageConfig]] = {
    "labels": LabelsConfig,
    "encoder": EncoderStageConfig,
    "embedding": EmbeddingConfig,
    "evaluation": EvaluationConfig,
}
