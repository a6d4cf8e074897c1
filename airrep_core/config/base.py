"""Shared machinery for stage configs: frozen, validated dataclasses with help text and presets.

Every stage's knobs are one frozen dataclass (DESIGN.md §5). Fields carry their help text in
``metadata={"help": ...}``; a class lists its presets (``tiny`` for tests, ``mini`` for the CPU
benchmark, ``paper`` for GPU scale) in ``PRESETS``. Configs are flow parameters and are saved in
every artifact manifest, so they round-trip through plain JSON dicts.

A field whose type is itself a ``StageConfig`` (a *part*: ``LabelsConfig.finetune``,
``PipelineConfig.evaluation``, ...) is handled generically: ``from_dict`` builds it from a nested
dict, ``preset(name)`` takes the part's own preset ``name`` with the enclosing class's
``PRESETS[name][part]`` and the caller's ``part={...}`` overrides on top, and construction
checks its type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from airrep_core.errors import ConfigError

C = TypeVar("C", bound="StageConfig")

PRESET_NAMES = ("tiny", "mini", "paper")

PRECISIONS = ("auto", "float32", "bf16")

TEXT_VIEWS = ("question_answer", "response")
"""What text of an example a text model reads: ``question_answer`` = ``examples.encoder_text``
(the paper's format, prompt and response), ``response`` = the response alone (the target LM's
loss and fine-tuning read only response tokens; DESIGN.md §2, "Label-efficient recipe")."""
"""Numeric precision of every torch computation: float32, bf16 autocast, or auto (bf16 on CUDA,
float32 on CPU; ``airrep_core.runtime`` resolves it before it enters a content key)."""
DEVICES = ("auto", "cpu", "cuda")
"""Where a computation runs; auto = CUDA when there is a GPU."""
PRECISION_FIELDS = ("precision", "eval_precision", "airrep_precision")
"""Config fields that hold a precision (``PRECISIONS``)."""
CHOICE_FIELDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(PRECISION_FIELDS, PRECISIONS),
    "device": DEVICES,
    "baseline_preset": PRESET_NAMES,
}
"""Fields checked by every config, by name: the value must be one of these."""


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text (shown by the CLI and stored with the config)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen value as a config default")
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base class of every stage config.

    Subclasses are ``@dataclasses.dataclass(frozen=True)``, implement ``validate`` (raise
    ``ConfigError`` naming the field, the bad value and the allowed range) and fill ``PRESETS``
    with ``{preset_name: {field: value}}`` overrides of the defaults.
    """

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __post_init__(self) -> None:
        for name, part_cls in self.parts().items():
            value = getattr(self, name)
            require(isinstance(value, part_cls), self, name, value, f"a {part_cls.__name__}")
        for f in dataclasses.fields(self):
            allowed = CHOICE_FIELDS.get(f.name)
            if allowed is not None:
                value = getattr(self, f.name)
                require(value in allowed, self, f.name, value, str(allowed))
        self.validate()

    @classmethod
    def parts(cls) -> dict[str, type[StageConfig]]:
        """``{field: config class}`` of the fields that are configs themselves."""
        return _parts(cls)

    def validate(self) -> None:
        """Check field values; raise ``ConfigError`` on the first bad one."""

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The config of preset ``name`` (``tiny``/``mini``/``paper``), with optional overrides.

        Each part is its class's preset ``name`` with ``PRESETS[name][part]`` and
        ``overrides[part]`` (a dict of its fields) on top; a config object given as
        ``overrides[part]`` is taken as is.
        """
        if name not in cls.PRESETS:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {name!r}; allowed: {sorted(cls.PRESETS)}"
            )
        values = {**cls.PRESETS[name], **overrides}
        for part, part_cls in cls.parts().items():
            override = overrides.get(part, {})
            if not isinstance(override, part_cls):
                if not isinstance(override, Mapping):
                    raise ConfigError(
                        f"{cls.__name__}.{part}: expected a dict of {part_cls.__name__} fields "
                        f"or a {part_cls.__name__}, got {override!r}"
                    )
                override = part_cls.preset(
                    name, **merged(cls.PRESETS[name].get(part, {}), override)
                )
            values[part] = override
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build from a JSON-like dict (parts as nested dicts or config objects; lists become
        tuples); unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}"
            )
        parts = cls.parts()
        converted = {}
        for name, value in values.items():
            if name in parts and isinstance(value, Mapping):
                value = parts[name].from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            converted[name] = value
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_help(cls, prefix: str = "") -> dict[str, str]:
        """``{field: help text}`` of every field, parts flattened as ``part.field`` (for the
        CLI's ``--help`` and documentation)."""
        parts = cls.parts()
        found: dict[str, str] = {}
        for f in dataclasses.fields(cls):
            if f.name in parts:
                found.update(parts[f.name].field_help(f"{prefix}{f.name}."))
            else:
                found[prefix + f.name] = f.metadata.get("help", "")
        return found


def merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` on top, nested dicts merged key by key (a part's preset overrides and
    the caller's overrides of the same part both apply)."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        both = isinstance(value, Mapping) and isinstance(below, Mapping)
        out[key] = merged(below, value) if both else value
    return out


@functools.cache
def _parts(cls: type[StageConfig]) -> dict[str, type[StageConfig]]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], StageConfig)
    }


def require(condition: bool, config: object, field: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError`` naming the config class, field, bad value and allowed range."""
    if not condition:
        raise ConfigError(
            f"{type(config).__name__}.{field}={value!r} is invalid; allowed: {allowed}"
        )
