"""Shared machinery for stage configs: frozen, validated dataclasses with help text and presets.

Every stage's knobs are one frozen dataclass (DESIGN.md §5). Fields carry their help text in
``metadata={"help": ...}``; a class lists its presets (``tiny`` for tests, ``mini`` for the CPU
benchmark, ``paper`` for GPU scale) in ``PRESETS``. Configs are flow parameters and are saved in
every artifact manifest, so they round-trip through plain JSON dicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from airrep_core.errors import ConfigError

C = TypeVar("C", bound="StageConfig")

PRESET_NAMES = ("tiny", "mini", "paper")


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
        self.validate()

    def validate(self) -> None:
        """Check field values; raise ``ConfigError`` on the first bad one."""

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The config of preset ``name`` (``tiny``/``mini``/``paper``), with optional overrides."""
        if name not in cls.PRESETS:
            raise ConfigError(
                f"{cls.__name__}: unknown preset {name!r}; allowed: {sorted(cls.PRESETS)}"
            )
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build from a JSON-like dict; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(names)}"
            )
        converted = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                value = values[f.name]
                converted[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """sha256 hex digest of the canonical JSON of the fields: part of content keys."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """``{field_name: help text}`` for the CLI and documentation."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def require(condition: bool, config: object, field: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError`` naming the config class, field, bad value and allowed range."""
    if not condition:
        raise ConfigError(
            f"{type(config).__name__}.{field}={value!r} is invalid; allowed: {allowed}"
        )
