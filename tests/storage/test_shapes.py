"""Record shapes and file reading: the detection table, the common instruction-data shapes
(GPTeacher, ShareGPT, question/response) on real-shaped files, UTF-8 byte-order marks, ids,
per-file detection, and the records counted by ``skip_invalid``."""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import os
from pathlib import Path

import pytest

from storage.artifacts import ArtifactStore
from storage.dataset_heads import validate_dataset_name
from storage.datasets import import_dataset, read_examples, read_skipped
from storage.errors import DataValidationError, FormatDetectionError
from storage.formats import RawRecord, count_array_items, input_files
from storage.shapes import DETECTION_RULES, SHAPE_RULES, detect_shape, detection_rules_text

# The first records of the public GPTeacher General-Instruct and ShareGPT (Vicuna) dumps, as
# published: GPTeacher is one JSON array, ShareGPT a JSON array of {"id", "conversations"}.
GPTEACHER = [
    {
        "instruction": "Using the given text, identify the main argument and provide a "
        "counter-argument.",
        "input": "Television is harmful to children because it exposes them to violence.",
        "response": "Main argument: television harms children through violent content.\n"
        "Counter-argument: parental guidance and educational programming can make it useful.",
    },
    {
        "instruction": "Name three primary colours.",
        "input": "",
        "response": "Red, blue and yellow.",
    },
]
SHAREGPT = [
    {
        "id": "QWJhYvA_0",
        "conversations": [
            {"from": "human", "value": "Summarize the main ideas of Jeff Walker's Product Launch"},
            {"from": "gpt", "value": "Jeff Walker's Product Launch Formula is a strategy..."},
            {"from": "human", "value": "Summarize the main ideas of Brendon Burchard"},
            {"from": "gpt", "value": "Brendon Burchard's Experts Academy teaches..."},
        ],
    },
    {
        "id": "i6IyJda_0",
        "conversations": [
            {"from": "system", "value": "You are a helpful assistant."},
            {"from": "human", "value": "How to tell if a customer segment is well segmented?"},
            {"from": "gpt", "value": "Check that it is homogeneous, distinct and actionable."},
        ],
    },
]
QUESTION_RESPONSE = [
    {"question": "What does HTTP stand for?", "response": "HyperText Transfer Protocol."},
    {"question": "Boiling point of water at sea level?", "response": "100 °C."},
]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / 'store'}")


def _rows(store: ArtifactStore, path: Path | list[Path], name: str, **kw) -> list[dict]:
    version = import_dataset(store, path, name, **kw)
    return read_examples(store, version).to_pylist()


def test_every_shape_rule_detects_a_record_of_exactly_its_fields() -> None:
    for rule in SHAPE_RULES:
        record = RawRecord("f.jsonl", 1, dict.fromkeys(rule.fields, "x"))
        assert detect_shape(record) is rule, rule.name
    assert detect_shape(RawRecord("f.jsonl", 1, {"id": 1, "text": "x"})) is None
    text = detection_rules_text()
    assert len(text.splitlines()) == len(DETECTION_RULES)
    for rule in DETECTION_RULES:
        assert f"{rule.name} ({', '.join(rule.fields)}): {rule.rule}" in text


def test_gpteacher_sharegpt_and_question_response_import_without_options(
    tmp_path: Path, store: ArtifactStore
) -> None:
    gpteacher = tmp_path / "gpteacher_general.json"
    gpteacher.write_text(json.dumps(GPTEACHER, indent=4), encoding="utf-8")
    rows = _rows(store, gpteacher, "gpteacher")
    assert [(r["prompt"], r["response"]) for r in rows] == [
        (f"{GPTEACHER[0]['instruction']}\n\n{GPTEACHER[0]['input']}", GPTEACHER[0]["response"]),
        (GPTEACHER[1]["instruction"], GPTEACHER[1]["response"]),
    ]
    assert store.get("datasets", _version(store, "gpteacher")).metadata["format"] == "gpteacher"

    sharegpt = tmp_path / "sharegpt_part1.json"
    sharegpt.write_text(json.dumps(SHAREGPT), encoding="utf-8")
    rows = _rows(store, sharegpt, "sharegpt")
    # The first human turn and the gpt turn after it; later turns and system turns left out;
    # the record's `id` is the example id (the id rule).
    assert [(r["example_id"], r["prompt"], r["response"]) for r in rows] == [
        ("QWJhYvA_0", *(t["value"] for t in SHAREGPT[0]["conversations"][:2])),
        ("i6IyJda_0", *(t["value"] for t in SHAREGPT[1]["conversations"][1:3])),
    ]

    qr = tmp_path / "qa.jsonl"
    qr.write_text("".join(json.dumps(r) + "\n" for r in QUESTION_RESPONSE), encoding="utf-8")
    rows = _rows(store, qr, "qr")
    assert [(r["prompt"], r["response"]) for r in rows] == [
        (r["question"], r["response"]) for r in QUESTION_RESPONSE
    ]


@pytest.mark.parametrize(
    ("turns", "field", "message"),
    [
        ([{"from": "gpt", "value": "hi"}], "conversations", "no human turn"),
        ([{"from": "human", "value": "hi"}], "conversations[0]", "no gpt turn after"),
        (
            [{"from": "human", "value": "hi"}, {"from": "human", "value": "again"}],
            "conversations[0]",
            "no gpt turn after",
        ),
        (
            [{"from": "human", "value": "hi"}, {"from": "gpt", "value": " "}],
            "conversations[1]",
            "empty",
        ),
        ([{"from": "human"}], "conversations[0]", "expected string 'from' and 'value'"),
        ([], "conversations", "non-empty list"),
    ],
)
def test_bad_sharegpt_records_name_the_turn(
    tmp_path: Path, store: ArtifactStore, turns: list, field: str, message: str
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"conversations": turns}) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=message) as failure:
        import_dataset(store, path, "chat")
    assert (failure.value.row, failure.value.field) == (1, field)


def _with_bom(path: Path, text: str) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(codecs.BOM_UTF8 + text.encode("utf-8"))
    return path


def test_utf8_byte_order_marks_are_read_in_json_jsonl_and_csv(
    tmp_path: Path, store: ArtifactStore
) -> None:
    records = [{"question": "Ünïcode?", "answer": "yes"}, {"question": "2+2?", "answer": "4"}]
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    buffer = tmp_path / "rows.csv.txt"
    with open(buffer, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(records)
    texts = {
        "a.jsonl": jsonl,
        "a.jsonl.gz": jsonl,
        "a.json": json.dumps(records, ensure_ascii=False),
        "a.csv": buffer.read_text(encoding="utf-8"),
        "a.csv.gz": buffer.read_text(encoding="utf-8"),
    }
    plain = tmp_path / "plain.jsonl"
    plain.write_text(jsonl, encoding="utf-8")
    reference = import_dataset(store, plain, "qa").version
    for name, text in texts.items():
        path = _with_bom(tmp_path / name, text)
        assert import_dataset(store, path, "qa").version == reference, name


def test_an_id_field_is_the_example_id_without_options(
    tmp_path: Path, store: ArtifactStore
) -> None:
    path = tmp_path / "with_ids.jsonl"
    records = [{"id": "a-1", "prompt": "p1", "response": "r1"}, {"prompt": "p2", "response": "r2"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    ids = [r["example_id"] for r in _rows(store, path, "ids")]
    assert ids[0] == "a-1" and len(ids[1]) == 16  # a record without one: content-hash id
    hh = tmp_path / "hh.jsonl"
    turn = "\n\nHuman: hi\n\nAssistant: "
    hh.write_text(json.dumps({"id": 9, "chosen": turn + "hello", "rejected": turn + "go away"}))
    assert [r["example_id"] for r in _rows(store, hh, "hh")] == ["9-chosen", "9-rejected"]


def test_a_bad_first_row_is_a_skippable_row_error(tmp_path: Path, store: ArtifactStore) -> None:
    path = tmp_path / "first_bad.jsonl"
    path.write_text(
        '{"prompt": "no response"}\n{"prompt": "p", "response": "r"}\n', encoding="utf-8"
    )
    with pytest.raises(DataValidationError, match="missing field") as failure:
        import_dataset(store, path, "fb")
    assert (failure.value.row, failure.value.field) == (1, "response")
    version = import_dataset(store, path, "fb", skip_invalid=True)
    assert (version.rows, version.skipped) == (1, 1)
    nothing = tmp_path / "unknown.jsonl"
    nothing.write_text('{"a": 1}\n{"b": 2}\n', encoding="utf-8")
    with pytest.raises(FormatDetectionError, match=r"row 1: cannot detect the format"):
        import_dataset(store, nothing, "u", skip_invalid=True)


def test_a_mixed_folder_names_the_files_and_their_shapes(
    tmp_path: Path, store: ArtifactStore
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    (folder / "b.jsonl").write_text('{"prompt": "p", "response": "r"}\n', encoding="utf-8")
    with pytest.raises(FormatDetectionError) as failure:
        import_dataset(store, folder, "mixed", skip_invalid=True)
    assert str(failure.value) == (
        f"{folder / 'b.jsonl'}: mixed formats: {folder / 'a.jsonl'} is gsm8k (question, answer), "
        f"{folder / 'b.jsonl'} is prompt_response (prompt, response); "
        "import them as separate datasets"
    )
    assert store.list("datasets") == []


def _malformed_array(path: Path, n: int) -> Path:
    items = [json.dumps({"prompt": f"q{i}", "response": "r, [x] {y}"}) for i in range(n)]
    items[3] = items[3].replace('"response":', '"response"')  # one broken record
    path.write_text("[\n" + ",\n".join(items) + "\n]\n", encoding="utf-8")
    return path


def test_skip_invalid_counts_every_record_a_malformed_file_loses(
    tmp_path: Path, store: ArtifactStore
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    good = folder / "a.jsonl"
    good.write_text(
        "".join(json.dumps({"prompt": f"p{i}", "response": "r"}) + "\n" for i in range(5))
    )
    bad = _malformed_array(folder / "b.json", 10)
    version = import_dataset(store, folder, "f", skip_invalid=True)
    assert (version.rows, version.skipped) == (5, 10)
    [problem] = read_skipped(store, version)
    assert (problem["file"], problem["line"], problem["records"]) == (str(bad), 5, 10)
    assert "malformed JSON" in problem["reason"] and "all 10 record(s)" in problem["reason"]
    assert version.skip_report == [
        {
            "file": str(bad),
            "problems": 1,
            "records": 10,
            "uncountable": False,
            "first": f"row 5: {problem['reason']}",
        }
    ]
    with pytest.raises(DataValidationError) as failure:  # every row invalid: the real cause
        import_dataset(store, bad, "b", skip_invalid=True)
    assert "malformed JSON" in str(failure.value)
    assert "no valid rows in the input: 10 record(s) lost in 1 problem(s)" in str(failure.value)


def test_file_level_losses_are_counted(tmp_path: Path) -> None:
    for text in ("[]", '[1, {}, [2, 3], "a,]\\"", null]', json.dumps([{"a": [1, {"b": "}"}]}] * 7)):
        assert count_array_items(text) == len(json.loads(text)), text
    assert count_array_items('[{"a": 1}, {"a": }, {"a": 3}') == 3  # malformed and truncated
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"prompt,response\np1,r1\np2,caf\xe9\np3,r3\n")
    store = ArtifactStore(f"file://{tmp_path / 'store'}")
    with pytest.raises(DataValidationError, match="all 3 record") as failure:
        import_dataset(store, bad_csv, "c", skip_invalid=True)
    assert failure.value.row == 3
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "p", "response": "r"}\n')
    version = import_dataset(store, [good, empty], "e", skip_invalid=True)
    assert version.skipped == 0 and version.skip_report[0]["first"] == "empty file: no records"
    lines = "".join(
        json.dumps({"prompt": f"p{i}", "response": "r" * 50}) + "\n" for i in range(2000)
    )
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(lines.encode())[:3000])  # a download cut short
    version = import_dataset(store, truncated, "cut", skip_invalid=True)
    [entry] = version.skip_report
    assert entry["uncountable"] and "unreadable file" in entry["first"]
    assert version.skipped == entry["records"] == 0 and 0 < version.rows < 2000


@pytest.mark.parametrize("name", ["a", "rel_1", "A-b_C", "9" * 64])
def test_valid_dataset_names(name: str) -> None:
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "rel_データ", "rel_²", "r" * 65, "-rel", "_rel", "a b", "a.b"]
)
def test_invalid_dataset_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"invalid dataset name.*1-64 ASCII letters"):
        validate_dataset_name(name)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_devices_are_not_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(
        ValueError, match=r"not a regular file or folder: .*pipe.jsonl is a named pipe"
    ):
        input_files([fifo])
    with pytest.raises(ValueError, match="/dev/null is a character device"):
        input_files(["/dev/null"])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        input_files([tmp_path / "missing.jsonl"])


def _version(store: ArtifactStore, name: str) -> str:
    return next(r.key for r in store.list("datasets") if r.config["name"] == name)
