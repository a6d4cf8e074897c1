"""The runtime module: "auto" device and precision resolved before a config enters a key."""

from __future__ import annotations

import json

import pytest
import torch

from airrep_core.config.baselines import GradDotConfig
from airrep_core.config.pipeline import PipelineConfig
from airrep_core.runtime import precision_context, resolve_precision, resolved


def leaves(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}")
    else:
        yield path, value


@pytest.mark.parametrize("preset", ["tiny", "mini", "paper"])
def test_resolved_configs_hold_no_auto_device_or_precision(preset):
    config = PipelineConfig.preset(preset)
    assert any(v == "auto" for _, v in leaves(config.to_dict()))  # the presets do say auto
    done = resolved(config)
    here = "cuda" if torch.cuda.is_available() else "cpu"
    fast = "bf16" if here == "cuda" else "float32"
    for path, value in leaves(done.to_dict()):
        if path.endswith((".device", "precision")):
            assert value != "auto", path
    assert done.labels.finetune.device == here
    assert done.labels.finetune.precision == fast
    assert done.evaluation.airrep_precision in (fast, config.evaluation.airrep_precision)
    assert resolved(done) == done  # idempotent
    # Everything but the resolved fields is unchanged.
    before, after = dict(leaves(config.to_dict())), dict(leaves(done.to_dict()))
    assert {p for p in before if before[p] != after[p]} <= {
        p for p, v in before.items() if v == "auto"
    }
    json.dumps(done.to_dict())


def test_an_explicit_precision_is_kept_and_a_bad_one_is_refused():
    config = GradDotConfig.preset("mini", precision="bf16")
    assert resolved(config).precision == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "float32"
    with pytest.raises(ValueError, match="allowed"):
        resolve_precision("fp16", torch.device("cpu"))
    with precision_context("float32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


def test_every_config_field_has_help_text_parts_included():
    """``field_help`` flattens the parts (``labels.finetune.precision``...): what ``--help`` and
    the docs print; every field of every stage config says what it does."""
    helps = PipelineConfig.field_help()
    assert "labels.finetune.precision" in helps and "evaluation.sampling.n_subsets" in helps
    assert "encoder.train.steps" in helps and "embedding.precision" in helps
    missing = sorted(name for name, text in helps.items() if not text.strip())
    assert not missing, f"config fields without help text: {missing}"
