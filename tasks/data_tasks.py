"""Prefect task of data import: a dataset folder/file into a versioned dataset in the store."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.dataset_heads import DatasetVersion, find_version, latest_version
from storage.datasets import import_dataset
from storage.shapes import FieldMapping
from tasks.monitoring import publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS


def dataset_ref(root: str, version: DatasetVersion) -> StepRef:
    """The ``StepRef`` of a dataset version (summary: name, version, rows)."""
    store = open_store(root)
    return StepRef.of(
        store, version.ref, name=version.name, version=version.version, rows=version.rows
    )


def imported_ref(root: str, version: DatasetVersion) -> tuple[StepRef, bool]:
    """An import's outcome as a task returns it: the version's ref and whether the dataset's
    latest version changed (a new version, or a revert to a stored one); logs the version."""
    run_logger().info(
        "dataset %s: version %s, %d rows (%s)",
        version.name,
        version.short_version,
        version.rows,
        "new" if version.created else "unchanged",
    )
    return dataset_ref(root, version), version.changed


@task(
    name="import-dataset",
    task_run_name="import-{name}",
    cache_policy=NO_CACHE,
    **IO_RETRY_OPTIONS,
)
def import_dataset_task(
    root: str, paths: list[str], name: str, skip_invalid: bool = False
) -> tuple[StepRef, bool]:
    """Import ``paths`` as dataset ``name``; returns the version's ref and whether the dataset's
    latest version changed (a new version, or a revert to a stored one).

    Not cached by Prefect: the source files may change under the same paths, and an unchanged
    import costs one parse and creates nothing (the version is the content hash).
    """
    store = open_store(root)
    version = import_dataset(store, paths, name, mapping=FieldMapping(), skip_invalid=skip_invalid)
    publish_table(
        f"dataset-{name}",
        [{"name": name, "version": version.version, "rows": version.rows, "new": version.created}],
        f"Dataset {name}",
    )
    return imported_ref(root, version)


@task(name="resolve-dataset", task_run_name="resolve-{name}", cache_policy=NO_CACHE)
def resolve_dataset_task(root: str, name: str, version: str = "") -> StepRef:
    """The latest (or the given) version of dataset ``name`` already in the store (never cached:
    "latest" changes when a new version is imported)."""
    store = open_store(root)
    found = find_version(store, name, version) if version else latest_version(store, name)
    return dataset_ref(root, found)
