"""Arrow schemas of the core tables (DESIGN.md §4) and their validation.

Tables and their columns (names fixed so any tool, polars or duckdb, can read the Parquet files):

- ``examples`` v1: ``example_id`` string (unique, non-empty), ``prompt`` string, ``response``
  string, ``source`` string (dataset name), ``group`` string (nullable), ``content_hash`` string
  (hex sha256 of prompt and response, see ``storage.datasets.content_hash``).
- ``splits`` v1: ``split_id`` string, ``example_id`` string (one row per target example).
- ``subsets`` v1: ``split_id`` string, ``subset_id`` int64, ``example_ids`` list<string>.
- ``subset_losses`` v1: ``split_id`` string, ``subset_id`` int64, ``target_id`` string, ``loss``
  float32 (mean response-token cross-entropy).
- ``teacher_scores`` v1: ``target_id`` string, ``candidate_id`` string, ``method`` string (a
  teacher method, or ``fused``), ``score`` float32 (higher = more helpful).
- ``embeddings`` v1: ``example_id`` string, ``content_hash`` string, ``embedding``
  fixed_size_list<float32 or float16>[d], one encoder per table.

:func:`validate` checks a table against one of them and returns it cast to the canonical types
(e.g. ``large_string`` from polars to ``string``, float64 losses to float32); anything else raises
:class:`~storage.errors.DataValidationError` naming the table, the 1-based row and the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from storage.errors import DataValidationError

SCHEMA_NAME_KEY = b"airrep.schema"
SCHEMA_VERSION_KEY = b"airrep.schema_version"
EMBEDDING_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}

_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its canonical type, whether nulls are allowed, whether empty strings are."""

    name: str
    type: pa.DataType
    nullable: bool = False
    nonempty: bool = False


@dataclass(frozen=True)
class TableSchema:
    """A named, versioned core-table schema."""

    name: str
    version: int
    columns: tuple[ColumnSpec, ...]
    unique: str | None = None

    def arrow_schema(self) -> pa.Schema:
        """The canonical Arrow schema, tagged with the schema name and version."""
        return pa.schema(
            [pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns],
            metadata={SCHEMA_NAME_KEY: self.name, SCHEMA_VERSION_KEY: str(self.version)},
        )


def _s(name: str, nullable: bool = False, nonempty: bool = False) -> ColumnSpec:
    return ColumnSpec(name, pa.string(), nullable, nonempty)


SCHEMAS: dict[str, TableSchema] = {
    s.name: s
    for s in (
        TableSchema(
            "examples",
            1,
            (
                _s("example_id", nonempty=True),
                _s("prompt"),
                _s("response"),
                _s("source", nonempty=True),
                _s("group", nullable=True),
                _s("content_hash", nonempty=True),
            ),
            unique="example_id",
        ),
        TableSchema("splits", 1, (_s("split_id", nonempty=True), _s("example_id", nonempty=True))),
        TableSchema(
            "subsets",
            1,
            (
                _s("split_id", nonempty=True),
                ColumnSpec("subset_id", pa.int64()),
                ColumnSpec("example_ids", pa.list_(pa.string())),
            ),
        ),
        TableSchema(
            "subset_losses",
            1,
            (
                _s("split_id", nonempty=True),
                ColumnSpec("subset_id", pa.int64()),
                _s("target_id", nonempty=True),
                ColumnSpec("loss", pa.float32()),
            ),
        ),
        TableSchema(
            "teacher_scores",
            1,
            (
                _s("target_id", nonempty=True),
                _s("candidate_id", nonempty=True),
                _s("method", nonempty=True),
                ColumnSpec("score", pa.float32()),
            ),
        ),
        TableSchema(
            "embeddings",
            1,
            (
                _s("example_id", nonempty=True),
                _s("content_hash", nonempty=True),
                # Placeholder: the dimension and dtype are per encoder, see embeddings_schema().
                ColumnSpec("embedding", pa.list_(pa.float32(), 1)),
            ),
            unique="example_id",
        ),
    )
}


def table_schema(name: str) -> TableSchema:
    """The schema called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown table schema {name!r}; known: {sorted(SCHEMAS)}") from None


def embeddings_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    """The embeddings table schema for ``dim``-dimensional ``dtype`` vectors."""
    if dim < 1:
        raise ValueError(f"embedding dim must be >= 1, got {dim}")
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype {dtype!r} not in {sorted(EMBEDDING_DTYPES)}")
    base = SCHEMAS["embeddings"]
    fields = [pa.field(c.name, c.type, nullable=c.nullable) for c in base.columns[:-1]]
    fields.append(pa.field("embedding", pa.list_(EMBEDDING_DTYPES[dtype], dim), nullable=False))
    return pa.schema(fields, metadata=base.arrow_schema().metadata)


def validate(table: pa.Table, schema_name: str, source: str = "<table>") -> pa.Table:
    """``table`` checked against schema ``schema_name`` and cast to its canonical types.

    ``source`` names the table or file in errors. Raises ``DataValidationError`` on a missing or
    unknown column, a wrong column type, a null or empty value where none is allowed, or a
    duplicate in the unique column (row numbers are 1-based).
    """
    spec = table_schema(schema_name)
    expected = [c.name for c in spec.columns]
    missing = [n for n in expected if n not in table.column_names]
    if missing:
        raise DataValidationError(
            source, None, missing[0], f"missing column; {schema_name} needs {expected}"
        )
    extra = [n for n in table.column_names if n not in expected]
    if extra:
        raise DataValidationError(
            source, None, extra[0], f"unknown column; {schema_name} has {expected}"
        )
    columns, fields = [], []
    for col_spec in spec.columns:
        column = _cast_column(table.column(col_spec.name), col_spec, source)
        _check_values(column, col_spec, source)
        columns.append(column)
        fields.append(pa.field(col_spec.name, column.type, nullable=col_spec.nullable))
    out = pa.Table.from_arrays(
        columns, schema=pa.schema(fields, metadata=spec.arrow_schema().metadata)
    )
    if spec.unique is not None:
        _check_unique(out.column(spec.unique), spec.unique, source)
    return out


def _cast_column(column: pa.ChunkedArray, spec: ColumnSpec, source: str) -> pa.ChunkedArray:
    actual = column.type
    if spec.name == "embedding":
        if not pa.types.is_fixed_size_list(actual) or actual.value_type not in (
            pa.float32(),
            pa.float16(),
        ):
            raise DataValidationError(
                source, None, spec.name, f"type {actual}; expected fixed_size_list<float32|float16>"
            )
        return column
    target = spec.type
    if pa.types.is_string(target):
        ok = actual in _STRING_TYPES
    elif pa.types.is_integer(target):
        ok = pa.types.is_integer(actual)
    elif pa.types.is_floating(target):
        ok = pa.types.is_floating(actual) or pa.types.is_integer(actual)
    else:  # list<string>
        ok = (
            pa.types.is_list(actual) or pa.types.is_large_list(actual)
        ) and actual.value_type in _STRING_TYPES
    if not ok:
        raise DataValidationError(source, None, spec.name, f"type {actual}; expected {target}")
    try:
        return column.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        row = _first_uncastable_row(column, target)
        raise DataValidationError(source, row, spec.name, f"cannot cast to {target}: {e}") from e


def _first_uncastable_row(column: pa.ChunkedArray, target: pa.DataType) -> int | None:
    for i, value in enumerate(column.combine_chunks()):
        try:
            pa.array([value.as_py()], type=value.type).cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return i + 1
    return None


def _check_values(column: pa.ChunkedArray, spec: ColumnSpec, source: str) -> None:
    if not spec.nullable and column.null_count:
        raise DataValidationError(source, _first_true(column.is_null()), spec.name, "null value")
    if spec.nonempty:
        empty = pc.equal(pc.utf8_length(column), 0)
        if pc.any(empty).as_py():
            raise DataValidationError(source, _first_true(empty), spec.name, "empty string")
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        values = pc.list_flatten(column)
        if values.null_count:
            parents = pc.list_parent_indices(column)
            bad = parents[_first_true(values.is_null()) - 1].as_py()
            raise DataValidationError(source, bad + 1, spec.name, "null inside the list")
    if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
        raise DataValidationError(source, _first_true(pc.is_nan(column)), spec.name, "NaN value")


def _check_unique(column: pa.ChunkedArray, name: str, source: str) -> None:
    if pc.count_distinct(column).as_py() == len(column):
        return
    seen: set[str] = set()
    for i, value in enumerate(column.to_pylist()):
        if value in seen:
            raise DataValidationError(source, i + 1, name, f"duplicate value {value!r}")
        seen.add(value)


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int:
    """1-based index of the first true value of a boolean array."""
    return pc.index(mask, True).as_py() + 1
