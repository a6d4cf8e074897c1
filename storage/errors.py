"""Exceptions raised by the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of the storage layer's errors."""


class ArtifactNotFound(StorageError, KeyError):
    """No published artifact (no ``_manifest.json``) at the requested stage and key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ArtifactConflict(StorageError):
    """An artifact exists at the key but was built from a different config."""


class DataValidationError(StorageError, ValueError):
    """Input data or a table breaks its expected format.

    ``file`` is the input file or table being read, ``row`` the 1-based line (JSONL, CSV) or row
    (JSON array, Parquet, Arrow table) number, ``field`` the offending field; either may be
    ``None`` when the problem is not tied to one row or field (an empty file, a column type).
    ``records`` is how many input records the problem loses: 1 for a bad row, the file's record
    count for a file-level problem (0 for an empty file), ``None`` when it cannot be counted.
    """

    def __init__(
        self, file: str, row: int | None, field: str | None, message: str, records: int | None = 1
    ) -> None:
        self.file = file
        self.row = row
        self.field = field
        self.message = message
        self.records = records
        where = str(file)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")

    def as_record(self) -> dict[str, object]:
        """The error as a JSON-ready record (file, line, field, reason, records lost) for skip
        reports."""
        return {
            "file": self.file,
            "line": self.row,
            "field": self.field,
            "reason": self.message,
            "records": self.records,
        }


class FormatDetectionError(DataValidationError):
    """No known record format matches the data's fields (never skipped by ``skip_invalid``)."""
