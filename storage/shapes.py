"""Record shapes: how one input record becomes example rows (prompt, response, id, group).

Every detection rule is a row of one table, :data:`DETECTION_RULES` (printed by
``airrep data import --help`` through :func:`detection_rules_text`):

- ``shape`` rules are tried in table order; the first whose fields a record has gives its rows.
  A file's shape is the shape of its first record that matches one (records before it are read
  with that shape, so a bad first row is an ordinary, skippable row error); every file of an
  import must have the same shape.
- ``id`` rules apply on top of any shape, to each record that has their field.

A :class:`FieldMapping` replaces the shape rules (``prompt_fields`` + ``response_field``), the
``id`` rule's field (``id_field``) or the group (``group_field``). Fields no rule names are
ignored. Every text value must be a string and not blank; violations are
:class:`~storage.errors.DataValidationError` values naming the file, the 1-based line or row
and the field.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from storage.errors import DataValidationError, FormatDetectionError
from storage.formats import RawRecord, file_stem

P3_END_OF_TEXT = "<|endoftext|>"
HH_ASSISTANT_TURN = "\n\nAssistant:"
CHAT_ROLE_LABELS = {"user": "Human", "human": "Human", "assistant": "Assistant", "system": "System"}
SHAREGPT_HUMAN = ("human", "user")
SHAREGPT_GPT = ("gpt", "assistant", "chatgpt")


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
    """Explicit field names; unset parts come from :data:`DETECTION_RULES`.

    ``prompt_fields``: one or more fields joined by a blank line (empty extra fields are left
    out); ``response_field``: the response. Give both or neither. ``id_field``/``group_field``
    override the ``id`` rule's field and the shape's group.
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


Extract = Callable[[RawRecord], list[ParsedRow]]


@dataclass(frozen=True)
class DetectionRule:
    """One row of the detection table.

    ``decides``: ``"shape"`` (the rows of a record) or ``"id"`` (their example id); ``fields``:
    the fields a record must all have for the rule to apply; ``rule``: the mapping in words;
    ``extract``: the rows of a record (shape rules only).
    """

    decides: str
    name: str
    fields: tuple[str, ...]
    rule: str
    extract: Extract | None = None

    def matches(self, record: RawRecord) -> bool:
        """Whether ``record`` has every field of the rule."""
        return all(name in record.data for name in self.fields)


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


# ---- shapes ----------------------------------------------------------------------------------


def _row(record: RawRecord, prompt: str, response: str, group: str | None = None) -> ParsedRow:
    return ParsedRow(record.file, record.row, prompt, response, group=group)


def _p3(record: RawRecord) -> list[ParsedRow]:
    response = text_field(record, "completion", allow_empty=True).removesuffix(P3_END_OF_TEXT)
    if not response.strip():
        raise DataValidationError(record.file, record.row, "completion", "empty value")
    return [_row(record, text_field(record, "prompt"), response, file_stem(record.file))]


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
        rows.append(_row(record, prompt, response, name))
    return rows


def _turns(record: RawRecord, name: str, role_key: str, text_key: str) -> list[tuple[str, str]]:
    """(lower-case role, text) of each turn of the list field ``name``."""
    turns = record.data.get(name)
    if not isinstance(turns, list) or not turns:
        raise DataValidationError(record.file, record.row, name, "expected a non-empty list")
    result = []
    for i, turn in enumerate(turns):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            raise DataValidationError(record.file, record.row, where, "expected an object")
        role, text = turn.get(role_key), turn.get(text_key)
        if not isinstance(role, str) or not isinstance(text, str):
            raise DataValidationError(
                record.file, record.row, where, f"expected string {role_key!r} and {text_key!r}"
            )
        result.append((role.lower(), text))
    return result


def _chat(record: RawRecord) -> list[ParsedRow]:
    turns = _turns(record, "messages", "role", "content")
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


def _sharegpt(record: RawRecord) -> list[ParsedRow]:
    turns = _turns(record, "conversations", "from", "value")
    first = next((i for i, (role, _) in enumerate(turns) if role in SHAREGPT_HUMAN), -1)
    if first < 0:
        raise DataValidationError(record.file, record.row, "conversations", "no human turn")
    if first + 1 == len(turns) or turns[first + 1][0] not in SHAREGPT_GPT:
        raise DataValidationError(
            record.file, record.row, f"conversations[{first}]", "no gpt turn after the human turn"
        )
    for i in (first, first + 1):
        if not turns[i][1].strip():
            raise DataValidationError(record.file, record.row, f"conversations[{i}]", "empty value")
    return [_row(record, turns[first][1], turns[first + 1][1])]


def _with_input(response_name: str) -> Extract:
    """``instruction`` + blank line + ``input`` (when non-empty) -> ``response_name``."""

    def extract(record: RawRecord) -> list[ParsedRow]:
        prompt = text_field(record, "instruction")
        extra = text_field(record, "input", allow_empty=True) if "input" in record.data else ""
        if extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        return [_row(record, prompt, text_field(record, response_name))]

    return extract


def _pair(prompt_name: str, response_name: str) -> Extract:
    def extract(record: RawRecord) -> list[ParsedRow]:
        return [_row(record, text_field(record, prompt_name), text_field(record, response_name))]

    return extract


DETECTION_RULES: tuple[DetectionRule, ...] = (
    DetectionRule(
        "shape",
        "chat",
        ("messages",),
        "prompt = the turns before the last assistant message as 'Human: ...' paragraphs, "
        "response = that message",
        _chat,
    ),
    DetectionRule(
        "shape",
        "sharegpt",
        ("conversations",),
        "turns {from, value}: prompt = the first human/user turn, response = the gpt/assistant "
        "turn right after it; system turns and later turns are left out (one row per record)",
        _sharegpt,
    ),
    DetectionRule(
        "shape",
        "hh_rlhf",
        ("chosen", "rejected"),
        "two rows, groups chosen/rejected: prompt = the transcript before the last "
        "'Assistant:' turn, response = that turn",
        _hh_rlhf,
    ),
    DetectionRule(
        "shape",
        "p3",
        ("prompt", "completion"),
        "response without a trailing <|endoftext|>; group = the file name",
        _p3,
    ),
    DetectionRule(
        "shape", "prompt_response", ("prompt", "response"), "as named", _pair("prompt", "response")
    ),
    DetectionRule(
        "shape", "dolly", ("instruction", "text"), "as named", _pair("instruction", "text")
    ),
    DetectionRule(
        "shape",
        "alpaca",
        ("instruction", "output"),
        "prompt = instruction + blank line + input (when non-empty)",
        _with_input("output"),
    ),
    DetectionRule(
        "shape",
        "gpteacher",
        ("instruction", "response"),
        "prompt = instruction + blank line + input (when non-empty)",
        _with_input("response"),
    ),
    DetectionRule(
        "shape", "gsm8k", ("question", "answer"), "as named", _pair("question", "answer")
    ),
    DetectionRule(
        "shape",
        "question_response",
        ("question", "response"),
        "as named",
        _pair("question", "response"),
    ),
    DetectionRule(
        "id",
        "id",
        ("id",),
        "example id = the value (string or integer); a record of several rows gives "
        "<id>-<group>; records without it get content-hash ids",
    ),
)
SHAPE_RULES = tuple(r for r in DETECTION_RULES if r.decides == "shape")
[ID_RULE] = [r for r in DETECTION_RULES if r.decides == "id"]


def detection_rules_text() -> str:
    """The detection table as text, one rule per line (for ``--help``)."""
    return "\n".join(
        f"{r.decides:<5} {r.name} ({', '.join(r.fields)}): {r.rule}" for r in DETECTION_RULES
    )


def detect_shape(record: RawRecord) -> DetectionRule | None:
    """The first shape rule of :data:`DETECTION_RULES` whose fields ``record`` has."""
    return next((rule for rule in SHAPE_RULES if rule.matches(record)), None)


def _undetected(record: RawRecord) -> FormatDetectionError:
    known = {rule.name: list(rule.fields) for rule in SHAPE_RULES}
    return FormatDetectionError(
        record.file,
        record.row,
        None,
        f"cannot detect the format from fields {sorted(record.data)}; known formats {known}; "
        "name the fields explicitly (prompt/response field options)",
    )


def _explicit_shape(mapping: FieldMapping) -> DetectionRule:
    prompt_fields, response_field = mapping.prompt_fields, mapping.response_field
    assert response_field is not None

    def extract(record: RawRecord) -> list[ParsedRow]:
        parts = [text_field(record, prompt_fields[0])]
        parts += [text_field(record, f, allow_empty=True) for f in prompt_fields[1:]]
        prompt = "\n\n".join(p for p in parts if p.strip())
        return [_row(record, prompt, text_field(record, response_field))]

    fields = (*prompt_fields, response_field)
    return DetectionRule("shape", "fields", fields, "named by the field options", extract)


def _row_extractor(shape: DetectionRule, mapping: FieldMapping | None) -> Extract:
    """The rows of a record of ``shape``, with the ``id`` rule (or ``mapping.id_field``) and
    ``mapping.group_field`` applied."""
    assert shape.extract is not None
    base = shape.extract
    id_name = mapping.id_field if mapping and mapping.id_field else ID_RULE.fields[0]
    group_name = mapping.group_field if mapping else None

    def extract(record: RawRecord) -> list[ParsedRow]:
        rows = base(record)
        given_id = id_field(record, id_name)
        if group_name is not None:
            group = group_field(record, group_name)
            rows = [replace(r, group=group) for r in rows]
        if given_id is None:
            return rows
        if len(rows) == 1:
            return [replace(rows[0], example_id=given_id)]
        return [replace(r, example_id=f"{given_id}-{r.group}") for r in rows]

    return extract


@dataclass(frozen=True)
class FileRows:
    """The rows of one file: its detected shape (``None`` when it has no record) and its rows and
    problems in file order (problems are ``DataValidationError`` values, never raised)."""

    shape: DetectionRule | None
    items: Iterator[ParsedRow | DataValidationError]


def file_rows(
    items: Iterable[RawRecord | DataValidationError], mapping: FieldMapping | None
) -> FileRows:
    """Detect the shape of one file's records (see the module docstring) and extract its rows.

    ``items``: the file's records and read problems (:func:`storage.formats.read_records`).
    Raises ``FormatDetectionError`` when the file has records but none matches a shape.
    """
    iterator = iter(items)
    buffered: list[RawRecord | DataValidationError] = []
    if mapping is not None and mapping.prompt_fields:
        shape: DetectionRule | None = _explicit_shape(mapping)
    else:
        shape = None
        for item in iterator:
            buffered.append(item)
            if isinstance(item, RawRecord) and (shape := detect_shape(item)) is not None:
                break
        else:
            first = next((i for i in buffered if isinstance(i, RawRecord)), None)
            if first is not None:
                raise _undetected(first)
    extract = _row_extractor(shape, mapping) if shape is not None else None
    return FileRows(shape, _extracted(itertools.chain(buffered, iterator), extract))


def _extracted(
    items: Iterator[RawRecord | DataValidationError], extract: Extract | None
) -> Iterator[ParsedRow | DataValidationError]:
    for item in items:
        if isinstance(item, DataValidationError):
            yield item
            continue
        assert extract is not None  # a file with a record has a shape
        try:
            yield from extract(item)
        except DataValidationError as e:
            yield e
