"""``airrep config show``: every setting of the pipeline config, its value at a preset, its help.

The keys are what ``airrep run --set KEY=VALUE`` accepts (``airrep_core.config.settings``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from airrep_core.config.pipeline import PipelineConfig

config_app = typer.Typer(
    help="The pipeline's settings: every key `airrep run --set KEY=VALUE` accepts, with its help.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE (repeatable): change one setting of the preset, e.g. "
        "labels.sampling.n_subsets=64 or encoder.train.recipe=paper; VALUE is JSON or a plain "
        "string; `airrep config show` lists every KEY with its help.",
    ),
]
RecipeOption = Annotated[
    str | None,
    typer.Option(
        help="Encoder training recipe: 'efficient' (the tiny/mini default: frozen backbone, "
        "identity start, teacher pre-training, hybrid score) or 'paper' (the whole encoder "
        "from a random projection); default: the preset's. Short for "
        "--set encoder.train.recipe=R."
    ),
]


def pipeline_config(preset: str, recipe: str | None, settings: list[str] | None) -> PipelineConfig:
    """The ``PipelineConfig`` of ``preset`` with ``--recipe`` and every ``--set`` applied (a bad
    key or value raises ``ConfigError`` naming it)."""
    from airrep_core.config.base import merged
    from airrep_core.config.pipeline import PipelineConfig
    from airrep_core.config.settings import parse_settings

    overrides = {"encoder": {"train": {"recipe": recipe}}} if recipe is not None else {}
    return PipelineConfig.preset(
        preset, **merged(overrides, parse_settings(settings or [], PipelineConfig))
    )


@config_app.command("show")
def show_command(
    preset: Annotated[str, typer.Option(help="tiny, mini or paper.")] = "tiny",
    recipe: RecipeOption = None,
    settings: SetOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the config as nested JSON instead.")
    ] = False,
) -> None:
    """Every setting of the pipeline at PRESET (with --recipe/--set applied): key, value, help."""
    from airrep_core.config.pipeline import PipelineConfig
    from airrep_core.config.settings import flat_values

    config = pipeline_config(preset, recipe, settings)
    console = Console()
    if as_json:
        console.print_json(json.dumps(config.to_dict()))
        return
    helps = PipelineConfig.field_help()
    table = Table(title=f"pipeline settings at preset {preset}", title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("help", overflow="fold")
    for key, value in flat_values(config).items():
        table.add_row(key, json.dumps(value), helps[key])
    console.print(table)
