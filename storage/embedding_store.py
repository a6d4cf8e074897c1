"""The embedding store: per encoder checkpoint, the embeddings of the training pool (DESIGN.md §4).

Two artifact stages:

- ``embedding-part``: one Parquet part ``embeddings.parquet`` (schema ``embeddings``:
  ``example_id``, ``content_hash``, ``embedding`` fixed-size list of float32 or float16) holding
  the embeddings of a chunk of distinct content hashes. Config: the :class:`StoreSpec` (encoder
  key, dtype, precision); key: ``content_key`` of that config and the sha256 of the chunk's
  sorted content hashes. A part is published whole (manifest last) or not at all.
- ``embeddings``: the **view** of one dataset version: ``rows.parquet`` (``example_id``,
  ``content_hash``, ``part``, ``part_row``: which part and row holds each example, in the
  dataset's order) and ``embeddings.npy``, the same rows as one contiguous ``(n, d)`` array that
  queries memory-map. Config: the spec and the dataset version; inputs: the encoder key, the
  dataset version and the part keys.

Refresh (:func:`refresh_view`) embeds only content hashes that no published part of the same
spec holds, in chunks of ``part_rows`` sorted hashes, one part per chunk; then publishes the view.
So adding rows encodes only the new ones, deleted rows are simply absent from the new view, a
refresh killed midway keeps its finished parts and resumes with the rest, and a new encoder
checkpoint (another key) gets a store of its own while the old one stays readable until
:func:`remove_encoder_embeddings`.

The encoder itself lives in ``airrep_core`` (this layer imports no torch): callers pass an
:data:`EmbedFunction` that turns example rows into a float32 array.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from storage.errors import ArtifactNotFound, StorageError
from storage.schemas import EMBEDDING_DTYPES, embeddings_schema
from storage.tables import read_table, write_table

log = logging.getLogger(__name__)

PART_STAGE = "embedding-part"
VIEW_STAGE = "embeddings"
PART_FILE = "embeddings.parquet"
VIEW_ROWS_FILE = "rows.parquet"
VIEW_MATRIX_FILE = "embeddings.npy"

EmbedFunction = Callable[[pa.Table], np.ndarray]
"""``embed(rows)``: rows of an examples table (at least ``prompt`` and ``response``) ->
``(len(rows), d)`` float32 embeddings, in the rows' order."""

ProgressCallback = Callable[[int, int], None]
"""``progress(rows_encoded, rows_to_encode)``, called after each part."""


class EmbeddingsNotFound(ArtifactNotFound):
    """No embedding view for the requested encoder and dataset version."""


@dataclass(frozen=True)
class StoreSpec:
    """One embedding store: an encoder checkpoint and how its numbers are stored.

    Attributes:
        encoder_key: the content key of the encoder artifact.
        dtype: ``float32`` or ``float16`` (storage dtype).
        precision: the encoder precision the embeddings were computed with (``float32``,
            ``bf16``, ``auto``).
    """

    encoder_key: str
    dtype: str = "float32"
    precision: str = "float32"

    def __post_init__(self) -> None:
        if not self.encoder_key:
            raise ValueError("encoder_key must be a non-empty artifact key")
        if self.dtype not in EMBEDDING_DTYPES:
            raise ValueError(
                f"dtype={self.dtype!r} is invalid; allowed: {sorted(EMBEDDING_DTYPES)}"
            )

    def config(self) -> dict[str, str]:
        """The content-key config of the store's parts."""
        return {"encoder": self.encoder_key, "dtype": self.dtype, "precision": self.precision}

    @classmethod
    def of(cls, ref: ArtifactRef) -> StoreSpec:
        """The spec of a part or view artifact."""
        config = ref.config
        return cls(config["encoder"], config["dtype"], config["precision"])


@dataclass(frozen=True)
class RefreshResult:
    """What :func:`refresh_view` did.

    Attributes:
        view: the published view of the dataset version.
        rows: rows in the view.
        encoded: rows encoded by this call (new content hashes).
        reused: rows whose embedding came from an existing part.
        parts_written: parts this call published.
        created: whether this call published the view (False: it existed already).
    """

    view: ArtifactRef
    rows: int
    encoded: int
    reused: int
    parts_written: int
    created: bool


@dataclass(frozen=True)
class EmbeddingMatrix:
    """A view read for querying: ids alongside one contiguous (memory-mapped) array.

    Attributes:
        view: the view artifact.
        example_ids: ``(n,)`` object array of example ids, in the dataset's order.
        content_hashes: ``(n,)`` object array of content hashes.
        embeddings: ``(n, d)`` float32 or float16, read-only, memory-mapped from local disk.
    """

    view: ArtifactRef
    example_ids: np.ndarray
    content_hashes: np.ndarray
    embeddings: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


# ---- keys --------------------------------------------------------------------------------------


def part_key(spec: StoreSpec, sorted_hashes: Sequence[str]) -> str:
    """The key of the part holding ``sorted_hashes`` under ``spec``."""
    digest = hashlib.sha256("\n".join(sorted_hashes).encode()).hexdigest()
    return content_key(PART_STAGE, spec.config(), [spec.encoder_key, digest])


def view_config(spec: StoreSpec, dataset_version: str) -> dict[str, str]:
    """The config of the view of ``dataset_version`` under ``spec``."""
    return {**spec.config(), "dataset": dataset_version}


def view_key(spec: StoreSpec, dataset_version: str) -> str:
    """The key of the view of ``dataset_version`` under ``spec``."""
    return content_key(
        VIEW_STAGE, view_config(spec, dataset_version), [spec.encoder_key, dataset_version]
    )


# ---- refresh ---------------------------------------------------------------------------------


def store_parts(store: ArtifactStore, spec: StoreSpec) -> list[ArtifactRef]:
    """Every published part of ``spec``, oldest first."""
    return [ref for ref in store.list(PART_STAGE) if ref.config == spec.config()]


def embedded_hashes(store: ArtifactStore, spec: StoreSpec) -> dict[str, tuple[ArtifactRef, int]]:
    """content hash -> (part, row) of every hash some published part of ``spec`` holds."""
    found: dict[str, tuple[ArtifactRef, int]] = {}
    for ref in store_parts(store, spec):
        hashes = _read_part_columns(store, ref, ["content_hash"]).column("content_hash")
        for row, content_hash in enumerate(hashes.to_pylist()):
            found.setdefault(content_hash, (ref, row))
    return found


def refresh_view(
    store: ArtifactStore,
    spec: StoreSpec,
    dataset_version: str,
    examples: pa.Table,
    embed: EmbedFunction,
    *,
    part_rows: int,
    progress: ProgressCallback | None = None,
) -> RefreshResult:
    """Embed what is missing of an examples table and publish its view (see the module docstring).

    Args:
        store: the artifact store.
        spec: the embedding store (encoder key, dtype, precision).
        dataset_version: the version hash of ``examples`` (the view's identity).
        examples: the dataset's examples table (``example_id``, ``prompt``, ``response``,
            ``content_hash``, ...).
        embed: rows -> ``(n, d)`` float32 embeddings (called once per new part).
        part_rows: distinct content hashes per new part.
        progress: optional callback after each part.
    """
    if part_rows < 1:
        raise ValueError(f"part_rows={part_rows} is invalid; allowed: >= 1")
    if examples.num_rows == 0:
        raise ValueError(f"dataset {dataset_version[:12]} has no rows to embed")
    key = view_key(spec, dataset_version)
    if store.exists(VIEW_STAGE, key):
        view = store.get(VIEW_STAGE, key)
        rows = int(view.metadata["rows"])
        return RefreshResult(view, rows, 0, rows, 0, created=False)
    hashes = examples.column("content_hash").to_pylist()
    located = embedded_hashes(store, spec)
    first_row_of_hash: dict[str, int] = {}
    for row, content_hash in enumerate(hashes):
        first_row_of_hash.setdefault(content_hash, row)
    missing = sorted(h for h in first_row_of_hash if h not in located)
    log.info(
        "embedding store %s: %d distinct hashes, %d to encode in parts of %d",
        spec.encoder_key[:12],
        len(first_row_of_hash),
        len(missing),
        part_rows,
    )
    parts_written = 0
    for start in range(0, len(missing), part_rows):
        chunk = missing[start : start + part_rows]
        rows = examples.take(pa.array([first_row_of_hash[h] for h in chunk], type=pa.int64()))
        ref = _build_part(store, spec, chunk, rows, embed)
        parts_written += 1
        for row, content_hash in enumerate(chunk):
            located[content_hash] = (ref, row)
        if progress is not None:
            progress(min(start + part_rows, len(missing)), len(missing))
    view = _build_view(store, spec, dataset_version, key, examples, located, encoded=len(missing))
    missing_set = set(missing)
    encoded = sum(1 for h in hashes if h in missing_set)
    return RefreshResult(
        view, len(hashes), encoded, len(hashes) - encoded, parts_written, created=True
    )


def _build_part(
    store: ArtifactStore,
    spec: StoreSpec,
    sorted_hashes: list[str],
    rows: pa.Table,
    embed: EmbedFunction,
) -> ArtifactRef:
    key = part_key(spec, sorted_hashes)

    def writer(directory: Path) -> dict[str, Any]:
        vectors = np.asarray(embed(rows))
        if vectors.ndim != 2 or vectors.shape[0] != rows.num_rows or vectors.shape[1] < 1:
            raise StorageError(
                f"embed returned shape {vectors.shape} for {rows.num_rows} rows; "
                f"expected ({rows.num_rows}, d)"
            )
        if not np.isfinite(vectors).all():
            bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise StorageError(
                f"embed returned NaN/inf for example {rows.column('example_id')[bad]} "
                f"(content hash {sorted_hashes[bad][:12]})"
            )
        dim = int(vectors.shape[1])
        table = embeddings_table(
            rows.column("example_id").to_pylist(), sorted_hashes, vectors, spec.dtype
        )
        write_table(directory / PART_FILE, table, "embeddings")
        return {"rows": len(sorted_hashes), "dim": dim}

    return store.build(
        PART_STAGE, key, config=spec.config(), inputs=[spec.encoder_key], writer=writer
    )


def embeddings_table(
    example_ids: Sequence[str], content_hashes: Sequence[str], vectors: np.ndarray, dtype: str
) -> pa.Table:
    """An ``embeddings`` table of ``vectors (n, d)`` stored as ``dtype``."""
    dim = int(vectors.shape[1])
    values = np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).reshape(-1)
    embedding = pa.FixedSizeListArray.from_arrays(
        pa.array(values, type=EMBEDDING_DTYPES[dtype]), dim
    )
    return pa.Table.from_arrays(
        [
            pa.array(list(example_ids), pa.string()),
            pa.array(list(content_hashes), pa.string()),
            embedding,
        ],
        schema=embeddings_schema(dim, dtype),
    )


def _build_view(
    store: ArtifactStore,
    spec: StoreSpec,
    dataset_version: str,
    key: str,
    examples: pa.Table,
    located: dict[str, tuple[ArtifactRef, int]],
    *,
    encoded: int,
) -> ArtifactRef:
    hashes = examples.column("content_hash").to_pylist()
    parts = {located[h][0].key: located[h][0] for h in hashes}
    part_of_row = [located[h][0].key for h in hashes]
    row_in_part = np.asarray([located[h][1] for h in hashes], dtype=np.int64)
    dims = {int(ref.metadata["dim"]) for ref in parts.values()}
    if len(dims) != 1:
        raise StorageError(f"parts of encoder {spec.encoder_key[:12]} have different dims {dims}")
    dim = dims.pop()

    def writer(directory: Path) -> dict[str, Any]:
        rows = pa.table(
            {
                "example_id": examples.column("example_id"),
                "content_hash": examples.column("content_hash"),
                "part": pa.array(part_of_row, pa.string()),
                "part_row": pa.array(row_in_part, pa.int64()),
            }
        )
        pq.write_table(rows, directory / VIEW_ROWS_FILE, compression="zstd")
        matrix = np.lib.format.open_memmap(
            directory / VIEW_MATRIX_FILE,
            mode="w+",
            dtype=np.dtype(spec.dtype),
            shape=(len(hashes), dim),
        )
        owners = pc.dictionary_encode(rows.column("part")).combine_chunks()
        codes = owners.indices.to_numpy()
        by_part = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[by_part], np.arange(len(owners.dictionary) + 1))
        for code, part in enumerate(owners.dictionary.to_pylist()):
            targets = by_part[bounds[code] : bounds[code + 1]]
            vectors = read_part_embeddings(store, parts[part])
            matrix[targets] = vectors[row_in_part[targets]]
        matrix.flush()
        del matrix
        return {
            "rows": len(hashes),
            "dim": dim,
            "parts": len(parts),
            "encoded_by_refresh": encoded,
        }

    return store.build(
        VIEW_STAGE,
        key,
        config=view_config(spec, dataset_version),
        inputs=[spec.encoder_key, dataset_version, *sorted(parts)],
        writer=writer,
    )


# ---- reading ---------------------------------------------------------------------------------


def _read_part_columns(store: ArtifactStore, ref: ArtifactRef, columns: list[str]) -> pa.Table:
    return pq.read_table(store.local_dir(ref) / PART_FILE, columns=columns)


def read_part(store: ArtifactStore, ref: ArtifactRef) -> pa.Table:
    """A part's ``embeddings`` table (validated)."""
    return read_table(store, ref, PART_FILE, "embeddings")


def read_part_embeddings(store: ArtifactStore, ref: ArtifactRef) -> np.ndarray:
    """A part's ``(rows, d)`` embeddings in its storage dtype."""
    column = _read_part_columns(store, ref, ["embedding"]).column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def list_views(
    store: ArtifactStore, encoder_key: str | None = None, dataset_version: str | None = None
) -> list[ArtifactRef]:
    """Published views, oldest first, optionally of one encoder and/or dataset version."""
    return [
        ref
        for ref in store.list(VIEW_STAGE)
        if (encoder_key is None or ref.config["encoder"] == encoder_key)
        and (dataset_version is None or ref.config["dataset"] == dataset_version)
    ]


def find_view(
    store: ArtifactStore,
    encoder_key: str,
    dataset_version: str,
    *,
    dtype: str | None = None,
    precision: str | None = None,
) -> ArtifactRef:
    """The newest view of ``dataset_version`` by ``encoder_key`` (optionally of one dtype and
    precision); :class:`EmbeddingsNotFound` naming what exists otherwise."""
    views = [
        ref
        for ref in list_views(store, encoder_key, dataset_version)
        if (dtype is None or ref.config["dtype"] == dtype)
        and (precision is None or ref.config["precision"] == precision)
    ]
    if views:
        return views[-1]
    others = sorted({ref.config["dataset"][:12] for ref in list_views(store, encoder_key)})
    wanted = ", ".join(f"{k}={v}" for k, v in (("dtype", dtype), ("precision", precision)) if v)
    raise EmbeddingsNotFound(
        f"dataset version {dataset_version[:12]} has no embeddings by encoder {encoder_key[:12]}"
        f"{' (' + wanted + ')' if wanted else ''} in {store.root.uri}; this encoder has views of "
        f"{others or 'no dataset'}. Run `airrep embed` first."
    )


def load_view(store: ArtifactStore, view: ArtifactRef) -> EmbeddingMatrix:
    """The view's ids and its ``(n, d)`` matrix, memory-mapped (remote roots: from the local
    download cache)."""
    directory = store.local_dir(view)
    rows = pq.read_table(directory / VIEW_ROWS_FILE, columns=["example_id", "content_hash"])
    matrix = np.load(directory / VIEW_MATRIX_FILE, mmap_mode="r")
    if matrix.shape[0] != rows.num_rows:
        raise StorageError(
            f"view {view.uri}: {VIEW_MATRIX_FILE} has {matrix.shape[0]} rows, "
            f"{VIEW_ROWS_FILE} has {rows.num_rows}"
        )
    return EmbeddingMatrix(
        view=view,
        example_ids=rows.column("example_id").to_numpy(zero_copy_only=False),
        content_hashes=rows.column("content_hash").to_numpy(zero_copy_only=False),
        embeddings=matrix,
    )


def view_table(store: ArtifactStore, view: ArtifactRef) -> pa.Table:
    """The view as one ``embeddings`` table (``example_id``, ``content_hash``, ``embedding``)."""
    matrix = load_view(store, view)
    return embeddings_table(
        matrix.example_ids.tolist(),
        matrix.content_hashes.tolist(),
        np.asarray(matrix.embeddings),
        view.config["dtype"],
    )


# ---- removal ---------------------------------------------------------------------------------


def remove_encoder_embeddings(store: ArtifactStore, encoder_key: str) -> int:
    """Delete every view and part of ``encoder_key`` (views first); returns how many."""
    removed = 0
    for view in list_views(store, encoder_key):
        store.delete(view)
        removed += 1
    for part in store.list(PART_STAGE):
        if part.config["encoder"] == encoder_key:
            store.delete(part)
            removed += 1
    return removed
