"""The ``airrep`` command-line interface.

Sub-commands are grouped by what users do: ``data`` (import and inspect datasets) and ``run``
(the pipeline on embedded defaults). ``airrep COMMAND --help`` explains each one.
"""

from __future__ import annotations

import typer

from flows.cli_data import data_app, import_samples_command, list_command

app = typer.Typer(
    help=(
        "AirRep training data attribution pipeline: import instruction data, generate labels by "
        "fine-tuning target LMs on subsets, train the AirRep encoder, embed the training pool, "
        "and answer attribution and data-selection queries."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")


@app.command("run")
def run_command(
    root: str | None = typer.Option(
        None, "--root", help="Storage root URI (file://, s3://); default $AIRREP_STORAGE_ROOT."
    ),
) -> None:
    """Run the main job on embedded defaults: import the sample datasets and summarise them."""
    import_samples_command(root=root)
    list_command(root=root)


if __name__ == "__main__":
    app()
