"""Prefect cache policy for steps whose outputs live in the artifact store.

The store is the cache (DESIGN.md §4): each step skips work whose content key exists. Prefect's
own cache only keeps the small ``StepRef`` results, keyed on the task's inputs (configs and input
references) and source. Before a cached result is reused, every artifact it references is checked
in its store; a cached reference to a deleted artifact is a miss, so the step runs and recomputes.

Cache-key records and results are kept in separate folders (``PREFECT_HOME``-relative by
default): Prefect misbehaves when both share one folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext

from tasks.references import step_refs
from tasks.retry import IO_RETRY_OPTIONS

log = logging.getLogger("airrep.caching")


def cache_key_folder() -> Path:
    """Where cache-key records go: ``$AIRREP_PREFECT_CACHE_KEYS`` or ``~/.airrep/prefect-cache-keys``."""
    configured = os.environ.get("AIRREP_PREFECT_CACHE_KEYS")
    folder = Path(configured) if configured else Path.home() / ".airrep" / "prefect-cache-keys"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class StoreVerifiedInputs(CachePolicy):
    """Cache on (task source, inputs); a hit counts only while its artifacts still exist."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        key = (INPUTS + TASK_SOURCE).compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        if key is None:
            return None
        result_store = task_ctx.result_store  # already configured with this policy's key storage
        try:
            if not result_store.exists(key):
                return key
            cached = result_store.read(key).result
        except Exception as e:  # an unreadable cache entry is a miss, never a failure
            log.warning("cache entry %s unreadable (%s): recomputing", key, e)
            return None
        missing = [ref for ref in step_refs(cached) if not ref.exists()]
        if missing:
            log.info(
                "cached result of %s references deleted artifacts (%s): recomputing",
                task_ctx.task.name,
                ", ".join(f"{r.stage}/{r.key[:12]}" for r in missing),
            )
            return None
        return key


def store_verified_cache() -> StoreVerifiedInputs:
    """The cache policy of every store-backed task (key records in their own folder)."""
    return StoreVerifiedInputs().configure(key_storage=cache_key_folder())


def store_task(
    name: str, run_name: str | None = None, *, gpu: bool = False, timeout_h: float | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """``@task`` of a step whose result is an artifact in the store: ``store_verified_cache``,
    the IO retries (``IO_RETRY_OPTIONS``), the run name template ``run_name``; ``gpu`` adds the
    ``gpu`` tag (a concurrency limit on it bounds GPU use), ``timeout_h`` a timeout in hours."""
    options: dict[str, Any] = {"name": name, "cache_policy": store_verified_cache()}
    if run_name is not None:
        options["task_run_name"] = run_name
    if gpu:
        options["tags"] = ["gpu"]
    if timeout_h is not None:
        options["timeout_seconds"] = int(timeout_h * 3600)
    return task(**options, **IO_RETRY_OPTIONS)
