"""Prefect tasks of the embedding store and of attribution queries over it."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from airrep_core.config.embedding import EmbeddingConfig, SearchConfig
from airrep_core.examples import Example
from storage.datasets import DatasetVersion, read_examples, sample_dataset
from tasks.caching import store_verified_cache
from tasks.data_tasks import dataset_ref
from tasks.embeddings import open_index, refresh_embeddings
from tasks.monitoring import Progress, publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS


def as_dataset_version(ref: StepRef) -> DatasetVersion:
    """The ``DatasetVersion`` of a dataset ``StepRef``."""
    artifact = ref.resolve()
    return DatasetVersion(artifact.config["name"], artifact.key, artifact)


@task(
    name="sample-pool",
    task_run_name="sample-{n_rows}-rows",
    cache_policy=store_verified_cache(),
    **IO_RETRY_OPTIONS,
)
def sample_pool_task(root: str, dataset: StepRef, n_rows: int, seed: int = 0) -> StepRef:
    """A deterministic sample of ``n_rows`` rows of the dataset (itself when ``n_rows`` is 0)."""
    version = as_dataset_version(dataset)
    if n_rows == 0:
        return dataset
    return dataset_ref(root, sample_dataset(open_store(root), version, n_rows, seed=seed))


@task(
    name="refresh-embeddings",
    task_run_name="embed-{dataset.summary[name]}",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    **IO_RETRY_OPTIONS,
)
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
