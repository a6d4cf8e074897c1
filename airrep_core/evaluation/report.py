"""The evaluation report: tables as Markdown, Parquet and a PNG bar chart (matplotlib, Agg).

Tables are lists of flat row dicts (one row per measurement), written as they are to Parquet so
that any tool can read them, and pivoted for the Markdown:

- ``lds``: eval_set, method, lds, stderr, n_targets, n_subsets, group_rule, fit_seconds,
  score_seconds, n_train, storage_floats_per_example; the noise ceiling is the method
  ``NOISE_CEILING`` (its n_subsets is the retrained subsets).
- ``classification``: task, method, accuracy, chance, n_queries, n_pool.
- ``selection``: target, selection (a method or ``random``), n, target_loss, base_loss, draws.
- ``transfer``: like ``lds``, against ground truth from another base LM (column ``base``).

``settings`` (method → its settings: projection size, damping, pooling, ...) is rendered as a
Markdown section, so that every number states how its method was configured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

NOISE_CEILING = "noise ceiling"
TABLE_NAMES = ("lds", "classification", "selection", "transfer")
MARKDOWN_FILE = "report.md"
CHART_FILE = "lds.png"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class ReportTables:
    """The report's tables (row dicts) and how to reproduce them."""

    lds: Sequence[Row]
    classification: Sequence[Row] = ()
    selection: Sequence[Row] = ()
    transfer: Sequence[Row] = ()
    command: str = ""
    notes: Sequence[str] = field(default_factory=tuple)
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def table(self, name: str) -> Sequence[Row]:
        """The rows of table ``name`` (one of ``TABLE_NAMES``)."""
        if name not in TABLE_NAMES:
            raise ValueError(f"table {name!r} is unknown; allowed: {TABLE_NAMES}")
        return getattr(self, name)


def _x100(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def lds_markdown(rows: Sequence[Row]) -> str:
    """Methods × evaluation sets, LDS ×100 ± standard error over test examples, the average over
    sets ± its standard error (√Σ seᵢ² / n: the sets are independent), then the cost columns (fit + score seconds summed over the sets, storage floats per
    training example) and the group rule; the noise ceiling row last."""
    if not rows:
        return "_no LDS results_"
    sets = _ordered([r["eval_set"] for r in rows])
    methods = [m for m in _ordered([r["method"] for r in rows]) if m != NOISE_CEILING]
    cell = {(r["method"], r["eval_set"]): r for r in rows}
    header = ["method", *sets, "average", "time (s)", "floats / example", "group score"]
    body = []
    for method in [*methods, NOISE_CEILING]:
        found = [cell[(method, s)] for s in sets if (method, s) in cell]
        if not found:
            continue
        values = [
            f"{_x100(cell[(method, s)]['lds'])} ± {_x100(cell[(method, s)]['stderr'])}"
            if (method, s) in cell
            else "—"
            for s in sets
        ]
        average = (
            f"{_x100(sum(r['lds'] for r in found) / len(found))} ± "
            f"{_x100(math.sqrt(sum(r['stderr'] ** 2 for r in found)) / len(found))}"
            if len(found) == len(sets)
            else "—"
        )
        if method == NOISE_CEILING:
            cost = ["—", "—", f"another fine-tune seed, {found[0]['n_subsets']} subsets"]
        else:
            seconds = sum(r["fit_seconds"] + r["score_seconds"] for r in found)
            cost = [
                f"{seconds:.1f}",
                f"{found[0]['storage_floats_per_example']:.0f}",
                found[0]["group_rule"],
            ]
        body.append([method, *values, average, *cost])
    return _markdown_table(header, body)


def classification_markdown(rows: Sequence[Row]) -> str:
    """Methods × classification tasks: top-1 same-class accuracy (%), chance in the header."""
    if not rows:
        return "_classification test not run_"
    tasks = _ordered([r["task"] for r in rows])
    chance = {r["task"]: r["chance"] for r in rows}
    cell = {(r["method"], r["task"]): r["accuracy"] for r in rows}
    header = ["method", *[f"{t} (chance {_x100(chance[t])})" for t in tasks]]
    body = [
        [m, *[_x100(cell[(m, t)]) if (m, t) in cell else "—" for t in tasks]]
        for m in _ordered([r["method"] for r in rows])
    ]
    return _markdown_table(header, body)


def selection_markdown(rows: Sequence[Row]) -> str:
    """Selections × target task: the target task's mean loss after fine-tuning on N examples."""
    if not rows:
        return "_data selection test not run_"
    header = ["target", "selection", "N", "target loss", "vs random (< 0: better)", "base loss"]
    random_loss = {r["target"]: r["target_loss"] for r in rows if r["selection"] == "random"}
    body = []
    for r in rows:
        reference = random_loss.get(r["target"])
        delta = "—" if reference is None else f"{r['target_loss'] - reference:+.4f}"
        body.append(
            [
                r["target"],
                r["selection"] + (f" (mean of {r['draws']})" if r["selection"] == "random" else ""),
                str(r["n"]),
                f"{r['target_loss']:.4f}",
                delta,
                f"{r['base_loss']:.4f}",
            ]
        )
    return _markdown_table(header, body)


def settings_markdown(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per method: its settings as ``name=value``, in the order given."""
    rows = [
        [method, ", ".join(f"{name}={value}" for name, value in values.items()) or "—"]
        for method, values in settings.items()
    ]
    return _markdown_table(["method", "settings"], rows)


def render_markdown(tables: ReportTables, title: str = "AirRep evaluation") -> str:
    """The whole report as Markdown."""
    parts = [f"# {title}", ""]
    parts += ["## LDS ×100 (mean ± s.e. over test examples)", "", lds_markdown(tables.lds), ""]
    if tables.transfer:
        bases = ", ".join(_ordered([r["base"] for r in tables.transfer]))
        parts += [
            f"## Cross-model transfer: LDS ×100 against ground truth from {bases}",
            "",
            lds_markdown(tables.transfer),
            "",
        ]
    parts += ["## Classification: top-1 retrieved example of the same class (%)", ""]
    parts += [classification_markdown(tables.classification), ""]
    parts += ["## Data selection: target loss after fine-tuning on N examples", ""]
    parts += [selection_markdown(tables.selection), ""]
    if tables.settings:
        parts += ["## Method settings", "", settings_markdown(tables.settings), ""]
    if tables.notes:
        parts += ["## Notes", "", *[f"- {note}" for note in tables.notes], ""]
    if tables.command:
        parts += ["## Reproduce", "", "```", tables.command, "```", ""]
    return "\n".join(parts)


def lds_chart(rows: Sequence[Row], path: Path, title: str = "LDS ×100") -> None:
    """A grouped bar chart (evaluation sets × methods) of LDS ×100 with standard-error bars and
    the noise ceiling as a black line over each set; written as PNG with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = _ordered([r["eval_set"] for r in rows])
    methods = [m for m in _ordered([r["method"] for r in rows]) if m != NOISE_CEILING]
    cell = {(r["method"], r["eval_set"]): r for r in rows}
    width = 0.8 / max(1, len(methods))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(sets) * max(1, len(methods)) / 4), 4))
    for k, method in enumerate(methods):
        xs = [
            i + (k - (len(methods) - 1) / 2) * width
            for i, s in enumerate(sets)
            if (method, s) in cell
        ]
        found = [cell[(method, s)] for s in sets if (method, s) in cell]
        axes.bar(
            xs,
            [100 * r["lds"] for r in found],
            width,
            yerr=[100 * r["stderr"] for r in found],
            label=method,
        )
    for i, s in enumerate(sets):
        if (NOISE_CEILING, s) in cell:
            level = 100 * cell[(NOISE_CEILING, s)]["lds"]
            axes.hlines(level, i - 0.45, i + 0.45, colors="black", linestyles="--")
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(sets)), sets)
    axes.set_ylabel("LDS ×100")
    axes.set_title(f"{title} (dashed: noise ceiling)")
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    directory: Path, tables: ReportTables, title: str = "AirRep evaluation"
) -> list[str]:
    """Write ``report.md``, one ``<table>.parquet`` per non-empty table and ``lds.png`` into
    ``directory``; returns the file names written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [MARKDOWN_FILE]
    (directory / MARKDOWN_FILE).write_text(render_markdown(tables, title), encoding="utf-8")
    for name in TABLE_NAMES:
        rows = tables.table(name)
        if rows:
            pl.DataFrame([dict(r) for r in rows]).write_parquet(directory / f"{name}.parquet")
            written.append(f"{name}.parquet")
    if tables.lds:
        lds_chart(tables.lds, directory / CHART_FILE)
        written.append(CHART_FILE)
    return written
