"""``--set KEY=VALUE`` settings: the same configs as the preset API, every key known, bad keys named."""

from __future__ import annotations

from pathlib import Path

import pytest
from airrep_cli import airrep

from airrep_core.config.encoder import RECIPES
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.pipeline import EncoderStageConfig, PipelineConfig
from airrep_core.config.settings import flat_values, parse_settings
from airrep_core.errors import ConfigError
from flows.cli_config import pipeline_config


@pytest.mark.parametrize("preset", ["tiny", "mini", "paper"])
@pytest.mark.parametrize("recipe", [None, *RECIPES])
def test_recipe_option_equals_the_preset_api(preset: str, recipe: str | None) -> None:
    expected = PipelineConfig.preset(preset)
    if recipe is not None:
        encoder = EncoderStageConfig.preset(preset, train={"recipe": recipe})
        expected = PipelineConfig.preset(preset, encoder=encoder)
    assert pipeline_config(preset, recipe, None) == expected
    assert pipeline_config(preset, None, [f"encoder.train.recipe={recipe}"] if recipe else []) == (
        expected
    )


@pytest.mark.parametrize("preset", ["tiny", "mini", "paper"])
def test_a_nested_setting_changes_one_field_and_keeps_the_presets_others(preset: str) -> None:
    config = pipeline_config(preset, None, ["labels.finetune.epochs=7", "pool_rows=123"])
    assert config.labels.finetune == LabelsConfig.preset(preset).finetune.replace(epochs=7)
    assert config.labels.sampling == LabelsConfig.preset(preset).sampling
    assert config.pool_rows == 123
    assert config.replace(pool_rows=PipelineConfig.preset(preset).pool_rows).to_dict() != (
        PipelineConfig.preset(preset).to_dict()
    )


def test_every_field_has_one_settable_key() -> None:
    assert list(flat_values(PipelineConfig.preset("mini"))) == list(PipelineConfig.field_help())


def test_values_are_json_or_plain_strings() -> None:
    nested = parse_settings(
        ["pool_rows=5", "pool=dolly", "encoder.train.lexical_weights=[1, 2]", "pool_rows=6"],
        PipelineConfig,
    )
    assert nested == {
        "pool_rows": 6,
        "pool": "dolly",
        "encoder": {"train": {"lexical_weights": [1, 2]}},
    }
    assert pipeline_config(
        "tiny", None, ["encoder.train.lexical_weights=[1, 2]"]
    ).encoder.train.lexical_weights == (1, 2)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("labels.sampling.n_subset=3", "did you mean labels.sampling.n_subsets"),
        ("pool_rows", "expected KEY=VALUE"),
        ("labels=3", "not a PipelineConfig field"),
    ],
)
def test_bad_settings_name_the_key(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings([assignment], PipelineConfig)


def test_the_cli_shows_every_key_and_refuses_a_bad_one_in_one_line(tmp_path: Path) -> None:
    shown = airrep("config", "show", "--preset", "mini", "--set", "labels.finetune.epochs=7")
    assert shown.returncode == 0, shown.stderr
    assert "labels.finetune.epochs" in shown.stdout and " 7 " in shown.stdout
    root = tmp_path / "store"
    refused = airrep("run", "--set", "pool_rows=-1", "--root", str(root))
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "pool_rows" in refused.stderr
    assert not root.exists()  # refused before the store is touched
