"""Core-table schemas: validation on write and on read, and lazy scans over many artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.artifacts import ArtifactStore
from storage.errors import DataValidationError
from storage.schemas import SCHEMAS, embeddings_schema, validate
from storage.tables import read_table, scan_tables, write_table


def _examples(n: int = 3) -> pa.Table:
    return pa.table(
        {
            "example_id": [f"e{i}" for i in range(n)],
            "prompt": [f"p{i}" for i in range(n)],
            "response": [f"r{i}" for i in range(n)],
            "source": ["ds"] * n,
            "group": [None] + ["g"] * (n - 1),
            "content_hash": [f"{i:064x}" for i in range(n)],
        }
    )


def _losses(split: str, n: int, offset: float = 0.0) -> pa.Table:
    return pa.table(
        {
            "split_id": [split] * n,
            "subset_id": np.arange(n, dtype=np.int32),  # cast to int64 on validation
            "target_id": [f"t{i % 3}" for i in range(n)],
            "loss": np.arange(n, dtype=np.float64) + offset,  # cast to float32
        }
    )


def test_validate_casts_to_canonical_types() -> None:
    polars_made = pl.from_arrow(_examples()).to_arrow()  # large_string / string_view columns
    checked = validate(polars_made, "examples")
    assert checked.schema.equals(SCHEMAS["examples"].arrow_schema(), check_metadata=False)
    assert checked.to_pylist() == _examples().to_pylist()
    losses = validate(_losses("s", 4), "subset_losses")
    assert losses.schema.field("loss").type == pa.float32()
    assert losses.schema.field("subset_id").type == pa.int64()


@pytest.mark.parametrize(
    ("table", "schema", "row", "field", "message"),
    [
        (_examples().drop_columns(["response"]), "examples", None, "response", "missing column"),
        (
            _examples().append_column("extra", pa.array([1, 2, 3])),
            "examples",
            None,
            "extra",
            "unknown",
        ),
        (
            _examples().set_column(1, "prompt", pa.array([1, 2, 3])),
            "examples",
            None,
            "prompt",
            "int64",
        ),
        (
            _examples().set_column(2, "response", pa.array(["a", None, "c"])),
            "examples",
            2,
            "response",
            "null",
        ),
        (
            _examples().set_column(0, "example_id", pa.array(["a", "b", ""])),
            "examples",
            3,
            "example_id",
            "empty",
        ),
        (
            _examples().set_column(0, "example_id", pa.array(["a", "b", "a"])),
            "examples",
            3,
            "example_id",
            "duplicate",
        ),
        (
            _losses("s", 3).set_column(3, "loss", pa.array([0.5, float("nan"), 1.0])),
            "subset_losses",
            2,
            "loss",
            "NaN",
        ),
        (
            _losses("s", 3).set_column(1, "subset_id", pa.array(["0", "1", "2"])),
            "subset_losses",
            None,
            "subset_id",
            "expected int64",
        ),
        (
            pa.table(
                {
                    "split_id": ["s", "s"],
                    "subset_id": [0, 1],
                    "example_ids": [["a", "b"], ["c", None]],
                }
            ),
            "subsets",
            2,
            "example_ids",
            "null inside",
        ),
        (
            pa.table(
                {
                    "example_id": ["a"],
                    "content_hash": ["h"],
                    "embedding": pa.array([[1.0, 2.0]], pa.list_(pa.float64(), 2)),
                }
            ),
            "embeddings",
            None,
            "embedding",
            "float32|float16",
        ),
    ],
)
def test_validate_names_row_and_field(
    table: pa.Table, schema: str, row: int | None, field: str, message: str
) -> None:
    with pytest.raises(DataValidationError, match=message) as failure:
        validate(table, schema, source="my_table")
    assert (failure.value.file, failure.value.row, failure.value.field) == ("my_table", row, field)
    assert "my_table" in str(failure.value)


def test_unknown_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="known"):
        validate(_examples(), "nope")


def test_write_refuses_bad_tables(tmp_path: Path) -> None:
    bad = _examples().set_column(2, "response", pa.array(["a", None, "c"]))
    with pytest.raises(DataValidationError, match="null"):
        write_table(tmp_path / "x.parquet", bad, "examples")
    assert not (tmp_path / "x.parquet").exists()


def test_round_trip_on_every_backend(store: ArtifactStore) -> None:
    vectors = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float16)
    embeddings = pa.Table.from_arrays(
        [
            pa.array([f"e{i}" for i in range(5)]),
            pa.array(["h"] * 5),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8),
        ],
        schema=embeddings_schema(8, "float16"),
    )

    def writer(directory: Path) -> None:
        write_table(directory / "examples.parquet", _examples(), "examples")
        write_table(directory / "embeddings.parquet", embeddings, "embeddings")

    ref = store.build("tables", "k", config={}, inputs=[], writer=writer)
    assert ref.tables["examples.parquet"] == {"schema": "examples", "schema_version": 1, "rows": 3}
    assert (
        read_table(store, ref, "examples.parquet", "examples").to_pylist()
        == _examples().to_pylist()
    )
    back = read_table(store, ref, "embeddings.parquet", "embeddings")
    stored = back.column("embedding").combine_chunks().flatten().to_numpy().reshape(5, 8)
    np.testing.assert_array_equal(stored, vectors)
    with pytest.raises(DataValidationError, match="is a 'examples' table, not 'embeddings'"):
        read_table(store, ref, "examples.parquet", "embeddings")


def test_read_validates(store: ArtifactStore) -> None:
    def writer(directory: Path) -> None:  # bypasses write_table: a foreign, broken file
        bad = _losses("s", 3).set_column(0, "split_id", pa.array(["s", None, "s"]))
        pq.write_table(bad, directory / "losses.parquet")

    ref = store.build("tables", "bad", config={}, inputs=[], writer=writer)
    with pytest.raises(DataValidationError) as failure:
        read_table(store, ref, "losses.parquet", "subset_losses")
    assert failure.value.file.endswith("losses.parquet") and "tables/bad" in failure.value.file
    assert (failure.value.row, failure.value.field) == (2, "split_id")


def test_scan_tables_equals_concatenation(store: ArtifactStore) -> None:
    parts = [_losses(f"split{i}", 6, offset=10.0 * i) for i in range(3)]
    refs = []
    for i, part in enumerate(parts):

        def writer(directory: Path, part: pa.Table = part) -> None:
            write_table(directory / "losses.parquet", part, "subset_losses")

        refs.append(store.build("labels", f"shard{i}", config={"i": i}, inputs=[], writer=writer))
    lazy = scan_tables(store, refs, "losses.parquet")
    assert isinstance(lazy, pl.LazyFrame)
    by_target = lazy.group_by("target_id").agg(pl.col("loss").mean()).sort("target_id").collect()
    eager = (
        pl.concat([pl.from_arrow(validate(p, "subset_losses")) for p in parts])
        .group_by("target_id")
        .agg(pl.col("loss").mean())
        .sort("target_id")
    )
    assert by_target.equals(eager)
    assert lazy.select(pl.len()).collect().item() == 18
