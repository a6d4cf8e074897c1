"""``airrep bench``: benchmarks of the pipeline (DESIGN.md §3). The lead mounts ``bench_app``
under the main CLI (``app.add_typer(bench_app, name="bench")``).

``airrep bench lds --preset tiny|mini [--eval-set NAME ...] [--base-steps N] [--root URI]`` runs the LDS benchmark
end to end (labels on P3 without its held-out templates, the AirRep encoder, ground truth on each
evaluation set, every method, classification, data selection, transfer), prints the tables and
the command that reproduces them. Everything is cached in the store: a rerun only loads.
"""

from __future__ import annotations

import logging
import os
import time

import typer

from storage.artifacts import ArtifactStore

bench_app = typer.Typer(
    help="Benchmarks: LDS of AirRep and the baselines against ground-truth retraining.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

BENCH_PRESETS = ("tiny", "mini")


@bench_app.callback()
def bench_group() -> None:
    """Benchmarks of the AirRep pipeline (results cached in the store)."""


@bench_app.command("lds")
def lds_command(
    preset: str = typer.Option(
        "mini", "--preset", help=f"Size preset, one of {BENCH_PRESETS} (tiny: about a minute)."
    ),
    eval_set: list[str] = typer.Option(  # noqa: B008 (typer's idiom)
        None,
        "--eval-set",
        help="Evaluation set (repeatable): p3, dolly, gsm8k, hh_rlhf_harmless or any imported "
        "dataset's name; default: the preset's sets.",
    ),
    transfer_set: list[str] = typer.Option(  # noqa: B008 (typer's idiom)
        None,
        "--transfer-set",
        help="Cross-model transfer (repeatable): evaluation sets re-labelled with another base LM "
        "(a Llama); default: the preset's (none at tiny and mini: it adds a warm-up and K "
        "fine-tunes per set).",
    ),
    root: str | None = typer.Option(
        None, "--root", help="Storage root URI (file://, s3://); default $AIRREP_STORAGE_ROOT."
    ),
    recipe: str | None = typer.Option(
        None,
        "--recipe",
        help="Encoder training recipe: 'efficient' (the preset default) or 'paper'.",
    ),
    base_steps: int | None = typer.Option(
        None,
        "--base-steps",
        min=1,
        help="Warm-up budget of the scratch base LM (default: the preset's); another base "
        "means other labels and ground truths: the regime table's runs.",
    ),
) -> None:
    """LDS ×100 of every method on every evaluation set, with the noise ceiling, costs,
    classification, data selection and transfer tables; written as Markdown, Parquet and PNG."""
    if preset not in BENCH_PRESETS:
        raise typer.BadParameter(f"{preset!r} is not one of {BENCH_PRESETS}", param_hint="--preset")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from flows.bench import run_bench  # imports torch and Prefect

    store = ArtifactStore(root)
    started = time.perf_counter()
    result = run_bench(
        store,
        preset,
        eval_set or None,
        root,
        progress=lambda m: typer.echo(f"... {m}", err=True),
        transfer_sets=transfer_set or None,
        recipe=recipe,
        base_steps=base_steps,
    )
    report = result.evaluation.report
    typer.echo(result.evaluation.markdown)
    typer.echo(f"Report: {report.uri}/{report.attempt}/ ({', '.join(report.metadata['files'])})")
    typer.echo(f"Reproduce: {result.command}")
    from airrep_core.runtime import machine_line

    typer.echo(
        f"This run: {time.perf_counter() - started:.0f} s wall (stages found in the store are loaded, "
        f"not recomputed) on "
        f"{machine_line()}"
    )
