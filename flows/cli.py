"""The ``airrep`` command-line interface.

Commands by what users do: ``run`` (the pipeline on embedded defaults), ``data`` (import and
inspect datasets), ``embed`` / ``attribute`` / ``group-influence`` / ``select`` (queries over the
embedding store), ``bench`` (LDS evaluation against baselines), ``store gc`` (leftovers of killed
builds). ``airrep COMMAND --help`` explains each one; failures end in one line
(``flows/cli_errors.py``), ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from flows import cli_query
from flows.cli_bench import bench_app
from flows.cli_config import RecipeOption, SetOption, config_app, pipeline_config
from flows.cli_data import data_app
from flows.cli_errors import GuardedTyper, open_checked_store
from flows.cli_store import store_app

if TYPE_CHECKING:
    from airrep_core.config.pipeline import PipelineConfig
    from storage.artifacts import ArtifactStore
    from tasks.references import StepRef
    from tasks.run_plan import RunPlan

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
app.add_typer(config_app, name="config")
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
    recipe: RecipeOption = None,
    settings: SetOption = None,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="Print the stages, their units of work, what the store already holds and the "
            "expected time on this machine (from a short measured probe); run nothing.",
        ),
    ] = False,
) -> None:
    """Run the AirRep pipeline in-process: import data, generate labels, train the encoder, embed
    the pool, attribute an example, and evaluate against the baselines. Uses Prefect's ephemeral
    mode unless PREFECT_API_URL points at a server; every stage whose artifact exists in the
    store is skipped, and a rerun of an unchanged run prints its recorded result without
    starting Prefect or loading a model."""
    from storage.root import default_root_uri

    config = pipeline_config(preset, recipe, settings)
    store = open_checked_store(root, writable=True)  # fail fast on a root that cannot work
    store_root = root or default_root_uri()
    if plan:
        from tasks.run_plan import plan_run

        with console.status("probing this machine with the preset's models"):
            run_plan = plan_run(store, preset, config, import_data)
        _print_plan(run_plan)
        return
    # Only Prefect's warnings reach the terminal (its run logs still reach the UI); each stage
    # shows one progress row instead. Prefect reads this when first imported, below.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    started = time.perf_counter()
    result = _recorded_result(store, store_root, config, import_data)
    if result is None:
        from flows.cli_errors import failures_to_the_boundary
        from flows.pipeline import pipeline_flow
        from tasks.monitoring import terminal_progress

        failures_to_the_boundary()

        with terminal_progress(console):
            result = pipeline_flow(
                preset=preset,
                root=root,
                config=config,
                import_data=import_data,
                parallel_shards=parallel_shards,
            )
    _print_result(result, time.perf_counter() - started)


def _recorded_result(
    store: ArtifactStore, root: str, config: PipelineConfig, import_data: bool
) -> dict | None:
    """The recorded result of an identical earlier run (``tasks.run_record``), or None.

    The record is looked up first (its key holds every dataset's latest version): an import
    that changes nothing leaves that key as it is, and one that changes a dataset means a new
    run anyway. So without a record the pipeline's own import is the only parse of the sample
    files; with one they are imported here to check them, and a changed dataset's update event
    is emitted here (the pipeline's import then finds the version already published).
    """
    from tasks.run_record import read_run_record

    result = read_run_record(store, config.to_dict(), evaluate=True)
    if result is None:
        return None
    if import_data:
        from storage.datasets import import_dataset
        from storage.sample_data import SAMPLE_DATASETS
        from storage.shapes import FieldMapping

        with console.status("checking the sample datasets for changes"):
            versions = [
                import_dataset(
                    store,
                    sample.paths(),
                    sample.name,
                    mapping=FieldMapping(),
                    skip_invalid=sample.skip_invalid,
                )
                for sample in SAMPLE_DATASETS.values()
            ]
        created = [v for v in versions if v.changed]
        if created:
            from flows.events import emit_dataset_updated

            for version in created:
                emit_dataset_updated(version, root)
            return None
    console.print("Every stage's artifact is in the store: the recorded result of that run.")
    return result


def _print_plan(plan: RunPlan) -> None:
    table = Table(title=f"airrep run --preset {plan.preset} --root {plan.root}: the plan")
    for column in ("stage", "units of work", "total", "in the store", "expected"):
        table.add_column(column, justify="right" if column in ("total", "in the store") else "left")
    for s in plan.stages:
        table.add_row(s.stage, s.units, f"{s.total:,}", f"{s.cached:,}", _duration(s.seconds))
    table.add_row("[bold]total", "", "", "", f"[bold]{_duration(plan.seconds)}")
    console.print(table)
    if plan.probe is not None:
        p = plan.probe
        console.print(
            f"Measured here: imports {p.imports_s:.1f}s; target LM: load {p.lm_load_s:.2f}s, "
            f"fine-tuning step {p.lm_step_s:.3f}s, batch of target losses "
            f"{p.lm_eval_batch_s:.3f}s; encoder: load {p.encoder_load_s:.2f}s, batch "
            f"{p.encoder_batch_s:.3f}s.",
            highlight=False,
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
    from tasks.references import open_store

    report = ref.resolve()
    report_file = next(f for f in report.metadata["files"] if f.endswith(".md"))
    text = open_store(ref.root).read_bytes(report, report_file).decode("utf-8")
    lds_section = text.split("\n## ")[1].split("\n## ")[0]
    console.print(Markdown("## " + lds_section))
    console.print(
        f"Whole report (classification, selection, chart): {report.file_uri(report_file)}"
    )


if __name__ == "__main__":
    app()
