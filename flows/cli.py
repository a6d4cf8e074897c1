"""The ``airrep`` command-line interface.

Commands by what users do: ``run`` (the pipeline on embedded defaults), ``data`` (import and
inspect datasets), ``embed`` / ``attribute`` / ``group-influence`` / ``select`` (queries over the
embedding store), ``bench`` (LDS evaluation against baselines), ``store gc`` (leftovers of killed
builds). ``airrep COMMAND --help`` explains each one; failures end in one line
(``flows/cli_errors.py``), ``--debug`` shows the traceback.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from flows import cli_query
from flows.cli_bench import bench_app
from flows.cli_data import data_app
from flows.cli_errors import GuardedTyper, open_checked_store
from flows.cli_store import store_app
from tasks.references import StepRef, open_store

app = GuardedTyper(
    help=(
        "AirRep training data attribution pipeline: import instruction data, generate labels by "
        "fine-tuning target LMs on subsets, train the AirRep encoder, embed the training pool, "
        "and answer attribution and data-selection queries."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(store_app, name="store")
cli_query.register(app)
console = Console()


@app.command("run")
def run_command(
    preset: Annotated[
        str, typer.Option(help="tiny (minutes on a CPU), mini (the CPU benchmark) or paper (GPUs).")
    ] = "tiny",
    root: Annotated[
        str | None,
        typer.Option(
            "--root", help="Storage root URI (file://, s3://); default $AIRREP_STORAGE_ROOT."
        ),
    ] = None,
    import_data: Annotated[
        bool,
        typer.Option(help="Import the sample datasets first (unchanged files import nothing)."),
    ] = True,
    parallel_shards: Annotated[
        int, typer.Option(help="Label shards fine-tuned at once in this process.")
    ] = 1,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Encoder training recipe: 'efficient' (the tiny/mini default: frozen backbone, "
            "identity start, teacher pre-training, hybrid score) or 'paper' (the whole encoder "
            "from a random projection); default: the preset's."
        ),
    ] = None,
) -> None:
    """Run the AirRep pipeline in-process: import data, generate labels, train the encoder, embed
    the pool, attribute an example, and evaluate against the baselines. Uses Prefect's ephemeral
    mode unless PREFECT_API_URL points at a server; every stage whose artifact exists in the
    store is skipped."""
    from airrep_core.config.pipeline import EncoderStageConfig, PipelineConfig
    from flows.pipeline import pipeline_flow

    open_checked_store(root, writable=True)  # fail fast on a root that cannot work
    config = None
    if recipe is not None:
        encoder = EncoderStageConfig.preset(preset, train={"recipe": recipe})
        config = PipelineConfig.preset(preset, encoder=encoder)
    started = time.perf_counter()
    result = pipeline_flow(
        preset=preset,
        root=root,
        config=config,
        import_data=import_data,
        parallel_shards=parallel_shards,
    )
    _print_result(result, time.perf_counter() - started)


def _print_result(result: dict, seconds: float) -> None:
    stages = Table(title=f"AirRep pipeline: done in {seconds:.0f}s")
    for column in ("stage", "artifact", "summary"):
        stages.add_column(column)
    for stage in ("labels", "encoder", "pool", "embeddings"):
        ref = result[stage]
        summary = ", ".join(f"{k}={v}" for k, v in ref.summary.items() if not isinstance(v, dict))
        stages.add_row(stage, ref.uri, summary[:120])
    console.print(stages)
    if result["evaluation"] is not None:
        _print_evaluation(result["evaluation"])
    example = result["example"]
    if not example:
        return
    console.print(
        f"\n[bold]Query[/] ({example[0]['query_id']}): {example[0]['query_prompt'][:200]}"
    )
    table = Table(title="Most helpful and most harmful pool examples (score = Enc(x)·Enc(z))")
    for column in ("direction", "rank", "score", "example", "prompt → response"):
        table.add_column(column)
    for r in example:
        text = f"{r['prompt'][:90]} → {r['response'][:40]}".replace("\n", " ")
        table.add_row(r["direction"], str(r["rank"]), f"{r['score']:.3f}", r["example_id"], text)
    console.print(table)


def _print_evaluation(ref: StepRef) -> None:
    """The LDS section of the evaluation report, and where the whole report is."""
    from airrep_core.evaluation.report import MARKDOWN_FILE

    report = ref.resolve()
    text = open_store(ref.root).read_bytes(report, MARKDOWN_FILE).decode("utf-8")
    lds_section = text.split("\n## ")[1].split("\n## ")[0]
    console.print(Markdown("## " + lds_section))
    console.print(
        f"Whole report (classification, selection, chart): {report.file_uri(MARKDOWN_FILE)}"
    )


if __name__ == "__main__":
    app()
