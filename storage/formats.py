"""Reading instruction data files into raw records (how records become rows: ``storage.shapes``).

Files: JSONL (``.jsonl``, ``.ndjson``), JSON arrays (``.json``), gzip of either (``.gz``), CSV
(``.csv``, ``.csv.gz``), Parquet (``.parquet``); a folder means its data files, sorted by name.
Text is UTF-8, with or without a byte-order mark.

Problems are yielded as :class:`~storage.errors.DataValidationError` values naming the file and
the 1-based line (JSONL, CSV) or row (JSON array, Parquet); each carries ``records``, how many
input records it loses (one for a bad line; a file-level problem counts the file's records where
they can be counted, ``None`` where they cannot).
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from storage.errors import DataValidationError

DATA_SUFFIXES = (
    ".jsonl",
    ".ndjson",
    ".json",
    ".csv",
    ".parquet",
    ".jsonl.gz",
    ".ndjson.gz",
    ".json.gz",
    ".csv.gz",
)


@dataclass(frozen=True)
class RawRecord:
    """One record of an input file: its file, 1-based line/row and parsed fields."""

    file: str
    row: int
    data: Mapping[str, Any]


# ---- files -----------------------------------------------------------------------------------


def input_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The data files named by ``paths`` (folders expanded to their data files, sorted).

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a path that is neither
    a regular file nor a folder (a FIFO, a device), an unsupported suffix or a folder without
    data files.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file or folder: {path}") from None
        if stat.S_ISDIR(mode):
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_data_file(p))
            if not found:
                raise ValueError(f"folder {path} has no data files ({', '.join(DATA_SUFFIXES)})")
            files.extend(found)
        elif stat.S_ISREG(mode):
            if not _is_data_file(path):
                raise ValueError(f"unsupported file type {path.name!r}; allowed: {DATA_SUFFIXES}")
            files.append(path)
        else:
            raise ValueError(
                f"not a regular file or folder: {path} is {_file_kind(mode)}; "
                "give data files or folders"
            )
    if not files:
        raise ValueError("no input files given")
    return files


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _is_data_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.name.endswith(DATA_SUFFIXES)


@functools.lru_cache(maxsize=4096)
def file_stem(file: str) -> str:
    """The file name without its data suffix (``/x/xsum_tldr.jsonl.gz`` -> ``xsum_tldr``)."""
    name = os.path.basename(file)
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    """The records of one file, in order; problems are yielded as ``DataValidationError`` values.

    A bad line (malformed JSON, not UTF-8, not an object) yields an error and reading goes on; a
    file-level problem (unreadable gzip/Parquet, malformed JSON array, a JSON or CSV document
    that is not UTF-8) yields one error, counting the records it loses, and ends the file. A
    file with no record and no problem yields an "empty file" error (0 records lost).
    """
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson")):
        reader = _jsonl_records
    elif name.endswith(".json"):
        reader = _json_array_records
    elif name.endswith(".csv"):
        reader = _csv_records
    elif name.endswith(".parquet"):
        reader = _parquet_records
    else:
        raise ValueError(f"unsupported file type {path.name!r}; allowed: {DATA_SUFFIXES}")
    items, last_row = 0, 0
    try:
        for item in reader(path):
            items += 1
            if isinstance(item, RawRecord):
                last_row = item.row
            yield item
    except (OSError, EOFError, ValueError) as e:  # gzip/Parquet corruption, I/O errors
        yield DataValidationError(
            str(path),
            last_row + 1,
            None,
            f"unreadable file: {e}; the rest of the file is lost (not countable)",
            records=None,
        )
        return
    if items == 0:
        yield DataValidationError(str(path), None, None, "empty file: no records", records=0)


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, file: str, row: int | None) -> str | DataValidationError:
    """``raw`` as UTF-8 without a leading byte-order mark (of the file, or of a line in
    concatenated JSONL); a bad byte gives an error at ``row`` (``None``: the line of the bad byte
    in a whole document)."""
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + bom
        line = raw[:offset].count(b"\n") + 1 if row is None else row
        return DataValidationError(
            file, line, None, f"not valid UTF-8 (byte {raw[offset]:#04x} at offset {offset})"
        )


def _jsonl_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    file = str(path)
    with _open_binary(path) as f:
        for line_no, raw in enumerate(f, 1):
            text = _decode(raw, file, line_no)
            if isinstance(text, DataValidationError):
                yield text
                continue
            if not text.strip():
                continue
            data = _parse_json(text, file, line_no)
            if isinstance(data, DataValidationError):
                yield data
            else:
                yield _object_record(file, line_no, data)


def _parse_json(text: str, file: str, row: int | None) -> Any | DataValidationError:
    """``text`` parsed, or a "malformed JSON" error at ``row`` (``None`` for a whole document:
    the error's line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        line = e.lineno if row is None else row
        return DataValidationError(file, line, None, f"malformed JSON: {e.msg}")


def _object_record(file: str, row: int, data: Any) -> RawRecord | DataValidationError:
    """Row ``row`` of ``file`` as a record when its parsed JSON ``data`` is an object."""
    if isinstance(data, dict):
        return RawRecord(file, row, data)
    return DataValidationError(
        file, row, None, f"expected a JSON object, got {type(data).__name__}"
    )


def _file_lost(error: DataValidationError, records: int) -> DataValidationError:
    """``error`` as a file-level problem that loses the file's ``records`` records."""
    message = f"{error.message}; all {records} record(s) of the file are lost"
    return DataValidationError(error.file, error.row, error.field, message, records)


def _read_document(path: Path) -> tuple[bytes, str | DataValidationError]:
    """A whole file's bytes and its text (or the decoding error)."""
    with _open_binary(path) as f:
        raw = f.read()
    return raw, _decode(raw, str(path), None)


def _json_array_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    file = str(path)
    raw, text = _read_document(path)
    if isinstance(text, DataValidationError):
        yield _file_lost(text, count_array_items(raw.decode("utf-8", errors="replace")))
        return
    if not text.strip():
        return
    data = _parse_json(text, file, None)
    if isinstance(data, DataValidationError):
        yield _file_lost(data, count_array_items(text))
        return
    if not isinstance(data, list):
        yield DataValidationError(
            file, None, None, f"expected a JSON array, got {type(data).__name__}"
        )
        return
    for i, item in enumerate(data, 1):
        yield _object_record(file, i, item)


def count_array_items(text: str) -> int:
    """How many values a JSON array document holds, counted even when it is malformed: the
    values that start at nesting depth 1, outside strings (0 when it is not an array)."""
    depth, count, in_string, escaped, expecting = 0, 0, False, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char.isspace():
            continue
        if depth == 1 and expecting and char not in ",]":
            count, expecting = count + 1, False
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            expecting = depth == 1 and char == "["
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 1:
            expecting = True
    return count


def _csv_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    file = str(path)
    raw, text = _read_document(path)
    if isinstance(text, DataValidationError):
        lines = io.StringIO(raw.decode("utf-8", errors="replace"), newline="")
        yield _file_lost(text, max(sum(1 for _ in csv.reader(lines)) - 1, 0))  # minus the header
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for record in reader:
        yield RawRecord(file, reader.line_num, record)


def _parquet_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    file = str(path)
    for i, record in enumerate(pq.read_table(path).to_pylist(), 1):
        yield RawRecord(file, i, record)
