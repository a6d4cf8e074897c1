"""``airrep embed | attribute | group-influence | select``: the embedding store and its queries.

``register(app)`` adds the commands to the ``airrep`` app. Every command takes ``--root URI``,
``--encoder KEY`` (an ``encoder`` artifact key prefix, default the newest) and ``--dataset NAME``
(``--version`` prefix, default the latest). Bad input (unknown encoder, dataset without
embeddings, empty query, budget larger than the pool, a bad row in a file) exits with status 1 and
one line naming the problem.

Query files (``--queries``, ``--target``, ``--targets``) are read like ``airrep data import``
reads data (JSONL/JSON/CSV/Parquet, formats auto-detected); ids are the file's ids or
``<file stem>:<row>``. Subset files (``--subset``) list example ids, one per line (``.txt``) or
as ``example_id``/``id`` fields of JSONL records.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from airrep_core.config.embedding import (
    EMBEDDING_DTYPES,
    INDEX_KINDS,
    EmbeddingConfig,
    SearchConfig,
)
from airrep_core.config.encoder import POOLINGS
from airrep_core.data.examples import Example
from airrep_core.errors import AirRepError
from flows.cli_errors import check_output_path, clear_errors, open_checked_store
from storage.artifacts import ArtifactStore
from storage.dataset_heads import (
    DatasetVersion,
    find_version,
    latest_version,
    validate_dataset_name,
)
from storage.datasets import read_examples
from storage.errors import DataValidationError, StorageError
from storage.formats import file_stem, input_files, read_records
from storage.shapes import file_rows

if TYPE_CHECKING:
    from airrep_core.attribution.index import AttributionIndex

OUTPUT_FORMATS = ("table", "jsonl", "parquet")
PRESETS = ("tiny", "mini", "paper")
console = Console()
error_console = Console(stderr=True)

RootOption = Annotated[
    str | None,
    typer.Option("--root", help="Storage root URI (file://, s3://); default $AIRREP_STORAGE_ROOT."),
]
EncoderOption = Annotated[
    str | None,
    typer.Option("--encoder", help="Encoder artifact key (>= 6 hex digits); default the newest."),
]
DatasetOption = Annotated[str, typer.Option("--dataset", help="Dataset whose embeddings to use.")]
VersionOption = Annotated[
    str | None, typer.Option("--version", help="Dataset version prefix; default the latest.")
]
PresetOption = Annotated[str, typer.Option("--preset", help=f"Config preset, one of {PRESETS}.")]
DtypeOption = Annotated[
    str | None,
    typer.Option("--dtype", help=f"Embedding dtype of the view, one of {EMBEDDING_DTYPES}."),
]
FormatOption = Annotated[
    str, typer.Option("--format", help=f"Output format, one of {OUTPUT_FORMATS}.")
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", help="Output file (jsonl/parquet); default stdout.")
]


def _clear_errors() -> AbstractContextManager[None]:
    """Input, storage and config errors end as one red line on stderr and exit status 1."""
    return clear_errors(
        StorageError, AirRepError, ValueError, TypeError, KeyError, FileNotFoundError
    )


def _dataset(store: ArtifactStore, name: str, version: str | None) -> DatasetVersion:
    return find_version(store, name, version) if version else latest_version(store, name)


def _search_config(preset: str, **overrides: Any) -> SearchConfig:
    return SearchConfig.preset(preset, **{k: v for k, v in overrides.items() if v is not None})


def _open_index(
    store: ArtifactStore,
    encoder: str | None,
    dataset: str,
    version: str | None,
    config: SearchConfig,
    dtype: str | None,
) -> tuple[AttributionIndex, DatasetVersion]:
    """The attribution index of a query command (``--encoder``, ``--dataset``/``--version``,
    ``--dtype``) and the dataset version it searches."""
    from tasks.embeddings import open_index, resolve_encoder  # imports torch

    encoder_ref = resolve_encoder(store, encoder)
    chosen = _dataset(store, dataset, version)
    attribution, _ = open_index(store, encoder_ref, chosen, config, dtype=dtype)
    return attribution, chosen


# ---- input files -----------------------------------------------------------------------------


def read_queries(path: Path) -> list[Example]:
    """The examples of a query file (any format ``airrep data import`` reads), in file order.

    Raises ``DataValidationError`` naming the file, row and field, or ``ValueError`` when the
    file holds no query.
    """
    queries: list[Example] = []
    for file in input_files([path]):
        for row in file_rows(read_records(file), None).items:
            if isinstance(row, DataValidationError):
                raise row
            example_id = row.example_id or f"{file_stem(row.file)}:{row.row}"
            queries.append(Example(example_id, row.prompt, row.response, "query", row.group))
    if not queries:
        raise ValueError(f"{path}: no queries in the file")
    return queries


def read_subset_ids(path: Path) -> list[str]:
    """Example ids listed in ``path``: one per line, or the ``example_id``/``id`` of JSONL records."""
    if not path.is_file():
        raise FileNotFoundError(f"no such subset file: {path}")
    ids: list[str] = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if path.suffix in (".jsonl", ".ndjson"):
            try:
                record = json.loads(text)
            except ValueError as e:
                raise DataValidationError(str(path), line_number, None, f"bad JSON: {e}") from e
            value = (
                record.get("example_id", record.get("id")) if isinstance(record, dict) else record
            )
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise DataValidationError(
                    str(path), line_number, "example_id", "expected a string id"
                )
            text = str(value)
        ids.append(text)
    if not ids:
        raise ValueError(f"{path}: the subset file lists no example ids")
    return ids


def _queries_from_options(
    prompt: str | None, response: str | None, path: Path | None, what: str
) -> list[Example]:
    if path is not None and (prompt is not None or response is not None):
        raise ValueError(f"give either --{what} FILE or --prompt/--response, not both")
    if path is not None:
        return read_queries(path)
    if prompt is None and response is None:
        raise ValueError(f"give a query: --prompt and --response, or --{what} FILE")
    return [Example("query", prompt or "", response or "", "query")]


# ---- output ----------------------------------------------------------------------------------


def _emit(records: list[dict[str, Any]], fmt: str, output: Path | None, title: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"--format {fmt!r} is invalid; allowed: {OUTPUT_FORMATS}")
    if fmt == "table":
        table = Table(title=title)
        columns = [c for c in records[0] if c != "response"] if records else []
        for column in columns:
            table.add_column(column, overflow="fold", max_width=60)
        for record in records:
            table.add_row(*(_cell(record[c]) for c in columns))
        target = Console(file=output.open("w", encoding="utf-8")) if output else console
        target.print(table)
        return
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.write_text(text, encoding="utf-8")
        return
    if output is None:
        raise ValueError("--format parquet needs --output FILE")
    pq.write_table(pa.Table.from_pylist(records), output)


def _each_example_once(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attribution records without a query's harmful records of examples that it lists as
    helpful (the top and the bottom of a small pool meet in the middle)."""
    helpful = {(r["query_id"], r["example_id"]) for r in records if r["direction"] == "helpful"}
    return [
        r
        for r in records
        if r["direction"] == "helpful" or (r["query_id"], r["example_id"]) not in helpful
    ]


def _note_missing(records: list[dict[str, Any]], queries: int, expected: int, index: str) -> None:
    """A note when an approximate search found fewer than ``expected`` examples somewhere."""
    found: dict[tuple[str, str], int] = {}
    for r in records:
        found[(r["query_id"], r["direction"])] = found.get((r["query_id"], r["direction"]), 0) + 1
    short = 2 * queries - sum(1 for n in found.values() if n >= expected)
    if short and index != "exact":
        _note(
            f"the {index} index found fewer than {expected} examples in {short} of "
            f"{2 * queries} lists (query x direction); --index exact lists them all"
        )


def _note(text: str) -> None:
    error_console.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    text = "" if value is None else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _with_text(
    records: list[dict[str, Any]], store: ArtifactStore, dataset: DatasetVersion
) -> None:
    """Add each record's training example prompt and response."""
    examples = read_examples(store, dataset)
    by_id = dict(
        zip(
            examples.column("example_id").to_pylist(),
            zip(
                examples.column("prompt").to_pylist(),
                examples.column("response").to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )
    for record in records:
        record["prompt"], record["response"] = by_id[record["example_id"]]


# ---- commands --------------------------------------------------------------------------------


def embed_command(
    dataset: DatasetOption,
    version: VersionOption = None,
    encoder: EncoderOption = None,
    preset: PresetOption = "mini",
    dtype: DtypeOption = None,
    part_rows: Annotated[int | None, typer.Option(help="Rows per stored part.")] = None,
    root: RootOption = None,
) -> None:
    """Embed a dataset version with an encoder checkpoint (only rows not embedded yet)."""
    with _clear_errors():
        store = open_checked_store(root, writable=True)
        from tasks.embeddings import refresh_embeddings, resolve_encoder  # imports torch

        encoder_ref = resolve_encoder(store, encoder)
        chosen = _dataset(store, dataset, version)
        overrides = {"dtype": dtype, "part_rows": part_rows}
        config = EmbeddingConfig.preset(
            preset, **{k: v for k, v in overrides.items() if v is not None}
        )

        def progress(done: int, total: int) -> None:
            console.print(f"  encoded {done:,}/{total:,} new rows", highlight=False)

        result = refresh_embeddings(store, encoder_ref, chosen, config, progress=progress)
        state = "new view" if result.created else "view exists"
        console.print(
            f"{chosen.name} {chosen.short_version} by encoder {encoder_ref.key[:12]} ({config.dtype}): "
            f"{result.rows:,} rows, {result.encoded:,} encoded, {result.reused:,} reused, "
            f"{result.parts_written} parts written; {state} {result.view_key[:12]} [{result.seconds:.1f}s]",
            highlight=False,
            soft_wrap=True,
        )


def attribute_command(
    dataset: DatasetOption,
    prompt: Annotated[str | None, typer.Option(help="Query prompt.")] = None,
    response: Annotated[str | None, typer.Option(help="Query response.")] = None,
    queries: Annotated[
        Path | None, typer.Option("--queries", help="File of queries (JSONL/CSV/Parquet ...).")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Examples per query and direction.")] = 10,
    index: Annotated[str, typer.Option(help=f"Search, one of {INDEX_KINDS}.")] = "exact",
    version: VersionOption = None,
    encoder: EncoderOption = None,
    dtype: DtypeOption = None,
    preset: PresetOption = "mini",
    fmt: FormatOption = "table",
    output: OutputOption = None,
    root: RootOption = None,
) -> None:
    """The top-k most helpful and most harmful training examples of each query."""
    with _clear_errors():
        store = open_checked_store(root, writable=False)
        query_list = _queries_from_options(prompt, response, queries, "queries")
        if k < 1:
            raise ValueError(f"--k {k} is invalid; allowed: 1 or more")
        config = _search_config(preset, k=k, index=index)
        attribution, chosen = _open_index(store, encoder, dataset, version, config, dtype)
        per_direction = min(k, -(-attribution.rows // 2))
        if per_direction < k:
            _note(
                f"--k {k} is more than half of the {attribution.rows:,} {chosen.name} examples: "
                f"listing {per_direction} per direction, each example once"
            )
        found = attribution.attribute(query_list, per_direction)
        _note_missing(found, len(query_list), per_direction, index)
        records = _each_example_once(found)
        _with_text(records, store, chosen)
        _emit(records, fmt, output, f"attribution on {chosen.name} {chosen.short_version}")


def group_influence_command(
    dataset: DatasetOption,
    subset: Annotated[Path, typer.Option("--subset", help="File of example ids (the group S).")],
    prompt: Annotated[str | None, typer.Option(help="Target prompt.")] = None,
    response: Annotated[str | None, typer.Option(help="Target response.")] = None,
    targets: Annotated[Path | None, typer.Option("--targets", help="File of targets.")] = None,
    pooling: Annotated[str, typer.Option(help=f"Group pooling, one of {POOLINGS}.")] = "attention",
    version: VersionOption = None,
    encoder: EncoderOption = None,
    dtype: DtypeOption = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    root: RootOption = None,
) -> None:
    """The group score f(x, S) of a subset S of the dataset for each target x."""
    with _clear_errors():
        store = open_checked_store(root, writable=False)
        target_list = _queries_from_options(prompt, response, targets, "targets")
        ids = read_subset_ids(subset)
        config = SearchConfig(pooling=pooling)
        attribution, _ = _open_index(store, encoder, dataset, version, config, dtype)
        records = attribution.group_influence(ids, target_list, source=str(subset))
        _emit(records, fmt, output, f"group influence of {subset.name} ({len(ids)} examples)")


def select_command(
    dataset: DatasetOption,
    target: Annotated[Path, typer.Option("--target", help="File of the target task's examples.")],
    budget: Annotated[int, typer.Option("--budget", help="Examples to select.")],
    output: Annotated[
        Path, typer.Option("--output", help="Selected examples (JSONL, importable).")
    ] = Path("selection.jsonl"),
    import_as: Annotated[
        str | None, typer.Option("--import-as", help="Also import the selection as this dataset.")
    ] = None,
    version: VersionOption = None,
    encoder: EncoderOption = None,
    dtype: DtypeOption = None,
    preset: PresetOption = "mini",
    root: RootOption = None,
) -> None:
    """Select BUDGET pool examples for a target task (best rank over its examples, round-robin)."""
    with _clear_errors():
        if import_as is not None:
            validate_dataset_name(import_as)  # before anything is read or written
        check_output_path(output)
        store = open_checked_store(root, writable=True)
        target_list = read_queries(target)
        config = _search_config(preset)
        attribution, chosen = _open_index(store, encoder, dataset, version, config, dtype)
        from tasks.embeddings import write_selection  # imports torch

        start = time.perf_counter()
        selected = attribution.select(target_list, budget)
        path, imported = write_selection(store, chosen, selected, output, import_as=import_as)
        message = (
            f"selected {len(selected):,} of {attribution.rows:,} {chosen.name} examples for "
            f"{len(target_list):,} targets -> {path}"
        )
        if imported is not None:
            message += f"; imported as {imported.name} {imported.short_version}"
        console.print(
            f"{message} [{time.perf_counter() - start:.1f}s]", highlight=False, soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    """Add ``embed``, ``attribute``, ``group-influence`` and ``select`` to ``app``."""
    app.command("embed")(embed_command)
    app.command("attribute")(attribute_command)
    app.command("group-influence")(group_influence_command)
    app.command("select")(select_command)
