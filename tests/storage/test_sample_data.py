"""The four sample datasets of ../shared/data import with the expected row counts; the counts are
checked against an independent plain-Python reading of the files."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from storage.artifacts import ArtifactStore
from storage.dataset_heads import DatasetVersion
from storage.datasets import import_dataset, read_examples, read_skipped
from storage.sample_data import SAMPLE_DATASETS, sample_data_dir, sample_dataset

pytestmark = pytest.mark.skipif(
    not (sample_data_dir() / "flan_p3").is_dir(), reason="sample data not found ($AIRREP_DATA_DIR)"
)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[DatasetVersion, float]]:
    store = ArtifactStore(f"file://{tmp_path_factory.mktemp('samples')}")
    out = {}
    for sample in SAMPLE_DATASETS.values():
        start = time.perf_counter()
        version = import_dataset(
            store, sample.paths(), sample.name, skip_invalid=sample.skip_invalid
        )
        out[sample.name] = (version, time.perf_counter() - start)
    out["_store"] = store  # type: ignore[assignment]
    return out


def _lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_flan_p3(imported: dict) -> None:
    version, seconds = imported["flan_p3"]
    records, usable = 0, []
    for path in sorted((sample_data_dir() / "flan_p3").glob("*.jsonl")):
        for r in _lines(path):
            records += 1
            response = r["completion"].removesuffix("<|endoftext|>")
            if response.strip():
                usable.append((r["prompt"], response))
    assert records == 55_185
    empty = records - len(usable)
    duplicates = len(usable) - len(set(usable))
    assert (version.skipped, version.duplicates_dropped) == (empty, duplicates)
    assert version.rows == 55_185 - empty - duplicates
    table = read_examples(imported["_store"], version)
    assert table.num_rows == version.rows
    assert (
        len(set(table.column("group").to_pylist())) == 283 - 7
    )  # the 7 trec templates: no answers
    assert not any(r.endswith("<|endoftext|>") for r in table.column("response").to_pylist())
    skipped = read_skipped(imported["_store"], version)
    assert {Path(s["file"]).name.split("_")[0] for s in skipped} == {"trec"}
    assert {(s["field"], s["reason"]) for s in skipped} == {("completion", "empty value")}
    print(f"flan_p3 import: {seconds:.2f}s for 55,185 records -> {version.rows:,} rows")


def test_dolly(imported: dict) -> None:
    version, _ = imported["dolly"]
    records = _lines(sample_data_dir() / "dolly" / "dolly_6400.jsonl")
    assert len(records) == 6_400
    duplicates = len(records) - len({(r["instruction"], r["text"]) for r in records})
    assert version.rows == 6_400 - duplicates and version.duplicates_dropped == duplicates == 3
    ids = read_examples(imported["_store"], version).column("example_id").to_pylist()
    assert ids[:3] == ["0", "1", "2"]  # Dolly's own ids


@pytest.mark.parametrize(("name", "rows"), [("gsm8k_train", 7_473), ("gsm8k_test", 1_319)])
def test_gsm8k(imported: dict, name: str, rows: int) -> None:
    version, _ = imported[name]
    assert (version.rows, version.skipped, version.duplicates_dropped) == (rows, 0, 0)
    responses = read_examples(imported["_store"], version).column("response").to_pylist()
    assert all("#### " in r for r in responses)


def test_hh_rlhf_harmless(imported: dict) -> None:
    version, _ = imported["hh_rlhf_harmless"]
    path = sample_dataset("hh_rlhf_harmless").paths()[0]
    records = _lines(path)
    assert len(records) == 2_312

    def last_turn(transcript: str) -> str:
        return transcript.rsplit("\n\nAssistant:", 1)[1].strip()

    empty_turn = sum(
        1 for r in records if not last_turn(r["chosen"]) or not last_turn(r["rejected"])
    )
    assert version.skipped == empty_turn == 4
    assert version.rows == 2 * (2_312 - empty_turn)
    groups = read_examples(imported["_store"], version).column("group").to_pylist()
    assert groups.count("chosen") == groups.count("rejected") == 2_312 - empty_turn
