"""What the Prefect UI and the terminal show of a run: run logger, progress, table, markdown
and link artifacts, and one terminal row per stage.

Every helper works outside a Prefect run too (tests, notebooks): logs then go to the
``airrep`` logger and artifacts are skipped. Inside ``terminal_progress`` (``airrep run``), each
``stage`` and each ``Progress`` also draws a row of one rich display in the terminal: a stage's
row stays with its time when done, a ``Progress`` row (a label shard, the encoder's training
steps, an embedding pass) is removed when its work is done.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress

from tasks.references import StepRef

_FALLBACK_LOGGER = logging.getLogger("airrep")
_terminal: RichProgress | None = None
"""The terminal display of the enclosing ``terminal_progress``, if any (one per process)."""


@contextmanager
def terminal_progress(console: Console | None = None) -> Iterator[None]:
    """Draw the ``stage`` and ``Progress`` rows of the enclosed code in the terminal."""
    global _terminal
    display = RichProgress(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with display:
        _terminal = display
        try:
            yield
        finally:
            _terminal = None


@contextmanager
def stage(description: str) -> Iterator[None]:
    """One terminal row for a pipeline stage: a spinner while it runs, its time once done (a
    no-op outside ``terminal_progress``)."""
    display = _terminal
    if display is None:
        yield
        return
    row = display.add_task(description, total=None)
    try:
        yield
    except BaseException:
        display.update(row, description=f"[red]{description}: failed")
        display.stop_task(row)
        raise
    finally:
        # the rows of the stage's units (one that never reported its end included) go with it
        for task in display.tasks:
            if task.id > row:
                display.remove_task(task.id)
    display.update(row, total=1, completed=1)


def in_prefect_run() -> bool:
    """Whether the caller runs inside a Prefect flow or task run."""
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a run (shown in the UI), else the ``airrep`` logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return _FALLBACK_LOGGER


def artifact_key(*parts: str) -> str:
    """A valid Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]


class Progress:
    """Progress of one unit of work: a Prefect progress artifact updated at most every
    ``min_interval_s`` seconds (and at the end), and a terminal row inside ``terminal_progress``."""

    def __init__(self, description: str, min_interval_s: float = 2.0) -> None:
        self.description = description
        self.min_interval_s = min_interval_s
        self._artifact_id = None
        self._last_update = 0.0
        if in_prefect_run():
            self._artifact_id = create_progress_artifact(progress=0.0, description=description)
        self._display = _terminal
        self._row = None
        if self._display is not None:
            self._row = self._display.add_task(f"  {description}", total=None)

    def update(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units."""
        finished = done >= total
        if self._display is not None and self._row is not None:
            if finished:
                self._display.remove_task(self._row)
                self._row = None
            else:
                self._display.update(self._row, completed=done, total=total)
        now = time.monotonic()
        if self._artifact_id is None or (
            not finished and now - self._last_update < self.min_interval_s
        ):
            return
        self._last_update = now
        update_progress_artifact(self._artifact_id, progress=100.0 * done / max(total, 1))


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    """A table artifact (one dict per row) under ``key``; a no-op outside a run."""
    if in_prefect_run() and rows:
        create_table_artifact(
            key=artifact_key(key), table=[dict(r) for r in rows], description=description
        )


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact (reports, charts as links) under ``key``; a no-op outside a run."""
    if in_prefect_run():
        create_markdown_artifact(key=artifact_key(key), markdown=markdown, description=description)


def publish_link(ref: StepRef, description: str = "") -> None:
    """A link artifact to the artifact folder in the store; a no-op outside a run."""
    if in_prefect_run():
        create_link_artifact(
            key=artifact_key(ref.stage, "artifact"),
            link=ref.uri,
            link_text=f"{ref.stage}/{ref.key[:12]}",
            description=description or f"{ref.stage} artifact in {ref.root}",
        )
