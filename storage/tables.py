"""Reading and writing the core tables as Parquet, validated against ``storage.schemas``.

``write_table`` is meant for an artifact writer's staging directory (local); ``read_table`` and
``scan_tables`` read published artifacts through an :class:`~storage.artifacts.ArtifactStore`,
on any root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.errors import DataValidationError
from storage.schemas import SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY, table_schema, validate


def write_table(path: str | os.PathLike[str], table: pa.Table, schema_name: str) -> int:
    """Validate ``table`` as ``schema_name`` and write it to the local Parquet file ``path``.

    The file's schema metadata records the schema name and version (the artifact manifest picks
    them up). Returns the number of rows written. Nothing is written when validation fails.
    """
    path = Path(path)
    checked = validate(table, schema_name, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(checked, path, compression="zstd")
    return checked.num_rows


def read_table(store: ArtifactStore, ref: ArtifactRef, filename: str, schema_name: str) -> pa.Table:
    """The Parquet file ``filename`` of artifact ``ref``, validated as ``schema_name``.

    Raises ``DataValidationError`` (naming the file's URI) when the file was written with another
    schema, a newer schema version, or breaks the schema.
    """
    source = ref.file_uri(filename)
    if store.root.is_local:
        table = pq.read_table(store.local_dir(ref) / filename)
    else:
        table = pq.read_table(pa.BufferReader(store.read_bytes(ref, filename)))
    _check_schema_tag(table.schema, schema_name, source)
    return validate(table, schema_name, source=source)


def scan_tables(store: ArtifactStore, refs: Sequence[ArtifactRef], filename: str) -> pl.LazyFrame:
    """A polars ``LazyFrame`` over ``filename`` of every artifact in ``refs`` (concatenated).

    Remote artifacts are read from the local download cache (``store.local_dir``), so the scan,
    its filters and aggregations run lazily on local files.
    """
    if not refs:
        raise ValueError("scan_tables needs at least one artifact")
    paths = [str(store.local_dir(ref) / filename) for ref in refs if ref.file_uri(filename)]
    return pl.scan_parquet(paths)


def _check_schema_tag(schema: pa.Schema, schema_name: str, source: str) -> None:
    metadata = schema.metadata or {}
    tagged = metadata.get(SCHEMA_NAME_KEY, b"").decode()
    if tagged and tagged != schema_name:
        raise DataValidationError(source, None, None, f"is a {tagged!r} table, not {schema_name!r}")
    version = int(metadata.get(SCHEMA_VERSION_KEY, b"0") or 0)
    known = table_schema(schema_name).version
    if version > known:
        raise DataValidationError(
            source, None, None, f"{schema_name} schema version {version} is newer than {known}"
        )
