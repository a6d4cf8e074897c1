"""Fixtures shared by the LM tests of tests/core: a P3 corpus and the tiny base LM built on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_fixtures import p3_example_records

from airrep_core.config.labels import BaseModelConfig
from airrep_core.data.examples import Example
from airrep_core.lm.base_model import BaseModelReport, build_base_model


@pytest.fixture(scope="module")
def corpus() -> list[Example]:
    """The P3 pairs 0 to 16 as ``Example`` records (``lm_fixtures.p3_example_records``)."""
    return p3_example_records(0, 16)


@pytest.fixture(scope="module")
def built(
    corpus: list[Example], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, BaseModelReport]:
    """The ``tiny`` preset base LM built from ``corpus``: its directory and build report."""
    out = tmp_path_factory.mktemp("base")
    return out, build_base_model(corpus, BaseModelConfig.preset("tiny"), out)
