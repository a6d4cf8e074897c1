"""Data import: every input format and record layout, bad input (naming file, line and field),
skip reports, duplicates and versioning."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.artifacts import ArtifactStore
from storage.dataset_heads import (
    HEADS_DIR,
    dataset_history,
    dataset_versions,
    find_version,
    latest_version,
    list_datasets,
)
from storage.datasets import (
    content_hash,
    import_dataset,
    read_examples,
    read_skipped,
    sample_dataset,
)
from storage.errors import ArtifactNotFound, DataValidationError, FormatDetectionError
from storage.sample_data import SAMPLE_DATASETS
from storage.shapes import FieldMapping

RECORDS = [
    {"question": "What is 2+2?", "answer": "4", "extra": 1},
    {"question": "Capital of France?", "answer": "Paris"},
    {"question": "Ünïcode ✓?", "answer": "yes — “quoted”"},
]


@pytest.fixture
def local_store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / 'store'}")


def _jsonl(path: Path, records: list, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def _write_all_formats(directory: Path, records: list[dict]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    jsonl = _jsonl(directory / "d.jsonl", records)
    gz = _jsonl(directory / "d.jsonl.gz", records, opener=gzip.open)
    array = directory / "d.json"
    array.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    array_gz = directory / "d.json.gz"
    with gzip.open(array_gz, "wt", encoding="utf-8") as f:
        json.dump(records, f)
    table = pa.Table.from_pylist([{k: r[k] for k in ("question", "answer")} for r in records])
    parquet = directory / "d.parquet"
    pq.write_table(table, parquet)
    csv_path = directory / "d.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return [jsonl, gz, array, array_gz, parquet, csv_path]


def test_every_file_format_gives_the_same_examples(tmp_path: Path, store: ArtifactStore) -> None:
    paths = _write_all_formats(tmp_path / "in", RECORDS)
    versions = {import_dataset(store, p, "qa").version for p in paths}
    assert len(versions) == 1  # identical content -> one version, whatever the file format
    [version] = dataset_versions(store, "qa")
    rows = read_examples(store, version).to_pylist()
    assert [(r["prompt"], r["response"]) for r in rows] == [
        (r["question"], r["answer"]) for r in RECORDS
    ]
    assert all(r["content_hash"] == content_hash(r["prompt"], r["response"]) for r in rows)
    assert all(r["example_id"] == r["content_hash"][:16] for r in rows)
    assert {r["source"] for r in rows} == {"qa"} and {r["group"] for r in rows} == {None}


def test_record_layouts_are_detected(tmp_path: Path, local_store: ArtifactStore) -> None:
    cases = {
        "p3": (
            {"prompt": "Summarise: x", "completion": "y<|endoftext|>"},
            ("Summarise: x", "y", "tpl_name"),
        ),
        "dolly": (
            {"id": 7, "instruction": "Why?", "text": "Because.", "decoded": "ignored"},
            ("Why?", "Because.", None),
        ),
        "alpaca": (
            {"instruction": "Translate", "input": "hola", "output": "hello"},
            ("Translate\n\nhola", "hello", None),
        ),
        "alpaca_no_input": (
            {"instruction": "Say hi", "input": "", "output": "hi"},
            ("Say hi", "hi", None),
        ),
        "prompt_response": ({"prompt": "P", "response": "R"}, ("P", "R", None)),
        "chat": (
            {
                "messages": [
                    {"role": "system", "content": "Be nice."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Bye"},
                    {"role": "assistant", "content": "Goodbye."},
                ]
            },
            ("System: Be nice.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye", "Goodbye.", None),
        ),
    }
    for name, (record, (prompt, response, group)) in cases.items():
        path = _jsonl(tmp_path / ("tpl_name.jsonl" if name == "p3" else f"{name}.jsonl"), [record])
        [row] = read_examples(local_store, import_dataset(local_store, path, name)).to_pylist()
        assert (row["prompt"], row["response"], row["group"]) == (prompt, response, group), name
        if name == "dolly":
            assert row["example_id"] == "7"


def test_hh_rlhf_transcripts_give_a_chosen_and_a_rejected_row(
    tmp_path: Path, local_store: ArtifactStore
) -> None:
    dialogue = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: I'm locked out."
    record = {
        "chosen": dialogue + "\n\nAssistant: Call a locksmith.",
        "rejected": dialogue + "\n\nAssistant: Use a bobby pin like this.",
    }
    path = _jsonl(tmp_path / "hh.jsonl.gz", [record], opener=gzip.open)
    rows = read_examples(local_store, import_dataset(local_store, path, "hh")).to_pylist()
    expected_prompt = "Human: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: I'm locked out."
    assert [(r["prompt"], r["response"], r["group"]) for r in rows] == [
        (expected_prompt, "Call a locksmith.", "chosen"),
        (expected_prompt, "Use a bobby pin like this.", "rejected"),
    ]


def test_explicit_field_mapping(tmp_path: Path, local_store: ArtifactStore) -> None:
    records = [
        {"q": "Q1", "ctx": "C1", "a": "A1", "uid": "x-1", "cat": "math"},
        {"q": "Q2", "ctx": "", "a": "A2", "uid": "x-2", "cat": "chat"},
    ]
    path = _jsonl(tmp_path / "custom.jsonl", records)
    with pytest.raises(FormatDetectionError, match="cannot detect the format"):
        import_dataset(local_store, path, "custom")
    mapping = FieldMapping(("q", "ctx"), "a", id_field="uid", group_field="cat")
    rows = read_examples(local_store, import_dataset(local_store, path, "custom", mapping=mapping))
    assert rows.select(["example_id", "prompt", "response", "group"]).to_pylist() == [
        {"example_id": "x-1", "prompt": "Q1\n\nC1", "response": "A1", "group": "math"},
        {"example_id": "x-2", "prompt": "Q2", "response": "A2", "group": "chat"},
    ]
    with pytest.raises(ValueError, match="both"):
        FieldMapping(("q",), None)


GOOD = '{"prompt": "p1", "response": "r1"}\n'


@pytest.mark.parametrize(
    ("content", "line", "field", "message"),
    [
        (GOOD + '{"prompt": "p2", "response": "r2"\n', 2, None, "malformed JSON"),
        (GOOD + '{"prompt": "p2"}\n', 2, "response", "missing field"),
        (
            GOOD + GOOD.replace("p1", "p3") + '{"prompt": "  ", "response": "r"}\n',
            3,
            "prompt",
            "empty",
        ),
        (
            GOOD + '{"prompt": "p2", "response": ["r2"]}\n',
            2,
            "response",
            "expected a string, got list",
        ),
        (GOOD.encode() + b'{"prompt": "caf\xe9", "response": "r"}\n', 2, None, "not valid UTF-8"),
        (GOOD + "[1, 2]\n", 2, None, "expected a JSON object"),
        ("", None, None, "empty file"),
    ],
    ids=[
        "malformed-json",
        "missing-field",
        "empty-field",
        "wrong-type",
        "bad-encoding",
        "not-object",
        "empty-file",
    ],
)
def test_bad_input_names_file_line_and_field(
    tmp_path: Path,
    store: ArtifactStore,
    content: str | bytes,
    line: int | None,
    field: str | None,
    message: str,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    good = _jsonl(tmp_path / "good.jsonl", [{"prompt": "g", "response": "h"}])
    with pytest.raises(DataValidationError, match=message) as failure:
        import_dataset(store, [good, bad], "broken")
    assert (failure.value.file, failure.value.row, failure.value.field) == (str(bad), line, field)
    assert str(bad) in str(failure.value)
    assert store.list("datasets") == []  # nothing written

    version = import_dataset(store, [good, bad], "broken", skip_invalid=True)
    kept = read_examples(store, version).column("prompt").to_pylist()
    assert "g" in kept and len(kept) == len(set(kept))
    [report] = read_skipped(store, version)
    assert report == {
        "file": str(bad),
        "line": line,
        "field": field,
        "reason": report["reason"],
        "records": 0 if message == "empty file" else 1,
    }
    assert message in report["reason"]


def test_bad_json_array_and_csv_name_the_row(tmp_path: Path, local_store: ArtifactStore) -> None:
    array = tmp_path / "a.json"
    array.write_text(
        json.dumps([{"question": "q", "answer": "a"}, {"question": "q2", "answer": 5}])
    )
    with pytest.raises(DataValidationError) as failure:
        import_dataset(local_store, array, "a")
    assert (failure.value.row, failure.value.field) == (2, "answer")
    table = tmp_path / "t.csv"
    table.write_text("question,answer\nq1,a1\nq2,\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as failure:
        import_dataset(local_store, table, "t")
    assert (failure.value.file, failure.value.row, failure.value.field) == (str(table), 3, "answer")
    broken = tmp_path / "b.json"
    broken.write_text('[{"question": "q",\n "answer": }]')
    with pytest.raises(DataValidationError, match="malformed JSON") as failure:
        import_dataset(local_store, broken, "b")
    assert failure.value.row == 2


def test_all_rows_invalid_is_an_error(tmp_path: Path, local_store: ArtifactStore) -> None:
    path = _jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "response": ""}])
    with pytest.raises(DataValidationError, match="no valid rows"):
        import_dataset(local_store, path, "x", skip_invalid=True)
    assert local_store.list("datasets") == []


def test_duplicates_are_dropped_and_reported(tmp_path: Path, local_store: ArtifactStore) -> None:
    records = [{"prompt": f"p{i % 3}", "response": "same"} for i in range(7)]
    path = _jsonl(tmp_path / "dups.jsonl", records)
    version = import_dataset(local_store, path, "dups")
    assert version.rows == 3 and version.duplicates_dropped == 4
    report = version.ref.metadata["duplicates"]
    first_ids = read_examples(local_store, version).column("example_id").to_pylist()
    assert report["examples"][0] == {"file": str(path), "line": 4, "same_as": first_ids[0]}
    kept = import_dataset(local_store, path, "dups", keep_duplicates=True)
    ids = read_examples(local_store, kept).column("example_id").to_pylist()
    assert len(ids) == 7 == len(set(ids))
    assert ids[3] == f"{ids[0]}-2" and ids[6] == f"{ids[0]}-3"


def test_conflicting_given_ids_are_refused(tmp_path: Path, local_store: ArtifactStore) -> None:
    records = [
        {"id": 1, "instruction": "a", "text": "b"},
        {"id": 1, "instruction": "c", "text": "d"},
    ]
    path = _jsonl(tmp_path / "ids.jsonl", records)
    with pytest.raises(DataValidationError, match="already used") as failure:
        import_dataset(local_store, path, "ids")
    assert (failure.value.row, failure.value.field) == (2, "id")


def test_versions(tmp_path: Path, store: ArtifactStore) -> None:
    path = _jsonl(tmp_path / "v.jsonl", RECORDS[:2])
    first = import_dataset(store, path, "qa")
    assert first.created
    again = import_dataset(store, path, "qa")
    assert not again.created and again.version == first.version
    _jsonl(path, RECORDS)  # the data changed
    second = import_dataset(store, path, "qa")
    assert second.created and second.version != first.version
    assert [v.version for v in dataset_versions(store, "qa")] == [first.version, second.version]
    assert latest_version(store, "qa").version == second.version
    assert read_examples(store, first.version).num_rows == 2  # the old version is kept
    assert read_examples(store, find_version(store, "qa", second.version[:8])).num_rows == 3
    other = import_dataset(store, path, "qa_copy")  # same content, other name: its own dataset
    assert other.created and other.version != second.version
    assert list_datasets(store) == ["qa", "qa_copy"]
    with pytest.raises(ArtifactNotFound, match="datasets: \\['qa', 'qa_copy'\\]"):
        latest_version(store, "nope")


def test_a_revert_is_read_back_from_head_records_on_every_backend(
    tmp_path: Path, store: ArtifactStore
) -> None:
    a = _jsonl(tmp_path / "a.jsonl", RECORDS[:2])
    b = _jsonl(tmp_path / "b.jsonl", RECORDS)
    first = import_dataset(store, a, "qa")
    second = import_dataset(store, b, "qa")
    reverted = import_dataset(store, a, "qa")
    assert reverted.became_latest and not reverted.created
    heads = store.root.join("datasets", HEADS_DIR, "qa")
    store.root.fs.pipe_file(f"{heads}/torn.json", b'{"name": "qa", "ver')  # a torn write
    history = dataset_history(store, "qa")
    assert [(e.kind, e.version.version) for e in history] == [
        ("published", first.version),
        ("published", second.version),
        ("re-imported", first.version),
    ]
    assert latest_version(store, "qa").version == first.version


def test_progress_is_reported_per_file(tmp_path: Path, local_store: ArtifactStore) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("b.jsonl", "a.jsonl", "c.jsonl.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        _jsonl(folder / name, [{"prompt": name, "completion": "x<|endoftext|>"}], opener=opener)
    (folder / "README.md").write_text("not data")
    calls = []
    version = import_dataset(local_store, folder, "f", progress=lambda *a: calls.append(a))
    assert calls == [(1, 3, "a.jsonl"), (2, 3, "b.jsonl"), (3, 3, "c.jsonl.gz")]
    groups = read_examples(local_store, version).column("group").to_pylist()
    assert groups == ["a", "b", "c"]  # P3 group: the file name without its suffix


def test_missing_and_unsupported_paths(tmp_path: Path, local_store: ArtifactStore) -> None:
    with pytest.raises(FileNotFoundError):
        import_dataset(local_store, tmp_path / "nope.jsonl", "x")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        import_dataset(local_store, tmp_path / "x.txt", "x")
    with pytest.raises(ValueError, match="dataset name"):
        import_dataset(local_store, tmp_path / "x.txt", "bad name")


def test_sample_dataset_is_a_deterministic_ordered_subset(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path.as_uri())
    dolly = import_dataset(store, SAMPLE_DATASETS["dolly"].paths(), "dolly")
    first = sample_dataset(store, dolly, 50, seed=3)
    again = sample_dataset(store, dolly, 50, seed=3)
    other_seed = sample_dataset(store, dolly, 50, seed=4)
    assert (first.name, first.rows, first.created, again.created) == (
        "dolly-sample50",
        50,
        True,
        False,
    )
    assert again.version == first.version != other_seed.version
    full_ids = read_examples(store, dolly).column("example_id").to_pylist()
    sample_rows = read_examples(store, first).to_pylist()
    positions = [full_ids.index(row["example_id"]) for row in sample_rows]
    assert positions == sorted(positions)  # a subset, in the original order
    original = {r["example_id"]: r for r in read_examples(store, dolly).to_pylist()}
    assert all(original[r["example_id"]] == r for r in sample_rows)
    assert sample_dataset(store, dolly, dolly.rows) is dolly
