"""Versioned datasets: importing instruction data into an examples table artifact.

A dataset version is an artifact of stage ``datasets`` whose key is the **version**: the hex
sha256 of the examples table's content (every row's example_id, prompt, response, source, group,
content_hash, in order). Importing identical content again publishes nothing (``created=False``);
changed content publishes a new version and keeps the old ones.

Names, versions, the latest version and the history are in :mod:`storage.dataset_heads`
(names are checked before anything is read or written; importing stored content that is not the
latest makes it the latest again, ``became_latest=True``).

Artifact files: ``examples.parquet`` (schema ``examples``) and, when problems were skipped,
``skipped.jsonl`` (one ``{"file", "line", "field", "reason", "records"}`` per problem, ``records``
being the input records it lost). The manifest's metadata has the row count, the detected
format, the input files, the count of records lost (``skipped``), the per-file skip report
(``skip_report``, see :func:`skip_report`) and the duplicate report.

Example ids: the data's own ids where it has them (Dolly's ``id``; or ``id_field``), else the first
16 hex digits of the content hash, suffixed ``-2``, ``-3``, ... in file order if taken.

Duplicates: rows whose (prompt, response) equals an earlier row's are **dropped** (the first
occurrence is kept) and reported (count and a few examples), because identical content would
appear in both a training pool and its held-out targets and has one content hash in the
embedding store. ``keep_duplicates=True`` keeps them (with distinct ids).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.dataset_heads import (
    DATASET_STAGE,
    DatasetVersion,
    latest_version,
    validate_dataset_name,
    write_head_record,
)
from storage.errors import DataValidationError, FormatDetectionError
from storage.formats import input_files, read_records
from storage.schemas import table_schema
from storage.shapes import DetectionRule, FieldMapping, ParsedRow, file_rows
from storage.tables import read_table, write_table

EXAMPLES_FILE = "examples.parquet"
SKIPPED_FILE = "skipped.jsonl"
DUPLICATE_EXAMPLES_REPORTED = 5

ProgressCallback = Callable[[int, int, str], None]
"""``progress(files_done, files_total, current_file_name)``, called after each input file."""


def content_hash(prompt: str, response: str) -> str:
    """Hex sha256 of ``len(prompt bytes) "\\n" prompt response`` in UTF-8 (unambiguous for any texts)."""
    prompt_bytes = prompt.encode()
    return hashlib.sha256(
        b"%d\n%b%b" % (len(prompt_bytes), prompt_bytes, response.encode())
    ).hexdigest()


def import_dataset(
    store: ArtifactStore,
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    name: str,
    *,
    mapping: FieldMapping | None = None,
    skip_invalid: bool = False,
    keep_duplicates: bool = False,
    progress: ProgressCallback | None = None,
) -> DatasetVersion:
    """Import the files/folders ``paths`` as dataset ``name`` (see the module docstring).

    Raises ``DataValidationError`` (file, line, field) on the first bad record, publishing nothing;
    with ``skip_invalid`` bad records are left out and listed in ``skipped.jsonl``. A dataset with
    no valid row is an error either way (naming the first problem and the records lost). Files of
    different shapes raise ``FormatDetectionError`` naming both files and their shapes. The
    imported version becomes the latest (a head record when it was stored already and was not the
    latest).
    """
    validate_dataset_name(name)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files = input_files(paths)
    parsed, skipped, format_name = _parse_files(files, mapping, skip_invalid, progress)
    id_name = mapping.id_field if mapping and mapping.id_field else "id"
    rows, duplicates = _assign_ids(parsed, skipped, id_name, skip_invalid, keep_duplicates)
    if not rows:
        raise _no_valid_rows(skipped)
    table = _examples_table(rows, name)
    metadata = {
        "format": format_name,
        "mapping": (mapping or FieldMapping()).as_dict(),
        "inputs": [{"path": str(f.resolve()), "size": f.stat().st_size} for f in files],
        "skip_invalid": skip_invalid,
        "duplicates": duplicates,
    }
    imported = publish_examples(store, table, name, metadata, skipped=skipped)
    if imported.created or latest_version(store, name).version == imported.version:
        return imported
    write_head_record(store, name, imported.version)
    return dataclasses.replace(imported, became_latest=True)


def publish_examples(
    store: ArtifactStore,
    table: pa.Table,
    name: str,
    metadata: Mapping[str, Any],
    *,
    skipped: Sequence[DataValidationError] = (),
) -> DatasetVersion:
    """Publish an examples table (schema ``examples``) as a version of dataset ``name``.

    The version is the table's content hash: identical content publishes nothing new
    (``created=False``). ``metadata`` goes into the manifest beside ``name``, ``rows`` and
    ``skipped``; ``skipped`` problems are listed in ``skipped.jsonl`` and summarised by file in
    ``skip_report``. Raises ``ValueError`` for an invalid name before writing anything.
    """
    validate_dataset_name(name)
    version = table_version(table)
    import_id = uuid.uuid4().hex
    manifest_metadata = {
        "name": name,
        "rows": table.num_rows,
        "duplicates": {"dropped": 0, "examples": []},
        **metadata,
        "skipped": sum(e.records or 0 for e in skipped),
        "skip_report": skip_report(skipped),
        "import_id": import_id,
    }

    def writer(directory: Path) -> dict[str, Any]:
        write_table(directory / EXAMPLES_FILE, table, "examples")
        if skipped:
            with open(directory / SKIPPED_FILE, "w", encoding="utf-8") as f:
                for error in skipped:
                    f.write(json.dumps(error.as_record(), ensure_ascii=False) + "\n")
        return manifest_metadata

    ref = store.build(
        DATASET_STAGE,
        version,
        config={
            "name": name,
            "schema": "examples",
            "schema_version": table_schema("examples").version,
        },
        inputs=[],
        writer=writer,
    )
    return DatasetVersion(name, version, ref, created=ref.metadata.get("import_id") == import_id)


def _parse_files(
    files: list[Path],
    mapping: FieldMapping | None,
    skip_invalid: bool,
    progress: ProgressCallback | None,
) -> tuple[list[ParsedRow], list[DataValidationError], str | None]:
    """(rows, skipped problems, shape name) of ``files``, which must all have one shape."""
    parsed: list[ParsedRow] = []
    skipped: list[DataValidationError] = []
    first: tuple[Path, DetectionRule] | None = None  # the first file with a shape, and its shape
    for done, path in enumerate(files, 1):
        found = file_rows(read_records(path), mapping)
        if found.shape is not None:
            first = first or (path, found.shape)
            if found.shape.name != first[1].name:
                raise _mixed_shapes(first, (path, found.shape))
        for item in found.items:
            if isinstance(item, DataValidationError):
                if not skip_invalid:
                    raise item
                skipped.append(item)
            else:
                parsed.append(item)
        if progress is not None:
            progress(done, len(files), path.name)
    return parsed, skipped, first[1].name if first else None


def _mixed_shapes(
    first: tuple[Path, DetectionRule], other: tuple[Path, DetectionRule]
) -> FormatDetectionError:
    def described(file_shape: tuple[Path, DetectionRule]) -> str:
        path, shape = file_shape
        return f"{path} is {shape.name} ({', '.join(shape.fields)})"

    return FormatDetectionError(
        str(other[0]),
        None,
        None,
        f"mixed formats: {described(first)}, {described(other)}; import them as separate datasets",
    )


def skip_report(skipped: Sequence[DataValidationError]) -> list[dict[str, Any]]:
    """Skipped problems by file, in file order: ``{"file", "problems", "records", "uncountable",
    "first"}`` (``records``: input records lost, counted; ``uncountable``: whether a file-level
    problem lost a rest that cannot be counted; ``first``: the first problem, one line)."""
    by_file: dict[str, dict[str, Any]] = {}
    for error in skipped:
        where = f"row {error.row}: " if error.row is not None else ""
        if error.field is not None:
            where += f"field {error.field!r}: "
        entry = by_file.setdefault(
            error.file,
            {
                "file": error.file,
                "problems": 0,
                "records": 0,
                "uncountable": False,
                "first": f"{where}{error.message}",
            },
        )
        entry["problems"] += 1
        entry["records"] += error.records or 0
        entry["uncountable"] = entry["uncountable"] or error.records is None
    return list(by_file.values())


def _no_valid_rows(skipped: Sequence[DataValidationError]) -> DataValidationError:
    """The error of an import without a valid row: its first problem, with the totals."""
    first = skipped[0]
    lost = sum(e.records or 0 for e in skipped)
    return DataValidationError(
        first.file,
        first.row,
        first.field,
        f"{first.message} (no valid rows in the input: {lost:,} record(s) lost in "
        f"{len(skipped):,} problem(s); this is the first)",
    )


def _assign_ids(
    parsed: list[ParsedRow],
    skipped: list[DataValidationError],
    id_name: str,
    skip_invalid: bool,
    keep_duplicates: bool,
) -> tuple[list[tuple[str, ParsedRow, str]], dict[str, Any]]:
    """(example_id, row, content_hash) per kept row, and the duplicate report."""
    rows: list[tuple[str, ParsedRow, str]] = []
    first_of_hash: dict[str, str] = {}
    content_of_id: dict[str, str] = {}
    dropped: list[dict[str, Any]] = []
    for row in parsed:
        digest = content_hash(row.prompt, row.response)
        if digest in first_of_hash and not keep_duplicates:
            dropped.append({"file": row.file, "line": row.row, "same_as": first_of_hash[digest]})
            continue
        if row.example_id is not None:
            example_id = row.example_id
            if example_id in content_of_id:
                error = DataValidationError(
                    row.file,
                    row.row,
                    id_name,
                    f"id {example_id!r} already used by other content "
                    "(example ids must be unique; --id-field names another id field)",
                )
                if not skip_invalid:
                    raise error
                skipped.append(error)
                continue
        else:
            example_id, n = digest[:16], 1
            while example_id in content_of_id:
                n += 1
                example_id = f"{digest[:16]}-{n}"
        content_of_id[example_id] = digest
        first_of_hash.setdefault(digest, example_id)
        rows.append((example_id, row, digest))
    report = {
        "dropped": len(dropped),
        "kept": keep_duplicates,
        "examples": dropped[:DUPLICATE_EXAMPLES_REPORTED],
    }
    return rows, report


def _examples_table(rows: list[tuple[str, ParsedRow, str]], name: str) -> pa.Table:
    return pa.table(
        {
            "example_id": [r[0] for r in rows],
            "prompt": [r[1].prompt for r in rows],
            "response": [r[1].response for r in rows],
            "source": [name] * len(rows),
            "group": pa.array([r[1].group for r in rows], type=pa.string()),
            "content_hash": [r[2] for r in rows],
        }
    )


def table_version(table: pa.Table) -> str:
    """The dataset version: hex sha256 over an examples table's rows, in order.

    Each row contributes its example_id, source, group and content_hash (which covers prompt and
    response), each length-prefixed, so any change of content, ids, order or labels changes it.
    """
    digest = hashlib.sha256()
    names = ("example_id", "source", "group", "content_hash")
    for values in zip(*(table.column(n).to_pylist() for n in names), strict=True):
        for value in values:
            data = b"\x00" if value is None else value.encode()
            digest.update(b"%d:%b" % (-1 if value is None else len(data), data))
    return digest.hexdigest()


# ---- reading ---------------------------------------------------------------------------------


def read_examples(store: ArtifactStore, version: DatasetVersion | ArtifactRef | str) -> pa.Table:
    """The examples table of a dataset version (a ``DatasetVersion``, its ref, or its full hash)."""
    if isinstance(version, DatasetVersion):
        ref = version.ref
    elif isinstance(version, ArtifactRef):
        ref = version
    else:
        ref = store.get(DATASET_STAGE, version)
    return read_table(store, ref, EXAMPLES_FILE, "examples")


def read_skipped(store: ArtifactStore, version: DatasetVersion) -> list[dict[str, Any]]:
    """The skipped-row report of a version (empty when nothing was skipped)."""
    if SKIPPED_FILE not in version.ref.files:
        return []
    text = store.read_bytes(version.ref, SKIPPED_FILE).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def example_records(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of an examples table as dicts (``example_id``, ``prompt``, ``response``, ...)."""
    return table.to_pylist()


def sample_dataset(
    store: ArtifactStore, version: DatasetVersion, n_rows: int, *, seed: int = 0
) -> DatasetVersion:
    """A dataset of ``n_rows`` rows drawn from ``version``, named ``<name>-sample<n_rows>``: a
    pure function of (version, n_rows, seed). Rows are the ``n_rows`` smallest by
    sha256(seed, example_id), kept in their original order; ids, sources and groups are
    unchanged. ``version`` itself when it has no more than ``n_rows`` rows."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if version.rows <= n_rows:
        return version
    table = read_examples(store, version)
    ids = table.column("example_id").to_pylist()
    rank = sorted(
        range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).digest()
    )
    chosen = sorted(rank[:n_rows])
    sample = table.take(pa.array(chosen, type=pa.int64()))
    metadata = {"derived_from": {"name": version.name, "version": version.version}, "seed": seed}
    return publish_examples(store, sample, f"{version.name}-sample{n_rows}", metadata)
