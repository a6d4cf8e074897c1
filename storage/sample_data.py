"""The sample datasets of ``../shared/data`` (see its README.md) and how to import them.

Location: ``$AIRREP_DATA_DIR``, default ``<repo>/../shared/data``. Two datasets are imported with
``skip_invalid`` because the upstream data has records without a usable response (reported in the
artifact's ``skipped.jsonl``):

- ``flan_p3``: the 7 ``trec_*`` templates (1,400 records) have an empty completion (only
  ``<|endoftext|>``); 1,153 further records repeat earlier content and are dropped as duplicates.
- ``hh_rlhf_harmless``: 4 ``chosen`` transcripts end with an empty assistant turn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from storage.root import REPO_ROOT

DATA_DIR_ENV = "AIRREP_DATA_DIR"


@dataclass(frozen=True)
class SampleDataset:
    """A sample dataset: its name, paths relative to the data folder and import options."""

    name: str
    relative_paths: tuple[str, ...]
    skip_invalid: bool = False
    description: str = ""

    def paths(self) -> list[Path]:
        """Absolute paths of the dataset's files/folders."""
        base = sample_data_dir()
        return [base / p for p in self.relative_paths]


SAMPLE_DATASETS: dict[str, SampleDataset] = {
    d.name: d
    for d in (
        SampleDataset(
            "flan_p3",
            ("flan_p3",),
            skip_invalid=True,
            description="T0/P3 multi-task prompts, one file per template (55,185 records)",
        ),
        SampleDataset("dolly", ("dolly/dolly_6400.jsonl",), description="Dolly-15k, first 6,400"),
        SampleDataset("gsm8k_train", ("gsm8k/train.jsonl",), description="GSM8K train (7,473)"),
        SampleDataset("gsm8k_test", ("gsm8k/test.jsonl",), description="GSM8K test (1,319)"),
        SampleDataset(
            "hh_rlhf_harmless",
            ("hh_rlhf_harmless/test.jsonl.gz",),
            skip_invalid=True,
            description="HH-RLHF harmless-base test (2,312 chosen/rejected pairs)",
        ),
    )
}


def sample_data_dir() -> Path:
    """``$AIRREP_DATA_DIR``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT.parent / "shared" / "data")


def sample_dataset(name: str) -> SampleDataset:
    """The sample dataset ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return SAMPLE_DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown sample dataset {name!r}; known: {sorted(SAMPLE_DATASETS)}"
        ) from None
