"""Command-line settings of a stage config: ``KEY=VALUE`` assignments to any field, parts included.

``labels.finetune.learning_rate=1e-4`` sets one field of a nested part; the keys are those of
``StageConfig.field_help`` (``airrep config show`` prints them with their help and values). A
value is read as JSON when it parses (numbers, ``true``/``false``, ``null``, ``[lists]``) and as a
plain string otherwise, so ``encoder.train.recipe=paper`` needs no quotes.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from airrep_core.config.base import StageConfig
from airrep_core.errors import ConfigError


def parse_settings(assignments: Sequence[str], config_cls: type[StageConfig]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``, every key checked against the
    fields of ``config_cls`` (an unknown key is a ``ConfigError`` naming it and the closest
    keys). Later assignments of the same key win."""
    known = config_cls.field_help()
    nested: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"setting {assignment!r}: expected KEY=VALUE, e.g. pool_rows=500")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"setting {key!r} is not a {config_cls.__name__} field{hint} "
                "(`airrep config show` lists every key)"
            )
        *parents, leaf = key.split(".")
        level = nested
        for parent in parents:
            level = level.setdefault(parent, {})
        level[leaf] = _value(raw)
    return nested


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def flat_values(config: StageConfig, prefix: str = "") -> dict[str, Any]:
    """``{key: value}`` of every field of ``config``, parts flattened like ``field_help``."""
    values: dict[str, Any] = {}
    for name, value in config.to_dict().items():
        if name in config.parts():
            values.update(flat_values(getattr(config, name), f"{prefix}{name}."))
        else:
            values[prefix + name] = value
    return values
