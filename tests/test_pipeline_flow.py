"""The pipeline as a Prefect 3 application (ephemeral test server): end to end with its
evaluation stage, reruns that recompute nothing, rebuilds that recompute only what is downstream
of changed data (pool, one evaluation set, corpus), and cache hits whose artifacts were deleted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pytest

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.pipeline import PipelineConfig
from airrep_core.data.examples import Example
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
    "lds-ground-truth",
    "lds-scores",
    "evaluation-report",
)
EVAL_METHODS = ("airrep", "airrep_mean", "tfidf")


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
            "evaluation": EvaluationConfig.preset(
                "tiny",
                eval_sets=("eval_a", "eval_b"),
                sampling={"pool_size": 24, "n_test": 6, "n_subsets": 4, "subset_size": 8},
                noise_subsets=2,
                methods=EVAL_METHODS,
                classification_tasks=(),
                selection_methods=(),
            ),
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
    """Small real datasets as files: a P3 corpus, a Dolly pool, Dolly queries and two Dolly
    evaluation sets."""
    p3_files = sorted(SAMPLE_DATASETS["flan_p3"].paths()[0].glob("*.jsonl"))
    corpus = [r for f in p3_files[:40:4] for r in read_jsonl(f, 20)]
    dolly = SAMPLE_DATASETS["dolly"].paths()[0]
    return {
        "corpus": write_jsonl(tmp_path / "corpus.jsonl", corpus),
        "pool": write_jsonl(tmp_path / "pool.jsonl", read_jsonl(dolly, 40)),
        "queries": write_jsonl(tmp_path / "queries.jsonl", read_jsonl(dolly, 3, skip=100)),
        "eval_a": write_jsonl(tmp_path / "eval_a.jsonl", read_jsonl(dolly, 40, skip=300)),
        "eval_b": write_jsonl(tmp_path / "eval_b.jsonl", read_jsonl(dolly, 40, skip=400)),
    }


def keys_by_stage(store: ArtifactStore) -> dict[str, set[str]]:
    return {stage: {ref.key for ref in store.list(stage)} for stage in STAGES}


def ground_truth_keys(store: ArtifactStore) -> dict[str, set[str]]:
    """Evaluation set -> keys of its ground-truth artifacts."""
    found: dict[str, set[str]] = {}
    for ref in store.list("lds-ground-truth"):
        found.setdefault(ref.config["eval_set"], set()).add(ref.key)
    return found


def check_evaluation(store: ArtifactStore, result: dict) -> None:
    """The report of the evaluation stage has every method's LDS on both sets."""
    report = result["evaluation"].resolve()
    lds = pl.read_parquet(store.local_dir(report) / "lds.parquet")
    pairs = set(zip(lds["eval_set"], lds["method"], strict=True))
    assert {(s, m) for s in ("eval_a", "eval_b") for m in EVAL_METHODS} <= pairs
    assert lds["lds"].is_between(-1.0, 1.0).all()
    assert ("eval_a", "noise ceiling") in pairs


def run(root: str, config: PipelineConfig) -> dict:
    from flows.pipeline import pipeline_flow

    return pipeline_flow(preset="tiny", root=root, config=config, import_data=False)


def check_queries_after_pipeline(store: ArtifactStore, result: dict) -> None:
    """The user's queries on what the pipeline built: attribute a Dolly test example against
    the pool, and select examples for a GSM8K target task (the Python API of the CLI)."""
    from tasks.embeddings import as_dataset_version, open_index

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


class FirstRun(NamedTuple):
    """A store holding every data file as a dataset of its name, and the pipeline's first run."""

    root: str
    store: ArtifactStore
    config: PipelineConfig
    result: dict


@pytest.fixture
def first_run(prefect_harness: None, tmp_path: Path, data_files: dict[str, Path]) -> FirstRun:
    """A fresh store under ``tmp_path`` with ``data_files`` imported, and the pipeline run on it
    once with ``small_config()``."""
    root = (tmp_path / "store").as_uri()
    store = ArtifactStore(root)
    for name, path in data_files.items():
        import_dataset(store, [path], name)
    config = small_config()
    return FirstRun(root, store, config, run(root, config))


def with_more_dolly(data_files: dict[str, Path], name: str, skip: int) -> list[dict]:
    """The 40 rows of data file ``name`` and 5 more Dolly rows (after the first ``skip``)."""
    return read_jsonl(data_files[name], 40) + read_jsonl(
        SAMPLE_DATASETS["dolly"].paths()[0], 5, skip=skip
    )


def rerun_with(
    first_run: FirstRun, data_files: dict[str, Path], name: str, rows: list[dict]
) -> tuple[dict, dict[str, set[str]]]:
    """Write ``rows`` to data file ``name``, import them as a new version of dataset ``name``
    and run the pipeline again: its result and the artifact keys by stage after it."""
    store = first_run.store
    import_dataset(store, [write_jsonl(data_files[name], rows)], name)
    return run(first_run.root, first_run.config), keys_by_stage(store)


def test_pipeline_end_to_end_then_rebuilds_only_what_changed(
    first_run: FirstRun, data_files: dict[str, Path]
) -> None:
    root, store, config, first = first_run
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
    check_evaluation(store, first)

    started = time.perf_counter()
    second = run(root, config)
    rerun_seconds = time.perf_counter() - started
    assert keys_by_stage(store) == after_first, "a rerun without data changes created artifacts"
    assert second["encoder"] == first["encoder"] and second["embeddings"] == first["embeddings"]
    assert second["evaluation"] == first["evaluation"]
    print(f"rerun without changes: {rerun_seconds:.1f}s")

    # A new version of the pool: only its embeddings are new; labels and encoder are reused.
    third, after_third = rerun_with(
        first_run, data_files, "pool", with_more_dolly(data_files, "pool", 200)
    )
    new = {stage: after_third[stage] - after_first[stage] for stage in STAGES}
    assert third["encoder"] == first["encoder"] and third["labels"] == first["labels"]
    assert not new["label-unit"] and not new["encoder"] and not new["labels"]
    assert len(new["embeddings"]) == 1 and third["embeddings"].summary["encoded"] <= 5 + 1
    assert not new["lds-ground-truth"] and not new["lds-scores"]

    # A new version of one evaluation set: only its ground truth, its scores and the report.
    truths_before = ground_truth_keys(store)
    fourth, after_fourth = rerun_with(
        first_run, data_files, "eval_a", with_more_dolly(data_files, "eval_a", 500)
    )
    new = {stage: after_fourth[stage] - after_third[stage] for stage in STAGES}
    truths_after = ground_truth_keys(store)
    assert truths_after["eval_b"] == truths_before["eval_b"]
    assert len(truths_after["eval_a"] - truths_before["eval_a"]) == 1
    assert len(new["lds-scores"]) == len(EVAL_METHODS)
    assert {store.get("lds-scores", k).inputs[0] for k in new["lds-scores"]} == (
        truths_after["eval_a"] - truths_before["eval_a"]
    )
    assert len(new["evaluation-report"]) == 1
    assert fourth["labels"] == third["labels"] and fourth["encoder"] == third["encoder"]
    assert not new["encoder"] and not new["embeddings"] and not new["label-base"]
    check_evaluation(store, fourth)

    # A new version of the corpus: labels, encoder, embeddings and every ground truth downstream
    # (the base LM warms up on the corpus) are recomputed.
    corpus_rows = read_jsonl(data_files["corpus"], 200)[:-10]
    fifth, after_fifth = rerun_with(first_run, data_files, "corpus", corpus_rows)
    assert fifth["labels"] != fourth["labels"] and fifth["encoder"] != fourth["encoder"]
    assert after_fifth["label-unit"] > after_fourth["label-unit"]
    assert fifth["embeddings"].key not in after_fourth["embeddings"]
    truths_fifth = ground_truth_keys(store)
    assert all(len(truths_fifth[s] - truths_after[s]) == 1 for s in ("eval_a", "eval_b"))
    assert fifth["evaluation"].key not in after_fourth["evaluation-report"]


def test_cached_result_whose_artifact_was_deleted_is_recomputed(first_run: FirstRun) -> None:
    root, store, config, first = first_run
    store.delete(first["embeddings"].resolve())
    assert not first["embeddings"].exists()
    second = run(root, config)
    assert second["embeddings"].key == first["embeddings"].key
    assert second["embeddings"].exists()
    assert second["embeddings"].summary["encoded"] == 0  # the parts were still there
