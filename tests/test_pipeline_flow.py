"""The pipeline as a Prefect 3 application (ephemeral test server): end to end, reruns that
recompute nothing, rebuilds that recompute only what is downstream of changed data, and cache
hits whose artifacts were deleted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airrep_core.config.pipeline import PipelineConfig
from airrep_core.examples import Example
from storage.artifacts import ArtifactStore
from storage.datasets import import_dataset
from storage.sample_data import SAMPLE_DATASETS

pytestmark = pytest.mark.prefect

STAGES = (
    "label-base",
    "label-splits",
    "label-unit",
    "labels",
    "encoder",
    "datasets",
    "embedding-part",
    "embeddings",
)


def small_config() -> PipelineConfig:
    """The ``tiny`` preset, shrunk further so that a run takes about a minute on 2 cores."""
    tiny = PipelineConfig.preset("tiny")
    return PipelineConfig.from_dict(
        {
            **tiny.to_dict(),
            "corpus": "corpus",
            "pool": "pool",
            "query_dataset": "queries",
            "pool_rows": 0,
            "encoder": {
                **tiny.encoder.to_dict(),
                "train": {**tiny.encoder.train.to_dict(), "steps": 2, "max_length": 32},
            },
        }
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path, n: int, skip: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()[skip : skip + n]]
    return rows


@pytest.fixture
def data_files(tmp_path: Path) -> dict[str, Path]:
    """Small real datasets as files: a P3 corpus, a Dolly pool and Dolly queries."""
    p3_files = sorted(SAMPLE_DATASETS["flan_p3"].paths()[0].glob("*.jsonl"))
    corpus = [r for f in p3_files[:40:4] for r in read_jsonl(f, 20)]
    dolly = SAMPLE_DATASETS["dolly"].paths()[0]
    return {
        "corpus": write_jsonl(tmp_path / "corpus.jsonl", corpus),
        "pool": write_jsonl(tmp_path / "pool.jsonl", read_jsonl(dolly, 40)),
        "queries": write_jsonl(tmp_path / "queries.jsonl", read_jsonl(dolly, 3, skip=100)),
    }


def keys_by_stage(store: ArtifactStore) -> dict[str, set[str]]:
    return {stage: {ref.key for ref in store.list(stage)} for stage in STAGES}


def run(root: str, config: PipelineConfig) -> dict:
    from flows.pipeline import pipeline_flow

    return pipeline_flow(preset="tiny", root=root, config=config, import_data=False)


def check_queries_after_pipeline(store: ArtifactStore, result: dict) -> None:
    """The user's queries on what the pipeline built: attribute a Dolly test example against
    the pool, and select examples for a GSM8K target task (the Python API of the CLI)."""
    from tasks.embedding_tasks import as_dataset_version
    from tasks.embeddings import open_index

    index, view = open_index(store, result["encoder"].resolve(), as_dataset_version(result["pool"]))
    dolly_test = read_jsonl(SAMPLE_DATASETS["dolly"].paths()[0], 1, skip=3000)[0]
    query = Example("dolly-3000", dolly_test["instruction"], dolly_test["text"])
    records = index.attribute([query], 5)
    pool_ids = set(view.example_ids.tolist())
    assert [r["rank"] for r in records if r["direction"] == "helpful"] == [1, 2, 3, 4, 5]
    assert {r["example_id"] for r in records} <= pool_ids
    gsm8k = read_jsonl(SAMPLE_DATASETS["gsm8k_test"].paths()[0], 4)
    targets = [Example(f"gsm8k-{i}", r["question"], r["answer"]) for i, r in enumerate(gsm8k)]
    selected = index.select(targets, 10)
    assert len({s.example_id for s in selected}) == 10
    assert {s.example_id for s in selected} <= pool_ids
    assert [s.order for s in selected] == sorted(s.order for s in selected)


def test_pipeline_end_to_end_then_rebuilds_only_what_changed(
    prefect_harness: None, tmp_path: Path, data_files: dict[str, Path]
) -> None:
    root = (tmp_path / "store").as_uri()
    store = ArtifactStore(root)
    for name, path in data_files.items():
        import_dataset(store, [path], name)
    config = small_config()

    first = run(root, config)
    assert first["labels"].summary["rows"] == (
        config.labels.sampling.n_splits
        * config.labels.sampling.n_subsets
        * config.labels.sampling.n_targets
    )
    assert {r["direction"] for r in first["example"]} == {"helpful", "harmful"}
    helpful = [r["score"] for r in first["example"] if r["direction"] == "helpful"]
    assert helpful == sorted(helpful, reverse=True)
    after_first = keys_by_stage(store)
    check_queries_after_pipeline(store, first)

    started = time.perf_counter()
    second = run(root, config)
    rerun_seconds = time.perf_counter() - started
    assert keys_by_stage(store) == after_first, "a rerun without data changes created artifacts"
    assert second["encoder"] == first["encoder"] and second["embeddings"] == first["embeddings"]
    print(f"rerun without changes: {rerun_seconds:.1f}s")

    # A new version of the pool: only its embeddings are new; labels and encoder are reused.
    pool_rows = read_jsonl(data_files["pool"], 40) + read_jsonl(
        SAMPLE_DATASETS["dolly"].paths()[0], 5, skip=200
    )
    import_dataset(store, [write_jsonl(data_files["pool"], pool_rows)], "pool")
    third = run(root, config)
    after_third = keys_by_stage(store)
    new = {stage: after_third[stage] - after_first[stage] for stage in STAGES}
    assert third["encoder"] == first["encoder"] and third["labels"] == first["labels"]
    assert not new["label-unit"] and not new["encoder"] and not new["labels"]
    assert len(new["embeddings"]) == 1 and third["embeddings"].summary["encoded"] <= 5 + 1

    # A new version of the corpus: labels, encoder and embeddings downstream are recomputed.
    corpus_rows = read_jsonl(data_files["corpus"], 200)[:-10]
    import_dataset(store, [write_jsonl(data_files["corpus"], corpus_rows)], "corpus")
    fourth = run(root, config)
    after_fourth = keys_by_stage(store)
    assert fourth["labels"] != third["labels"] and fourth["encoder"] != third["encoder"]
    assert after_fourth["label-unit"] > after_third["label-unit"]
    assert fourth["embeddings"].key not in after_third["embeddings"]


def test_cached_result_whose_artifact_was_deleted_is_recomputed(
    prefect_harness: None, tmp_path: Path, data_files: dict[str, Path]
) -> None:
    root = (tmp_path / "store").as_uri()
    store = ArtifactStore(root)
    for name, path in data_files.items():
        import_dataset(store, [path], name)
    config = small_config()
    first = run(root, config)
    store.delete(first["embeddings"].resolve())
    assert not first["embeddings"].exists()
    second = run(root, config)
    assert second["embeddings"].key == first["embeddings"].key
    assert second["embeddings"].exists()
    assert second["embeddings"].summary["encoded"] == 0  # the parts were still there
