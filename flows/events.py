"""Custom Prefect events of the pipeline: a dataset got a new version.

``airrep data import`` (and the import task) emit ``airrep.dataset.updated`` when an import
changes a dataset's latest version (a new version, or a revert to a stored one); the ``rebuild`` deployment's trigger in ``prefect.yaml`` matches it and
runs the pipeline flow with the dataset name, so that only stages downstream of the changed data
recompute (every other stage finds its content key in the store).
"""

from __future__ import annotations

from prefect.events import Event, emit_event
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_URL

from storage.dataset_heads import DatasetVersion

DATASET_UPDATED = "airrep.dataset.updated"
DATASET_RESOURCE_PREFIX = "airrep.dataset."


def emit_dataset_updated(version: DatasetVersion, root: str, *, flush: bool = True) -> Event | None:
    """Emit ``airrep.dataset.updated`` for a dataset version that just became the latest.

    Resource id ``airrep.dataset.<name>``; payload: name, version (content hash), rows, root.
    Returns the event, or None when no Prefect server is configured (``PREFECT_API_URL`` unset:
    an ephemeral server has no deployment to trigger, and starting one costs seconds). ``flush``
    waits until the event is sent (needed in short-lived CLI processes).
    """
    if PREFECT_API_URL.value() is None:
        return None
    event = emit_event(
        event=DATASET_UPDATED,
        resource={
            "prefect.resource.id": f"{DATASET_RESOURCE_PREFIX}{version.name}",
            "prefect.resource.name": version.name,
            "airrep.dataset.version": version.version,
        },
        payload={
            "name": version.name,
            "version": version.version,
            "rows": version.rows,
            "root": root,
        },
    )
    if flush and event is not None:
        EventsWorker.drain_all(timeout=30)
    return event
