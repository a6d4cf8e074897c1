"""Stage configs (frozen, validated dataclasses with presets). Flows take these as parameters."""

from airrep_core.config.base import PRESET_NAMES, StageConfig, help_field

__all__ = ["PRESET_NAMES", "StageConfig", "help_field"]
