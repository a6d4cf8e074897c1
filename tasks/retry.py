"""Retry policy of store-backed tasks: retry on I/O faults only, never on bad data or bugs."""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from storage.errors import ArtifactConflict, DataValidationError, StorageError

IO_RETRIES = 3
IO_RETRY_DELAYS_S = [2.0, 10.0, 30.0]


def retry_on_io_only(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry when the failure was an I/O or storage fault."""
    try:
        state.result()
    except (DataValidationError, ArtifactConflict):
        return False
    except (OSError, TimeoutError, StorageError):
        return True
    except Exception:  # anything else is a bug or bad input: fail at once
        return False
    return False


IO_RETRY_OPTIONS: dict[str, Any] = {
    "retries": IO_RETRIES,
    "retry_delay_seconds": IO_RETRY_DELAYS_S,
    "retry_condition_fn": retry_on_io_only,
}
"""``@task(**IO_RETRY_OPTIONS)``: the retry settings of every store-backed task."""
