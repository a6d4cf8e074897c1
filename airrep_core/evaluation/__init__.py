"""The evaluation harness's pure parts (DESIGN.md §3): LDS of a
method on a ground-truth split with the noise ceiling, the classification and data-selection
tests, evaluation-set hold-out rules, and the report (Markdown, Parquet, PNG).

Storage and orchestration live in ``tasks/ground_truth.py``, ``tasks/method_scores.py``,
``tasks/data_selection.py`` and ``tasks/evaluation.py``; the CLI in ``flows/cli_bench.py``.
"""

from airrep_core.evaluation.classification import ClassificationTask, balanced_task, top1_accuracy
from airrep_core.evaluation.lds_eval import (
    LdsResult,
    SubsetScores,
    lds_of,
    noise_ceiling,
    score_subsets,
    subset_indices,
)
from airrep_core.evaluation.report import NOISE_CEILING, ReportTables, render_markdown, write_report
from airrep_core.evaluation.selection import random_selection, shipped_selection

__all__ = [
    "NOISE_CEILING",
    "ClassificationTask",
    "LdsResult",
    "ReportTables",
    "SubsetScores",
    "balanced_task",
    "lds_of",
    "noise_ceiling",
    "random_selection",
    "render_markdown",
    "score_subsets",
    "shipped_selection",
    "subset_indices",
    "top1_accuracy",
    "write_report",
]
