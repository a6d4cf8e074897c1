"""Reading instruction data files and mapping their fields to (prompt, response, id, group).

Files: JSONL (``.jsonl``, ``.ndjson``), JSON arrays (``.json``), gzip of either (``.gz``), CSV
(``.csv``, ``.csv.gz``), Parquet (``.parquet``); a folder means its data files, sorted by name.

Record formats, auto-detected from the first record's fields unless a :class:`FieldMapping`
names the fields:

=================  =========================  ==============================================
format             fields                     mapping
=================  =========================  ==============================================
``chat``           ``messages``               prompt = turns before the last assistant
                                              message ("Human: ...\\n\\nAssistant: ..."),
                                              response = the last assistant message
``hh_rlhf``        ``chosen``, ``rejected``   two rows per record, groups ``chosen`` /
                                              ``rejected``: prompt = transcript before the last
                                              ``\\n\\nAssistant:``, response = that last turn
``p3``             ``prompt``, ``completion``  response without the trailing ``<|endoftext|>``;
                                              group = file name without ``.jsonl``
``prompt_response``  ``prompt``, ``response``
``dolly``          ``instruction``, ``text``  id = ``id`` when present; ``decoded`` ignored
``alpaca``         ``instruction``, ``output``  prompt = instruction + "\\n\\n" + ``input``
                                              when ``input`` is non-empty
``gsm8k``          ``question``, ``answer``
=================  =========================  ==============================================

Every text value must be a string and not blank; violations raise (or, when skipping, report)
:class:`~storage.errors.DataValidationError` naming the file, the 1-based line (JSONL, CSV) or
row (JSON array, Parquet), and the field.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from storage.errors import DataValidationError, FormatDetectionError

P3_END_OF_TEXT = "<|endoftext|>"
HH_ASSISTANT_TURN = "\n\nAssistant:"
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
CHAT_ROLE_LABELS = {"user": "Human", "human": "Human", "assistant": "Assistant", "system": "System"}


@dataclass(frozen=True)
class RawRecord:
    """One record of an input file: its file, 1-based line/row and parsed fields."""

    file: str
    row: int
    data: Mapping[str, Any]


@dataclass(frozen=True)
class ParsedRow:
    """One example read from a record (``example_id`` is the given id, ``None`` if there is none)."""

    file: str
    row: int
    prompt: str
    response: str
    example_id: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class FieldMapping:
    """Explicit field names; unset parts come from the auto-detected format.

    ``prompt_fields``: one or more fields joined by a blank line (empty extra fields are left
    out); ``response_field``: the response. Give both or neither. ``id_field``/``group_field``
    override the format's id and group.
    """

    prompt_fields: tuple[str, ...] = ()
    response_field: str | None = None
    id_field: str | None = None
    group_field: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.prompt_fields, str):
            object.__setattr__(self, "prompt_fields", (self.prompt_fields,))
        if bool(self.prompt_fields) != bool(self.response_field):
            raise ValueError(
                "give both prompt_fields and response_field, or neither "
                f"(got prompt_fields={self.prompt_fields!r}, response_field={self.response_field!r})"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for manifests)."""
        return {
            "prompt_fields": list(self.prompt_fields),
            "response_field": self.response_field,
            "id_field": self.id_field,
            "group_field": self.group_field,
        }


@dataclass(frozen=True)
class RecordFormat:
    """A record layout: the fields that identify it and its row extractor."""

    name: str
    fields: tuple[str, ...]
    extract: Callable[[RawRecord], list[ParsedRow]] = field(repr=False)


# ---- files -----------------------------------------------------------------------------------


def input_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The data files named by ``paths`` (folders expanded to their data files, sorted).

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for an unsupported suffix or
    a folder without data files.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_data_file(p))
            if not found:
                raise ValueError(f"folder {path} has no data files ({', '.join(DATA_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            if not _is_data_file(path):
                raise ValueError(f"unsupported file type {path.name!r}; allowed: {DATA_SUFFIXES}")
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    if not files:
        raise ValueError("no input files given")
    return files


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
    file-level problem (empty file, unreadable gzip/Parquet, malformed JSON array) yields one
    error and ends the file.
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
    count, last_row = 0, 0
    try:
        for item in reader(path):
            if isinstance(item, RawRecord):
                count += 1
                last_row = item.row
            yield item
    except (OSError, EOFError, ValueError) as e:  # gzip/Parquet corruption, I/O errors
        yield DataValidationError(str(path), last_row + 1, None, f"unreadable file: {e}")
        return
    if count == 0:
        yield DataValidationError(str(path), None, None, "empty file: no records")


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, file: str, row: int) -> str | DataValidationError:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return DataValidationError(
            file, row, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})"
        )


def _decode_document(raw: bytes, file: str) -> str | DataValidationError:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return DataValidationError(
            file, line, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})"
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
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                yield DataValidationError(file, line_no, None, f"malformed JSON: {e.msg}")
                continue
            if not isinstance(data, dict):
                yield DataValidationError(
                    file, line_no, None, f"expected a JSON object, got {type(data).__name__}"
                )
                continue
            yield RawRecord(file, line_no, data)


def _json_array_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    file = str(path)
    with _open_binary(path) as f:
        raw = f.read()
    text = _decode_document(raw, file)
    if isinstance(text, DataValidationError):
        yield text
        return
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        yield DataValidationError(file, e.lineno, None, f"malformed JSON: {e.msg}")
        return
    if not isinstance(data, list):
        yield DataValidationError(
            file, None, None, f"expected a JSON array, got {type(data).__name__}"
        )
        return
    for i, item in enumerate(data, 1):
        if isinstance(item, dict):
            yield RawRecord(file, i, item)
        else:
            yield DataValidationError(
                file, i, None, f"expected a JSON object, got {type(item).__name__}"
            )


def _csv_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    file = str(path)
    with _open_binary(path) as f:
        raw = f.read()
    text = _decode_document(raw, file)
    if isinstance(text, DataValidationError):
        yield text
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for record in reader:
        yield RawRecord(file, reader.line_num, record)


def _parquet_records(path: Path) -> Iterator[RawRecord | DataValidationError]:
    file = str(path)
    for i, record in enumerate(pq.read_table(path).to_pylist(), 1):
        yield RawRecord(file, i, record)


# ---- field values ----------------------------------------------------------------------------


def text_field(record: RawRecord, name: str, *, allow_empty: bool = False) -> str:
    """The string value of field ``name``; ``DataValidationError`` if missing, not a string or blank."""
    if name not in record.data or record.data[name] is None:
        raise DataValidationError(record.file, record.row, name, "missing field")
    value = record.data[name]
    if not isinstance(value, str):
        raise DataValidationError(
            record.file, record.row, name, f"expected a string, got {type(value).__name__}"
        )
    if not allow_empty and not value.strip():
        raise DataValidationError(record.file, record.row, name, "empty value")
    return value


def id_field(record: RawRecord, name: str) -> str | None:
    """A given id (string or integer) as a string; ``None`` when the record has none."""
    value = record.data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataValidationError(
            record.file,
            record.row,
            name,
            f"expected a string or integer id, got {type(value).__name__}",
        )
    value = str(value)
    if not value.strip():
        raise DataValidationError(record.file, record.row, name, "empty id")
    return value


def group_field(record: RawRecord, name: str) -> str | None:
    """An optional group label (string or integer) as a string."""
    value = record.data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataValidationError(
            record.file, record.row, name, f"expected a string group, got {type(value).__name__}"
        )
    return str(value)


# ---- formats ---------------------------------------------------------------------------------


def _row(record: RawRecord, prompt: str, response: str, **kw: str | None) -> ParsedRow:
    return ParsedRow(record.file, record.row, prompt, response, **kw)


def _p3(record: RawRecord) -> list[ParsedRow]:
    response = text_field(record, "completion", allow_empty=True).removesuffix(P3_END_OF_TEXT)
    if not response.strip():
        raise DataValidationError(record.file, record.row, "completion", "empty value")
    group = file_stem(record.file)
    return [_row(record, text_field(record, "prompt"), response, group=group)]


def split_transcript(record: RawRecord, name: str) -> tuple[str, str]:
    """(prompt, response) of an HH-RLHF transcript: split at the last ``\\n\\nAssistant:``."""
    transcript = text_field(record, name)
    cut = transcript.rfind(HH_ASSISTANT_TURN)
    if cut < 0:
        raise DataValidationError(record.file, record.row, name, "no '\\n\\nAssistant:' turn")
    prompt, response = transcript[:cut].strip(), transcript[cut + len(HH_ASSISTANT_TURN) :].strip()
    if not prompt:
        raise DataValidationError(
            record.file, record.row, name, "empty prompt before the last turn"
        )
    if not response:
        raise DataValidationError(record.file, record.row, name, "empty last assistant turn")
    return prompt, response


def _hh_rlhf(record: RawRecord) -> list[ParsedRow]:
    rows = []
    for name in ("chosen", "rejected"):
        prompt, response = split_transcript(record, name)
        rows.append(_row(record, prompt, response, group=name))
    return rows


def _chat(record: RawRecord) -> list[ParsedRow]:
    messages = record.data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataValidationError(record.file, record.row, "messages", "expected a non-empty list")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DataValidationError(record.file, record.row, where, "expected an object")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise DataValidationError(
                record.file, record.row, where, "expected string 'role' and 'content'"
            )
        turns.append((role.lower(), content))
    last = max((i for i, (role, _) in enumerate(turns) if role == "assistant"), default=-1)
    if last < 0:
        raise DataValidationError(record.file, record.row, "messages", "no assistant message")
    prompt = "\n\n".join(
        f"{CHAT_ROLE_LABELS.get(role, role.capitalize())}: {content}"
        for role, content in turns[:last]
    )
    response = turns[last][1]
    if not prompt.strip():
        raise DataValidationError(record.file, record.row, "messages", "no turn before the answer")
    if not response.strip():
        raise DataValidationError(record.file, record.row, f"messages[{last}]", "empty value")
    return [_row(record, prompt, response)]


def _dolly(record: RawRecord) -> list[ParsedRow]:
    return [
        _row(
            record,
            text_field(record, "instruction"),
            text_field(record, "text"),
            example_id=id_field(record, "id"),
        )
    ]


def _alpaca(record: RawRecord) -> list[ParsedRow]:
    prompt = text_field(record, "instruction")
    extra = text_field(record, "input", allow_empty=True) if "input" in record.data else ""
    if extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    return [_row(record, prompt, text_field(record, "output"))]


def _pair(prompt_name: str, response_name: str) -> Callable[[RawRecord], list[ParsedRow]]:
    def extract(record: RawRecord) -> list[ParsedRow]:
        return [_row(record, text_field(record, prompt_name), text_field(record, response_name))]

    return extract


FORMATS: tuple[RecordFormat, ...] = (
    RecordFormat("chat", ("messages",), _chat),
    RecordFormat("hh_rlhf", ("chosen", "rejected"), _hh_rlhf),
    RecordFormat("p3", ("prompt", "completion"), _p3),
    RecordFormat("prompt_response", ("prompt", "response"), _pair("prompt", "response")),
    RecordFormat("dolly", ("instruction", "text"), _dolly),
    RecordFormat("alpaca", ("instruction", "output"), _alpaca),
    RecordFormat("gsm8k", ("question", "answer"), _pair("question", "answer")),
)


def detect_format(record: RawRecord) -> RecordFormat:
    """The first format of :data:`FORMATS` whose fields ``record`` has."""
    for fmt in FORMATS:
        if all(name in record.data for name in fmt.fields):
            return fmt
    known = {fmt.name: list(fmt.fields) for fmt in FORMATS}
    raise FormatDetectionError(
        record.file,
        record.row,
        None,
        f"cannot detect the format from fields {sorted(record.data)}; known formats {known}; "
        "name the fields explicitly (prompt/response field options)",
    )


def make_extractor(
    first: RawRecord, mapping: FieldMapping | None
) -> tuple[str, Callable[[RawRecord], list[ParsedRow]]]:
    """(format name, row extractor) for a dataset whose first record is ``first``."""
    mapping = mapping or FieldMapping()
    if mapping.prompt_fields:
        name, base = "fields", _explicit_fields(mapping.prompt_fields, mapping.response_field)
    else:
        fmt = detect_format(first)
        name, base = fmt.name, fmt.extract
    if mapping.id_field is None and mapping.group_field is None:
        return name, base

    def extract(record: RawRecord) -> list[ParsedRow]:
        rows = base(record)
        given_id = id_field(record, mapping.id_field) if mapping.id_field else None
        group = group_field(record, mapping.group_field) if mapping.group_field else None
        if given_id is not None and len(rows) > 1:
            raise DataValidationError(
                record.file, record.row, mapping.id_field, f"one id for {len(rows)} rows ({name})"
            )
        return [
            ParsedRow(
                r.file,
                r.row,
                r.prompt,
                r.response,
                given_id if mapping.id_field else r.example_id,
                group if mapping.group_field else r.group,
            )
            for r in rows
        ]

    return name, extract


def _explicit_fields(
    prompt_fields: Sequence[str], response_field: str | None
) -> Callable[[RawRecord], list[ParsedRow]]:
    assert response_field is not None

    def extract(record: RawRecord) -> list[ParsedRow]:
        parts = [text_field(record, prompt_fields[0])]
        parts += [text_field(record, f, allow_empty=True) for f in prompt_fields[1:]]
        prompt = "\n\n".join(p for p in parts if p.strip())
        return [_row(record, prompt, text_field(record, response_field))]

    return extract
