"""The evaluation's own steps over the artifact store (DESIGN.md §3): the held-out check and the
report, and the Prefect tasks that wrap them.

The other steps sit beside their plain functions: ground truths (``tasks.ground_truth``), LDS
scores and the classification test (``tasks.method_scores``), the data-selection test
(``tasks.data_selection``). ``flows/evaluation_flow.py`` composes them all (``compose_evaluation``),
as Prefect tasks in the ``evaluate`` flow and as plain functions for ``airrep bench``. Stage and
key (``content_key(stage, config, inputs)``):

- ``evaluation-report``: Markdown, Parquet tables and the PNG chart; inputs: the encoder, the
  base LM and every ground truth, score, classification and selection artifact it tabulates.

Honesty: the held-out check refuses an AirRep encoder whose training dataset shares an example
(by content hash) with any evaluation set (``tasks.ground_truth.check_held_out``); it runs
first, before any ground truth is computed. The test examples are never used to fit or tune.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.evaluation.report import (
    CHART_FILE,
    NOISE_CEILING,
    ReportTables,
    render_markdown,
    write_report,
)
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from tasks.caching import store_task
from tasks.corpus import load_corpus
from tasks.ground_truth import (
    ceiling_row,
    check_held_out,
    load_ground_truth,
    resolve_eval_dataset,
)
from tasks.method_scores import (
    SOURCE_TASK_SETS,
    MethodFactory,
    lds_row,
)
from tasks.monitoring import publish_link, publish_markdown, publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS

REPORT_STAGE = "evaluation-report"

log = logging.getLogger("airrep.evaluation")


# ---- the whole evaluation --------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    """What ``evaluate`` returns: the report artifact and its tables."""

    report: ArtifactRef
    tables: ReportTables

    @property
    def markdown(self) -> str:
        """The report's Markdown (the content of its ``report.md``)."""
        return render_markdown(self.tables)


@dataclass(frozen=True)
class EvaluationRefs:
    """The artifacts the report tabulates: ground truths by label, LDS scores, classification and
    selection results, and the cross-model transfer's base LM, ground truths and scores."""

    truths: dict[str, ArtifactRef]
    scores: list[ArtifactRef]
    classified: list[ArtifactRef] = field(default_factory=list)
    selected: list[ArtifactRef] = field(default_factory=list)
    transfer_base: ArtifactRef | None = None
    transfer_truths: dict[str, ArtifactRef] = field(default_factory=dict)
    transfer_scores: list[ArtifactRef] = field(default_factory=list)

    def keys(self) -> list[str]:
        """Every artifact key the report rests on (its content key's inputs)."""
        refs = [*self.truths.values(), *self.scores, *self.classified, *self.selected]
        refs += [*self.transfer_truths.values(), *self.transfer_scores]
        return [ref.key for ref in refs]

    @classmethod
    def resolve(cls, steps: dict[str, Any]) -> EvaluationRefs:
        """From the same fields holding ``StepRef``s (what the flow passes between tasks)."""

        def one(value: Any) -> Any:
            if isinstance(value, StepRef):
                return value.resolve()
            if isinstance(value, dict):
                return {k: one(v) for k, v in value.items()}
            if isinstance(value, list):
                return [one(v) for v in value]
            return value

        return cls(**{name: one(value) for name, value in steps.items()})


def used_sets(config: EvaluationConfig) -> list[str]:
    """Every evaluation set ``config`` reads (LDS, classification, selection, transfer)."""
    names = [*config.eval_sets, *config.transfer_eval_sets]
    if config.selection_methods:
        names += [config.selection_target, *config.selection_pool_sets]
    if "hh_chosen_rejected" in config.classification_tasks:
        names.append("hh_rlhf_harmless")
    if "p3_task" in config.classification_tasks:
        names.append("p3")
    if "source" in config.classification_tasks:
        names += SOURCE_TASK_SETS
    return list(dict.fromkeys(names))


def check_encoder_held_out(
    store: ArtifactStore, config: EvaluationConfig, encoder_ref: ArtifactRef
) -> list[str]:
    """``ValueError`` when the dataset ``encoder_ref`` was trained on shares an example (by content
    hash) with any evaluation set ``config`` reads (``check_held_out``); returns those sets."""
    names = used_sets(config)
    corpora = {name: load_corpus(store, resolve_eval_dataset(store, name)) for name in names}
    check_held_out(store, encoder_ref.inputs[1], corpora)
    return names


def write_evaluation_report(
    store: ArtifactStore,
    config: EvaluationConfig,
    encoder_ref: ArtifactRef,
    base_ref: ArtifactRef,
    results: EvaluationRefs,
    command: str = "",
) -> EvaluationResult:
    """The ``evaluation-report`` artifact of ``results`` (built when absent): the tables of every
    ground truth (its methods' LDS rows in ``config``'s method order, then the noise ceiling),
    the classification, selection and transfer tests, and each method's settings.

    Args:
        results: the artifacts of the evaluation's steps (``compose_evaluation``).
        command: the command that reproduces the report (printed in it).
    """
    config = resolved(config)
    lds_rows = _lds_rows(store, results.truths, results.scores)
    classification_rows = [dict(ref.metadata) for ref in results.classified]
    base_loss = results.selected[0].metadata["base_loss"] if results.selected else None
    selection_rows = [{**ref.metadata, "base_loss": base_loss} for ref in results.selected]
    transfer_rows: list[dict[str, Any]] = []
    if results.transfer_base is not None:
        base = results.transfer_base
        base_name = base.metadata.get("model", base.key[:12])
        rows = _lds_rows(store, results.transfer_truths, results.transfer_scores)
        transfer_rows = [{**row, "base": base_name} for row in rows]
    notes = [
        f"AirRep encoder {encoder_ref.key[:12]} trained on dataset {encoder_ref.inputs[1][:12]}, "
        "which shares no example with any evaluation set (checked by content hash).",
        f"Ground truth: base LM {base_ref.metadata.get('model', base_ref.key[:12])}; each set's "
        f"pool and test examples share no prompt; K={config.sampling.n_subsets} subsets of "
        f"{config.sampling.subset_size}, {config.sampling.n_test} test examples.",
        "Group score: airrep uses its encoder's rule (attention pooling, or for a hybrid encoder "
        "the sum of its hybrid scores, z-scored dot + λ·BM25, as the group score column says); "
        "airrep_mean is the embedding alone with mean pooling; every other method sums its "
        "per-example scores.",
        "Time: fit (featurise the pool) + score (the test examples), summed over the sets, on "
        "this machine; for throughput at scale see benchmarks/attribution_speed.py.",
    ]
    scored = [
        *config.method_list(config.methods),
        *(row["method"] for row in classification_rows + transfer_rows),
        *(row["selection"] for row in selection_rows),
    ]
    factory = MethodFactory(store, config, encoder_ref)
    settings = {
        method: factory.settings(method)
        for method in dict.fromkeys(scored)
        if method not in ("random", NOISE_CEILING)
    }
    tables = ReportTables(
        lds_rows,
        classification_rows,
        selection_rows,
        transfer_rows,
        command,
        tuple(notes),
        settings,
    )
    report_config = {"evaluation": config.to_dict(), "command": command}
    report_inputs = [encoder_ref.key, base_ref.key, *sorted(set(results.keys()))]
    report_key = content_key(REPORT_STAGE, report_config, report_inputs)
    report = store.build(
        REPORT_STAGE,
        report_key,
        config=report_config,
        inputs=report_inputs,
        writer=lambda staging: {"files": write_report(staging, tables)},
    )
    return EvaluationResult(report, tables)


def _lds_rows(
    store: ArtifactStore, truths: dict[str, ArtifactRef], scores: Sequence[ArtifactRef]
) -> list[dict[str, Any]]:
    """Each ground truth's score rows (in the order given), then its noise-ceiling row."""
    rows = []
    for truth in truths.values():
        rows += [lds_row(ref) for ref in scores if ref.inputs[0] == truth.key]
        ceiling = ceiling_row(load_ground_truth(store, truth))
        if ceiling is not None:
            rows.append(ceiling)
    return rows


def report_step(
    root: str,
    config: EvaluationConfig,
    encoder: StepRef,
    base: StepRef,
    results: dict[str, Any],
    command: str = "",
) -> EvaluationResult:
    """``write_evaluation_report`` over the store at ``root`` (``results``: the ``EvaluationRefs``
    fields holding step references, as ``compose_evaluation`` passes them)."""
    store = open_store(root)
    refs = EvaluationRefs.resolve(results)
    return write_evaluation_report(store, config, encoder.resolve(), base.resolve(), refs, command)


@task(name="check-held-out", cache_policy=NO_CACHE, **IO_RETRY_OPTIONS)
def check_held_out_task(root: str, encoder: StepRef, config: EvaluationConfig) -> list[str]:
    """Refuse (``ValueError``) an encoder whose training dataset shares an example with any
    evaluation set of ``config``; runs first, before any ground truth is computed. Returns the
    checked sets."""
    names = check_encoder_held_out(open_store(root), config, encoder.resolve())
    run_logger().info("held out: the encoder's training data shares no example with %s", names)
    return names


@store_task("evaluation-report", gpu=True, timeout_h=6)
def evaluation_report_task(
    root: str,
    config: EvaluationConfig,
    encoder: StepRef,
    base: StepRef,
    results: dict[str, Any],
    command: str = "",
) -> StepRef:
    """The report artifact of the evaluation's results; publishes the tables, the Markdown
    report with its chart, and a link.

    ``results``: the step references of every ground truth, score, classification and selection
    result (``EvaluationRefs`` fields); they key the cache, so a new evaluation-set version
    makes a new report.
    """
    store = open_store(root)
    result = report_step(root, config, encoder, base, results, command)
    step = StepRef.of(store, result.report, eval_sets=list(config.eval_sets))
    tables = result.tables
    publish_table("lds-table", tables.lds, "LDS (mean over test examples) per method and set")
    publish_table("classification-table", tables.classification, "Top-1 same-class accuracy")
    publish_table(
        "selection-table", tables.selection, "Data selection: target loss after fine-tuning"
    )
    publish_table("transfer-table", tables.transfer, "Cross-model transfer LDS")
    markdown = result.markdown
    if CHART_FILE in result.report.files:  # inlined: the UI cannot follow file:// or s3:// links
        chart = base64.b64encode(store.read_bytes(result.report, CHART_FILE)).decode("ascii")
        markdown += f"\n\n![LDS chart](data:image/png;base64,{chart})\n"
    publish_markdown("evaluation-report", markdown, "AirRep evaluation")
    publish_link(step, "evaluation report (Markdown, Parquet tables, PNG chart)")
    return step
