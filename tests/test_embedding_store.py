"""The embedding store on real Dolly rows and the real MiniLM encoder (all-MiniLM-L6-v2, a short
max length to keep the suite fast): incremental == full refresh, only new content is encoded,
deleted rows disappear, a killed refresh resumes without half-visible parts, float16 round trip,
one store per encoder checkpoint, and the bad-input errors."""

from __future__ import annotations

import itertools
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from airrep_core.config.embedding import EmbeddingConfig
from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from storage.artifacts import ArtifactStore
from storage.dataset_heads import DatasetVersion
from storage.datasets import import_dataset, read_examples
from storage.embedding_store import (
    PART_STAGE,
    VIEW_STAGE,
    EmbeddingsNotFound,
    StoreSpec,
    find_view,
    load_view,
    read_part,
    refresh_view,
    remove_encoder_embeddings,
    view_table,
)
from storage.errors import StorageError
from storage.sample_data import sample_data_dir
from tasks.embeddings import (
    EncoderNotFound,
    embed_function,
    open_index,
    refresh_embeddings,
    resolve_encoder,
)

MAX_LENGTH = 32
PART_ROWS = 8
CONFIG = EmbeddingConfig.preset("tiny", part_rows=PART_ROWS, batch_size=16)
SPEC = StoreSpec("enc-a")


@pytest.fixture(scope="module")
def encoder() -> AirRepEncoder:
    return AirRepEncoder.from_backbone("all-MiniLM-L6-v2", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def encoder_dir(encoder: AirRepEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder.save(tmp_path_factory.mktemp("encoder") / "encoder")


@pytest.fixture(scope="module")
def dolly_lines() -> list[str]:
    with open(sample_data_dir() / "dolly" / "dolly_6400.jsonl", encoding="utf-8") as f:
        return list(itertools.islice(f, 40))


class CountingEmbed:
    """The real encoder's embed function, counting rows and calls; optionally failing."""

    def __init__(self, encoder: AirRepEncoder, fail_on_call: int | None = None) -> None:
        self.embed = embed_function(encoder, CONFIG)
        self.rows = 0
        self.calls = 0
        self.hashes: list[str] = []
        self.fail_on_call = fail_on_call

    def __call__(self, rows: pa.Table) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("injected failure in the encode step")
        self.rows += rows.num_rows
        self.hashes += rows.column("content_hash").to_pylist()
        return self.embed(rows)


def publish_encoder(store: ArtifactStore, encoder_dir: Path, name: str = "enc-a") -> str:
    """An ``encoder`` artifact holding the saved encoder; returns its key."""

    def writer(directory: Path) -> None:
        shutil.copytree(encoder_dir, directory / "encoder")

    return store.build("encoder", name, config={"name": name}, inputs=[], writer=writer).key


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """An empty store under ``tmp_path/store``."""
    return ArtifactStore(f"file://{tmp_path / 'store'}")


def import_lines(
    store: ArtifactStore, tmp_path: Path, lines: list[str], name: str
) -> DatasetVersion:
    path = tmp_path / f"{name}-{len(lines)}-{abs(hash(tuple(lines))) % 10**8}.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return import_dataset(store, path, name)


def refresh(
    store: ArtifactStore, version: DatasetVersion, embed: Callable, spec: StoreSpec = SPEC
) -> object:
    """``refresh_view`` of ``version`` into the store of ``spec`` (default: encoder ``enc-a``,
    float32), in parts of ``PART_ROWS`` rows."""
    return refresh_view(
        store, spec, version.version, read_examples(store, version), embed, part_rows=PART_ROWS
    )


def published(store: ArtifactStore, stage: str) -> list[str]:
    return [ref.key for ref in store.list(stage)]


def test_incremental_refresh_encodes_only_new_rows_and_equals_full(
    tmp_path, store, encoder, dolly_lines
) -> None:
    v1 = import_lines(store, tmp_path, dolly_lines[:24], "dolly")
    first = CountingEmbed(encoder)
    result = refresh(store, v1, first)
    assert (result.rows, result.encoded, result.parts_written) == (24, 24, 3)
    assert first.rows == 24

    # v2: rows 0-3 deleted, rows 24-31 added
    v2 = import_lines(store, tmp_path, dolly_lines[4:32], "dolly")
    second = CountingEmbed(encoder)
    result = refresh(store, v2, second)
    new_hashes = set(read_examples(store, v2).column("content_hash").to_pylist()) - set(
        read_examples(store, v1).column("content_hash").to_pylist()
    )
    assert second.rows == 8 and set(second.hashes) == new_hashes
    assert (result.rows, result.encoded, result.reused) == (28, 8, 20)
    incremental = load_view(store, result.view)
    assert (
        incremental.example_ids.tolist()
        == read_examples(store, v2).column("example_id").to_pylist()
    )
    deleted = set(read_examples(store, v1).column("example_id").to_pylist()[:4])
    assert deleted.isdisjoint(incremental.example_ids.tolist())
    # the v1 view is untouched and still readable
    assert load_view(store, find_view(store, "enc-a", v1.version)).rows == 24

    # the same version refreshed from scratch in another store
    fresh_store = ArtifactStore(f"file://{tmp_path / 'fresh'}")
    v2_fresh = import_lines(fresh_store, tmp_path, dolly_lines[4:32], "dolly")
    assert v2_fresh.version == v2.version
    full = load_view(fresh_store, refresh(fresh_store, v2_fresh, CountingEmbed(encoder)).view)
    assert full.example_ids.tolist() == incremental.example_ids.tolist()
    # Different batches pad differently; the encoder's numbers agree to float32 rounding.
    np.testing.assert_allclose(incremental.embeddings, full.embeddings, rtol=1e-5, atol=1e-5)

    # refreshing again encodes nothing and publishes nothing
    again = CountingEmbed(encoder)
    result = refresh(store, v2, again)
    assert (again.calls, result.created, result.encoded) == (0, False, 0)


def test_killed_refresh_resumes_and_leaves_nothing_half_visible(
    tmp_path, store, encoder, dolly_lines
) -> None:
    version = import_lines(store, tmp_path, dolly_lines[:24], "dolly")
    failing = CountingEmbed(encoder, fail_on_call=2)
    with pytest.raises(RuntimeError, match="injected failure"):
        refresh(store, version, failing)
    assert published(store, VIEW_STAGE) == []
    assert len(published(store, PART_STAGE)) == 1
    part_dir = Path(tmp_path / "store" / PART_STAGE)
    leftovers = (
        [p for p in (part_dir / ".staging").glob("*")] if (part_dir / ".staging").exists() else []
    )
    assert leftovers == []
    assert sorted(p.name for p in part_dir.iterdir() if p.name != ".staging") == published(
        store, PART_STAGE
    )
    with pytest.raises(EmbeddingsNotFound):
        find_view(store, "enc-a", version.version)

    resumed = CountingEmbed(encoder)
    result = refresh(store, version, resumed)
    assert resumed.rows == 16 and result.encoded == 16 and result.parts_written == 2
    view = load_view(store, result.view)
    fresh_store = ArtifactStore(f"file://{tmp_path / 'fresh'}")
    fresh_version = import_lines(fresh_store, tmp_path, dolly_lines[:24], "dolly")
    full = load_view(fresh_store, refresh(fresh_store, fresh_version, CountingEmbed(encoder)).view)
    assert view.example_ids.tolist() == full.example_ids.tolist()
    np.testing.assert_allclose(view.embeddings, full.embeddings, rtol=1e-5, atol=1e-5)


class MemoEmbed:
    """The real encoder, each text encoded once (so two stores see the very same numbers)."""

    def __init__(self, encoder: AirRepEncoder) -> None:
        self.embed = embed_function(encoder, CONFIG)
        self.memo: dict[str, np.ndarray] = {}

    def __call__(self, rows: pa.Table) -> np.ndarray:
        hashes = rows.column("content_hash").to_pylist()
        todo = [i for i, h in enumerate(hashes) if h not in self.memo]
        if todo:
            vectors = self.embed(rows.take(pa.array(todo, pa.int64())))
            self.memo.update({hashes[i]: v for i, v in zip(todo, vectors, strict=True)})
        return np.stack([self.memo[h] for h in hashes])


@pytest.mark.parametrize("root_kind", ["file", "memory"])
def test_float16_round_trip(tmp_path, encoder, dolly_lines, root_kind) -> None:
    uri = (
        f"file://{tmp_path / 'store'}"
        if root_kind == "file"
        else f"memory://emb-{uuid.uuid4().hex[:8]}"
    )
    store = ArtifactStore(uri)
    version = import_lines(store, tmp_path, dolly_lines[:12], "dolly")
    embed = MemoEmbed(encoder)
    f32 = load_view(store, refresh(store, version, embed, StoreSpec("enc-a", "float32")).view)
    f16 = load_view(store, refresh(store, version, embed, StoreSpec("enc-a", "float16")).view)
    assert f32.embeddings.dtype == np.float32 and f16.embeddings.dtype == np.float16
    np.testing.assert_array_equal(f16.embeddings, f32.embeddings.astype(np.float16))
    # the Parquet parts hold the same numbers (schema ``embeddings``, float16 values)
    table = view_table(store, f16.view)
    assert table.schema.field("embedding").type.value_type == pa.float16()
    parts = [ref for ref in store.list(PART_STAGE) if ref.config["dtype"] == "float16"]
    stored = {
        row["content_hash"]: np.asarray(row["embedding"], dtype=np.float16)
        for part in parts
        for row in read_part(store, part).to_pylist()
    }
    for content_hash, vector in zip(f16.content_hashes, f16.embeddings, strict=True):
        np.testing.assert_array_equal(stored[content_hash], vector)
    np.testing.assert_allclose(f16.embeddings, f32.embeddings, rtol=1e-3, atol=1e-3)


def test_a_long_prompt_gets_the_same_vector_in_the_store_and_as_a_query(tmp_path, store) -> None:
    """The pipeline's store and a query embed the same text: the prompt cut to the encoder's own
    ``max_prompt_words`` (12 here, below the 256-word default), so a long-prompt example stored
    in the pool is exactly the vector it gets as a query."""
    short = AirRepEncoder.from_backbone(
        "all-MiniLM-L6-v2", max_length=MAX_LENGTH * 4, max_prompt_words=12
    )
    encoder_dir = short.save(tmp_path / "encoder")
    long_prompt = " ".join(f"word{i}" for i in range(40))
    lines = [
        json.dumps({"prompt": long_prompt + " tail words differ", "response": "a"}) + "\n",
        json.dumps({"prompt": "a short prompt", "response": "b"}) + "\n",
    ]
    version = import_lines(store, tmp_path, lines, "long")
    encoder_ref = store.get("encoder", publish_encoder(store, encoder_dir, "enc-long"))
    refresh_embeddings(store, encoder_ref, version, CONFIG)
    index, matrix = open_index(store, encoder_ref, version)
    examples = read_examples(store, version).to_pylist()
    queries = [Example(r["example_id"], r["prompt"], r["response"]) for r in examples]
    assert len(queries[0].prompt.split()) > short.max_prompt_words
    rows = index.rows_of([q.example_id for q in queries])
    np.testing.assert_array_equal(index.embed(queries), matrix.embeddings[rows])


def test_new_encoder_gets_its_own_store_and_the_old_stays_until_removed(
    tmp_path, store, encoder, encoder_dir, dolly_lines
) -> None:
    version = import_lines(store, tmp_path, dolly_lines[:8], "dolly")
    old_key = publish_encoder(store, encoder_dir, "enc-old")
    other = AirRepEncoder.from_backbone(
        "all-MiniLM-L6-v2", max_length=MAX_LENGTH, projection_seed=1
    )
    new_dir = other.save(tmp_path / "other" / "encoder")
    new_key = publish_encoder(store, new_dir, "enc-new")
    old = refresh_embeddings(store, resolve_encoder(store, old_key), version, CONFIG)
    new = refresh_embeddings(store, resolve_encoder(store, new_key), version, CONFIG)
    assert (old.encoded, new.encoded) == (8, 8) and old.view_key != new.view_key
    old_matrix = load_view(store, find_view(store, old_key, version.version))
    new_matrix = load_view(store, find_view(store, new_key, version.version))
    assert not np.allclose(old_matrix.embeddings, new_matrix.embeddings)
    # the encoder loaded from its artifact gives what the in-memory encoder gives
    direct = embed_function(encoder, CONFIG)(read_examples(store, version))
    np.testing.assert_allclose(old_matrix.embeddings, direct, rtol=1e-5, atol=1e-5)

    assert remove_encoder_embeddings(store, old_key) == 2  # one view, one part
    with pytest.raises(EmbeddingsNotFound, match="Run `airrep embed` first"):
        find_view(store, old_key, version.version)
    np.testing.assert_array_equal(
        load_view(store, find_view(store, new_key, version.version)).embeddings,
        new_matrix.embeddings,
    )


def test_bad_inputs_raise_clear_errors(tmp_path, store, dolly_lines) -> None:
    version = import_lines(store, tmp_path, dolly_lines[:4], "dolly")
    with pytest.raises(EncoderNotFound, match="no encoder checkpoint"):
        resolve_encoder(store)
    store.build("encoder", "abcdef0123", config={}, inputs=[], writer=lambda d: (d / "x").touch())
    with pytest.raises(EncoderNotFound, match=r"unknown encoder '999999'.*abcdef0123"):
        resolve_encoder(store, "999999")
    with pytest.raises(ValueError, match="holds no saved AirRepEncoder"):
        refresh_embeddings(store, resolve_encoder(store, "abcdef"), version, CONFIG)
    with pytest.raises(EmbeddingsNotFound, match="has no embeddings by encoder abcdef0123"):
        find_view(store, "abcdef0123", version.version)
    with pytest.raises(ValueError, match="dtype='bfloat16' is invalid"):
        StoreSpec("enc-a", "bfloat16")

    def wrong_shape(rows: pa.Table) -> np.ndarray:
        return np.zeros((rows.num_rows + 1, 4), np.float32)

    with pytest.raises(StorageError, match=r"embed returned shape \(5, 4\) for 4 rows"):
        refresh(store, version, wrong_shape)

    def not_finite(rows: pa.Table) -> np.ndarray:
        return np.full((rows.num_rows, 4), np.nan, np.float32)

    with pytest.raises(StorageError, match="NaN/inf"):
        refresh(store, version, not_finite)
    assert published(store, PART_STAGE) == [] and published(store, VIEW_STAGE) == []
