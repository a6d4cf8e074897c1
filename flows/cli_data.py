"""``airrep data ...``: import instruction data into versioned datasets and inspect them.

Commands: ``import PATH... --name NAME``, ``import-samples``, ``list``, ``show NAME``. Every
command takes ``--root URI`` (default ``$AIRREP_STORAGE_ROOT`` or ``file://<repo>/artifacts``).
Bad input exits with status 1 and one clear line naming the file, line and field.

An import that changes a dataset's latest version (a new version, or content that is stored but
was not the latest: a revert) emits ``airrep.dataset.updated`` to the configured Prefect server (``PREFECT_API_URL``), which triggers the ``rebuild`` deployment (``prefect.yaml``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.cli_errors import clear_errors, open_checked_store
from storage.artifacts import ArtifactStore
from storage.dataset_heads import (
    NAME_MAX_LENGTH,
    DatasetVersion,
    dataset_history,
    dataset_versions,
    find_version,
    latest_version,
    list_datasets,
)
from storage.datasets import import_dataset, read_examples
from storage.errors import StorageError
from storage.sample_data import SAMPLE_DATASETS, sample_data_dir
from storage.shapes import FieldMapping, detection_rules_text

data_app = typer.Typer(help="Import instruction data into versioned datasets and inspect them.")
console = Console()

RootOption = Annotated[
    str | None,
    typer.Option("--root", help="Storage root URI (file://, s3://); default $AIRREP_STORAGE_ROOT."),
]


def _clear_errors() -> AbstractContextManager[None]:
    """Storage and input errors end as one red line on stderr and exit status 1."""
    return clear_errors(StorageError, ValueError, FileNotFoundError)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[file]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _import_with_bar(
    progress: Progress, store: ArtifactStore, paths: Sequence[Path], name: str, **kw: Any
) -> DatasetVersion:
    task = progress.add_task(name, total=None, file="")

    def advance(done: int, total: int, current: str) -> None:
        progress.update(task, completed=done, total=total, file=current)

    return import_dataset(store, paths, name, progress=advance, **kw)


def _summary(version: DatasetVersion, seconds: float) -> str:
    if version.created:
        state = "new version"
    elif version.became_latest:
        state = "version exists; it is the latest again"
    else:
        state = "unchanged (version exists)"
    uncountable = sum(entry["uncountable"] for entry in version.skip_report)
    rest = f" (+ the unreadable rest of {uncountable} file(s))" if uncountable else ""
    return (
        f"{version.name} {version.short_version}: {version.rows:,} rows, "
        f"{version.duplicates_dropped:,} duplicates dropped, "
        f"{version.skipped:,} invalid skipped{rest}; {state} [{seconds:.1f}s]"
    )


IMPORT_HELP = "\n\n".join(
    [
        "Import PATH... as dataset NAME (format auto-detected unless the fields are named).",
        f"NAME: 1-{NAME_MAX_LENGTH} ASCII letters, digits, '_' or '-', starting with a letter or "
        "digit. Text files are UTF-8, with or without a byte-order mark. All files of one import "
        "must have the same shape. --skip-invalid counts every input record lost (a malformed "
        "JSON array loses its whole file) and keeps the report with the version (data show).",
        "Detection rules, one table (shape: the first rule whose fields a file's first "
        "recognisable record has; id: applied to each record that has the field):",
        detection_rules_text(),
    ]
)


@data_app.command("import", help=IMPORT_HELP)
def import_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or folders (JSONL, JSON, gz, CSV, Parquet).")
    ],
    name: Annotated[str, typer.Option("--name", help="Dataset name (also the rows' source).")],
    prompt_field: Annotated[
        list[str] | None,
        typer.Option("--prompt-field", help="Prompt field; repeat to join several."),
    ] = None,
    response_field: Annotated[str | None, typer.Option(help="Response field.")] = None,
    id_field: Annotated[str | None, typer.Option(help="Field holding the example id.")] = None,
    group_field: Annotated[str | None, typer.Option(help="Field holding the group.")] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            help="Skip bad rows and files; count every record lost and keep the report with "
            "the version (data show)."
        ),
    ] = False,
    root: RootOption = None,
) -> None:
    with _clear_errors():
        mapping = FieldMapping(tuple(prompt_field or ()), response_field, id_field, group_field)
        store = open_checked_store(root, writable=True)
        start = time.perf_counter()
        with _progress() as progress:
            version = _import_with_bar(
                progress, store, paths, name, mapping=mapping, skip_invalid=skip_invalid
            )
        console.print(_summary(version, time.perf_counter() - start), highlight=False)
        from flows.events import DATASET_UPDATED, emit_dataset_updated  # imports Prefect

        if version.changed and emit_dataset_updated(version, store.root.uri) is not None:
            console.print(f"emitted {DATASET_UPDATED} for {name} {version.short_version}")


@data_app.command("import-samples")
def import_samples_command(root: RootOption = None) -> None:
    """Import the sample datasets of $AIRREP_DATA_DIR (default ../shared/data)."""
    with _clear_errors():
        store = open_checked_store(root, writable=True)
        console.print(f"sample data: {sample_data_dir()}  ->  {store.root.uri}", highlight=False)
        summaries = []
        with _progress() as progress:
            for sample in SAMPLE_DATASETS.values():
                start = time.perf_counter()
                version = _import_with_bar(
                    progress, store, sample.paths(), sample.name, skip_invalid=sample.skip_invalid
                )
                summaries.append(_summary(version, time.perf_counter() - start))
                if version.changed:
                    from flows.events import emit_dataset_updated  # imports Prefect

                    emit_dataset_updated(version, store.root.uri)
        for line in summaries:
            console.print(line, highlight=False)


@data_app.command("list")
def list_command(root: RootOption = None) -> None:
    """List datasets with their latest version."""
    with _clear_errors():
        store = open_checked_store(root, writable=False)
        table = Table(title=f"datasets in {store.root.uri}")
        for column in ("name", "latest", "rows", "versions", "created (UTC)"):
            table.add_column(column)
        for name in list_datasets(store):
            versions = dataset_versions(store, name)
            latest = latest_version(store, name)
            table.add_row(
                name,
                latest.short_version,
                f"{latest.rows:,}",
                str(len(versions)),
                latest.created_at[:19],
            )
        console.print(table)


@data_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[
        str | None, typer.Option(help="Version (hash prefix, >= 6 digits); default the latest.")
    ] = None,
    rows: Annotated[int, typer.Option(help="How many example rows to print.")] = 3,
    root: RootOption = None,
) -> None:
    """Show a dataset's history (each import that set its latest version, oldest first), its row
    counts by source and group, and a few rows."""
    with _clear_errors():
        store = open_checked_store(root, writable=False)
        chosen = find_version(store, name, version) if version else latest_version(store, name)
        history = dataset_history(store, name)
        versions = Table(title=f"history of {name} (the last row is the latest)")
        for column in ("at (UTC)", "event", "version", "rows", "duplicates", "skipped", ""):
            versions.add_column(column)
        for event in history:
            v = event.version
            mark = "<- shown" if v.version == chosen.version else ""
            versions.add_row(
                event.at[:19],
                event.kind,
                v.short_version,
                f"{v.rows:,}",
                f"{v.duplicates_dropped:,}",
                f"{v.skipped:,}",
                mark,
            )
        console.print(versions)
        if chosen.skip_report:
            console.print(_skip_table(chosen))
        examples = read_examples(store, chosen)
        counts = examples.group_by(["source", "group"]).aggregate([("example_id", "count")])
        groups = Table(title=f"{name} {chosen.short_version}: {examples.num_rows:,} rows")
        for column in ("source", "group", "rows"):
            groups.add_column(column)
        for record in sorted(counts.to_pylist(), key=lambda r: (r["source"], r["group"] or "")):
            groups.add_row(
                record["source"], record["group"] or "-", f"{record['example_id_count']:,}"
            )
        console.print(groups)
        sample = Table(title="first rows")
        for column in ("example_id", "group", "prompt", "response"):
            sample.add_column(column, overflow="fold", max_width=60)
        for record in examples.slice(0, rows).to_pylist():
            sample.add_row(
                record["example_id"],
                record["group"] or "-",
                _clip(record["prompt"]),
                _clip(record["response"]),
            )
        console.print(sample)


def _skip_table(version: DatasetVersion) -> Table:
    """The skip report of ``version`` by file: records lost, problems and the first problem."""
    table = Table(title=f"skipped in {version.short_version}: {version.skipped:,} records lost")
    for column in ("file", "records lost", "problems", "first problem"):
        table.add_column(column, overflow="fold")
    for entry in version.skip_report:
        lost = f"{entry['records']:,}" + (" + unreadable rest" if entry["uncountable"] else "")
        table.add_row(entry["file"], lost, f"{entry['problems']:,}", _clip(entry["first"]))
    return table


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
