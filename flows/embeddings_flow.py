"""The ``refresh-embeddings`` stage flow: a pool dataset embedded with an encoder (DESIGN.md §4)."""

from __future__ import annotations

from prefect import flow

from airrep_core.config.embedding import EmbeddingConfig
from tasks.embeddings import refresh_embeddings_task, sample_pool_task
from tasks.references import StepRef


@flow(
    name="refresh-embeddings",
    flow_run_name="embed-{dataset.summary[name]}-{pool_rows}-rows",
    log_prints=True,
)
def refresh_embeddings_flow(
    root: str, encoder: StepRef, dataset: StepRef, pool_rows: int, config: EmbeddingConfig
) -> tuple[StepRef, StepRef]:
    """Sample ``pool_rows`` rows of ``dataset`` (0 = all) and bring the encoder's embedding store
    of that pool up to date (only new rows are encoded). Returns ``(pool, embeddings)``."""
    pool = sample_pool_task(root, dataset, pool_rows)
    return pool, refresh_embeddings_task(root, encoder, pool, config)
