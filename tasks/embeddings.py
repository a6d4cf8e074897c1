"""Embedding-store steps: refresh a dataset's embeddings with an encoder checkpoint, and open the
store for attribution queries (DESIGN.md §4; the store itself is ``storage.embedding_store``).

Plain functions, no Prefect: the pipeline's task wrappers and the CLI call them.

- An encoder checkpoint is an artifact of stage ``encoder`` whose files are a saved
  ``AirRepEncoder`` directory (at the top, or in an ``encoder/`` folder).
- :func:`refresh_embeddings` embeds what the store lacks of a dataset version and publishes its
  view; :func:`open_index` reads a view (memory-mapped) into an ``AttributionIndex``.
- :func:`write_selection` writes data-selection output as a JSONL file that ``airrep data import``
  (``storage.datasets.import_dataset``) reads, and optionally imports it as a dataset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from airrep_core.attribution.index import AttributionIndex, ExampleEncoder, SelectedExample
from airrep_core.config.embedding import EmbeddingConfig, SearchConfig
from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.methods.lexical import Bm25Attributor
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.dataset_heads import DatasetVersion, validate_dataset_name, version_of
from storage.datasets import import_dataset, read_examples, sample_dataset
from storage.embedding_store import (
    EmbeddingMatrix,
    ProgressCallback,
    StoreSpec,
    find_view,
    load_view,
    refresh_view,
)
from storage.errors import ArtifactNotFound
from storage.shapes import FieldMapping
from tasks.caching import store_task
from tasks.corpus import load_corpus
from tasks.data_tasks import dataset_ref
from tasks.encoder import ENCODER_STAGE, load_encoder
from tasks.monitoring import Progress, publish_table, run_logger
from tasks.references import StepRef, open_store

MIN_KEY_PREFIX = 6


class EncoderNotFound(ArtifactNotFound):
    """No encoder checkpoint matches the requested key."""


def resolve_encoder(store: ArtifactStore, key: str | None = None) -> ArtifactRef:
    """The encoder artifact whose key starts with ``key`` (>= 6 hex digits); the newest one when
    ``key`` is None or ``"latest"``. :class:`EncoderNotFound` lists the known keys otherwise."""
    encoders = store.list(ENCODER_STAGE)
    known = [ref.key[:12] for ref in encoders]
    if key is None or key == "latest":
        if not encoders:
            raise EncoderNotFound(
                f"no encoder checkpoint in {store.root.uri} (stage {ENCODER_STAGE!r})"
            )
        return encoders[-1]
    if len(key) < MIN_KEY_PREFIX:
        raise ValueError(
            f"encoder key {key!r} is too short: give at least {MIN_KEY_PREFIX} hex digits"
        )
    matches = [ref for ref in encoders if ref.key.startswith(key)]
    if len(matches) != 1:
        what = "unknown" if not matches else "ambiguous"
        raise EncoderNotFound(
            f"{what} encoder {key!r} in {store.root.uri}; encoders: {known or 'none'}"
        )
    return matches[0]


def embed_function(encoder: ExampleEncoder, config: EmbeddingConfig):
    """``rows -> (n, d) float32``: ``encoder.encode_examples`` of each row, so a stored example
    gets exactly the text (and vector) it gets as a query."""

    def embed(rows: pa.Table) -> np.ndarray:
        examples = [
            Example(str(i), p, r)
            for i, p, r in zip(
                rows.column("example_id").to_pylist(),
                rows.column("prompt").to_pylist(),
                rows.column("response").to_pylist(),
                strict=True,
            )
        ]
        return encoder.encode_examples(examples, config.batch_size, precision=config.precision)

    return embed


@dataclass(frozen=True)
class EmbeddingRefresh:
    """The outcome of :func:`refresh_embeddings` (small and JSON-ready, like every step's)."""

    root: str
    view_key: str
    view_uri: str
    encoder_key: str
    dataset_version: str
    dtype: str
    rows: int
    encoded: int
    reused: int
    parts_written: int
    created: bool
    seconds: float

    def step_ref(self) -> StepRef:
        """The view as a :class:`~tasks.references.StepRef` with this summary."""
        summary = {
            k: v for k, v in asdict(self).items() if k not in ("root", "view_key", "view_uri")
        }
        return StepRef(self.root, "embeddings", self.view_key, self.view_uri, summary)


def refresh_embeddings(
    store: ArtifactStore,
    encoder_ref: ArtifactRef,
    dataset_version: DatasetVersion,
    config: EmbeddingConfig,
    *,
    encoder: AirRepEncoder | None = None,
    progress: ProgressCallback | None = None,
) -> EmbeddingRefresh:
    """Embed the rows of ``dataset_version`` that the store of ``encoder_ref`` lacks (incremental,
    resumable) and publish the version's view. ``encoder``: an already-loaded copy of the
    checkpoint (loaded from the artifact when None)."""
    start = time.perf_counter()
    config = resolved(config)
    spec = StoreSpec(encoder_ref.key, config.dtype, config.precision)
    examples = read_examples(store, dataset_version)
    loaded: dict[str, Any] = {}

    def embed(rows: pa.Table) -> np.ndarray:  # loads the encoder only when something is new
        if "fn" not in loaded:
            loaded["fn"] = embed_function(encoder or load_encoder(store, encoder_ref), config)
        return loaded["fn"](rows)

    result = refresh_view(
        store,
        spec,
        dataset_version.version,
        examples,
        embed,
        part_rows=config.part_rows,
        progress=progress,
    )
    return EmbeddingRefresh(
        root=store.root.uri,
        view_key=result.view.key,
        view_uri=result.view.uri,
        encoder_key=encoder_ref.key,
        dataset_version=dataset_version.version,
        dtype=config.dtype,
        rows=result.rows,
        encoded=result.encoded,
        reused=result.reused,
        parts_written=result.parts_written,
        created=result.created,
        seconds=round(time.perf_counter() - start, 3),
    )


def open_index(
    store: ArtifactStore,
    encoder_ref: ArtifactRef,
    dataset_version: DatasetVersion,
    config: SearchConfig | None = None,
    *,
    dtype: str | None = None,
    encoder: AirRepEncoder | None = None,
) -> tuple[AttributionIndex, EmbeddingMatrix]:
    """An :class:`AttributionIndex` over the stored view of ``dataset_version`` by ``encoder_ref``
    (``EmbeddingsNotFound`` when it was never embedded), and the memory-mapped view."""
    view = find_view(store, encoder_ref.key, dataset_version.version, dtype=dtype)
    matrix = load_view(store, view)
    encoder = encoder or load_encoder(store, encoder_ref)
    lexical = None
    if encoder.lexical_weight > 0:  # a hybrid encoder: BM25 over the same rows, in their order
        examples = load_corpus(store, dataset_version).examples
        lexical = Bm25Attributor(encoder.lexical, tokenizer=encoder.lexical_tokenizer)
        lexical.fit([examples[str(i)] for i in matrix.example_ids])
    index = AttributionIndex(
        encoder,
        matrix.embeddings,
        matrix.example_ids,
        config or SearchConfig(),
        lexical=lexical,
    )
    return index, matrix


def write_selection(
    store: ArtifactStore,
    pool: DatasetVersion,
    selected: Sequence[SelectedExample],
    path: str | Path,
    *,
    import_as: str | None = None,
) -> tuple[Path, DatasetVersion | None]:
    """Write the selected pool examples as JSONL (``id``, ``prompt``, ``response``, ``group``,
    ``selection_order``, ``best_rank``, ``target_id``, ``score``) in selection order; with
    ``import_as``, import the file as that dataset (ids and groups kept); an invalid
    ``import_as`` raises ``ValueError`` before the file is written."""
    if import_as is not None:
        validate_dataset_name(import_as)
    examples = read_examples(store, pool)
    by_id = {row["example_id"]: row for row in examples.to_pylist()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in selected:
            row = by_id[item.example_id]
            record = {
                "id": item.example_id,
                "prompt": row["prompt"],
                "response": row["response"],
                "group": row["group"],
                "selection_order": item.order,
                "best_rank": item.best_rank,
                "target_id": item.target_id,
                "score": item.score,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    if import_as is None:
        return path, None
    imported = import_dataset(
        store, path, import_as, mapping=FieldMapping(id_field="id", group_field="group")
    )
    return path, imported


def as_dataset_version(ref: StepRef) -> DatasetVersion:
    """The ``DatasetVersion`` of a dataset ``StepRef``."""
    return version_of(ref.resolve())


@store_task("sample-pool", "sample-{n_rows}-rows")
def sample_pool_task(root: str, dataset: StepRef, n_rows: int, seed: int = 0) -> StepRef:
    """A deterministic sample of ``n_rows`` rows of the dataset (itself when ``n_rows`` is 0)."""
    version = as_dataset_version(dataset)
    if n_rows == 0:
        return dataset
    return dataset_ref(root, sample_dataset(open_store(root), version, n_rows, seed=seed))


@store_task("refresh-embeddings", "embed-{dataset.summary[name]}", gpu=True)
def refresh_embeddings_task(
    root: str, encoder: StepRef, dataset: StepRef, config: EmbeddingConfig
) -> StepRef:
    """Embed what the encoder's store lacks of the dataset (incremental) and publish its view."""
    store = open_store(root)
    version = as_dataset_version(dataset)
    progress = Progress(f"embedding {version.name} ({version.rows} rows)")
    result = refresh_embeddings(
        store,
        encoder.resolve(),
        version,
        config,
        progress=lambda done, total: progress.update(done, total),
    )
    run_logger().info(
        "embeddings of %s: %d rows, %d encoded, %d reused in %.1fs",
        version.name,
        result.rows,
        result.encoded,
        result.reused,
        result.seconds,
    )
    return result.step_ref()


@task(name="attribution-example", cache_policy=NO_CACHE)
def attribution_example_task(
    root: str, encoder: StepRef, pool: StepRef, queries: StepRef, k: int = 5, query_row: int = 0
) -> list[dict]:
    """The top-``k`` most helpful and most harmful pool examples for one query example (row
    ``query_row`` of the ``queries`` dataset), as records with the texts (shown in the UI)."""
    store = open_store(root)
    pool_version = as_dataset_version(pool)
    index, _ = open_index(store, encoder.resolve(), pool_version, SearchConfig(k=k))
    query_row_data = (
        read_examples(store, as_dataset_version(queries)).slice(query_row, 1).to_pylist()[0]
    )
    query = Example(
        query_row_data["example_id"], query_row_data["prompt"], query_row_data["response"]
    )
    texts = {row["example_id"]: row for row in read_examples(store, pool_version).to_pylist()}
    records = [
        {
            **record,
            "query_prompt": query.prompt,
            "prompt": texts[record["example_id"]]["prompt"],
            "response": texts[record["example_id"]]["response"],
            "group": texts[record["example_id"]]["group"],
        }
        for record in index.attribute([query], k)
    ]
    publish_table(
        "attribution-example",
        [{k_: v for k_, v in r.items() if k_ != "query_prompt"} for r in records],
        f"Most helpful / harmful {pool_version.name} examples for {queries.summary.get('name')} example {query.example_id}",
    )
    return records
