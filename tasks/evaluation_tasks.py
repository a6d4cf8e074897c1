"""Prefect tasks of the evaluation stage: thin wrappers around ``tasks.ground_truth``,
``tasks.method_scores`` and ``tasks.evaluation`` returning ``StepRef``s (DESIGN.md §3, §4).

One task per step the UI should show: the P3 template split, an evaluation set's dataset, its
LDS ground truth (fine-tunes: ``gpu`` tag and a timeout), one method's scores on one ground truth,
and the report (classification, data selection, tables, chart). Every task reads from the store,
calls one of their step functions and returns a small reference; the store skips work whose
content key exists, so a new version of one evaluation set reruns only its ground truth, its
scores and the report.
"""

from __future__ import annotations

import base64

from prefect import task
from prefect.cache_policies import NO_CACHE

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.evaluation.report import CHART_FILE
from tasks import evaluation, ground_truth, method_scores
from tasks.caching import store_verified_cache
from tasks.data_tasks import dataset_ref
from tasks.monitoring import Progress, publish_link, publish_markdown, publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS

GROUND_TRUTH_TIMEOUT_S = 12 * 3600
REPORT_TIMEOUT_S = 6 * 3600


@task(name="split-p3-templates", cache_policy=NO_CACHE, **IO_RETRY_OPTIONS)
def split_p3_task(root: str) -> dict[str, tuple[StepRef, bool]]:
    """Import the sample P3 data split by template into ``flan_p3_train`` (the label corpus) and
    ``flan_p3_heldout`` (the P3 evaluation set); returns ``{name: (ref, is_new_version)}``."""
    versions = ground_truth.import_p3_holdout(open_store(root))
    for version in versions:
        run_logger().info(
            "dataset %s: version %s, %d rows (%s)",
            version.name,
            version.short_version,
            version.rows,
            "new" if version.created else "unchanged",
        )
    return {v.name: (dataset_ref(root, v), v.created) for v in versions}


@task(name="resolve-eval-set", task_run_name="eval-set-{name}", cache_policy=NO_CACHE)
def resolve_eval_set_task(root: str, name: str) -> StepRef:
    """The latest dataset version of evaluation set ``name`` (a built-in set is imported from the
    sample data when the store lacks it). Never cached: "latest" changes with new imports."""
    return dataset_ref(root, ground_truth.resolve_eval_dataset(open_store(root), name))


@task(name="check-held-out", cache_policy=NO_CACHE, **IO_RETRY_OPTIONS)
def check_held_out_task(root: str, encoder: StepRef, config: EvaluationConfig) -> list[str]:
    """Refuse (``ValueError``) an encoder whose training dataset shares an example with any
    evaluation set of ``config``; runs first, before any ground truth is computed. Returns the
    checked sets."""
    names = evaluation.check_encoder_held_out(open_store(root), config, encoder.resolve())
    run_logger().info("held out: the encoder's training data shares no example with %s", names)
    return names


@task(
    name="lds-ground-truth",
    task_run_name="ground-truth-{name}",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    timeout_seconds=GROUND_TRUTH_TIMEOUT_S,
    **IO_RETRY_OPTIONS,
)
def ground_truth_task(
    root: str, name: str, dataset: StepRef, base: StepRef, config: EvaluationConfig
) -> StepRef:
    """Evaluation set ``name``'s LDS ground truth: K subsets of its pool fine-tuned from ``base``
    and every test example's loss (plus the noise-ceiling retraining). Resumes unit by unit."""
    store = open_store(root)
    n_units = config.sampling.n_subsets + config.noise_subsets
    progress = Progress(f"ground truth {name}: {n_units} fine-tunes")
    done = 0

    def report(*_: object) -> None:
        nonlocal done
        done += 1
        progress.update(done, n_units)

    ref = ground_truth.build_ground_truth(
        store, name, dataset.resolve(), base.resolve(), config, report
    )
    run_logger().info("ground truth %s: %s", name, ref.metadata)
    return StepRef.of(store, ref, eval_set=name, **ref.metadata)


@task(
    name="score-method",
    task_run_name="score-{method}-{truth.summary[eval_set]}",
    cache_policy=store_verified_cache(),
    **IO_RETRY_OPTIONS,
)
def score_method_task(
    root: str, method: str, truth: StepRef, encoder: StepRef, config: EvaluationConfig
) -> StepRef:
    """``method``'s group scores and LDS against one ground truth."""
    store = open_store(root)
    factory = method_scores.MethodFactory(store, config, encoder.resolve())
    ref = method_scores.score_method(store, method, truth.resolve(), factory)
    row = method_scores.lds_row(ref)
    run_logger().info(
        "%s on %s: LDS %.4f ± %.4f", method, row["eval_set"], row["lds"], row["stderr"]
    )
    return StepRef.of(store, ref, **row)


@task(
    name="classification",
    task_run_name="classify-{config.classification_tasks}",
    cache_policy=store_verified_cache(),
    **IO_RETRY_OPTIONS,
)
def classify_task(
    root: str, encoder: StepRef, base: StepRef, config: EvaluationConfig
) -> list[StepRef]:
    """Every method's top-1 same-class accuracy on every classification test of ``config``."""
    store = open_store(root)
    factory = method_scores.MethodFactory(store, config, encoder.resolve())
    refs = evaluation.classifications(store, config, factory, base.resolve())
    for ref in refs:
        run_logger().info("classification %s", ref.metadata)
    return [StepRef.of(store, ref, **ref.metadata) for ref in refs]


@task(
    name="data-selection",
    task_run_name="select-for-{config.selection_target}",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    timeout_seconds=GROUND_TRUTH_TIMEOUT_S,
    **IO_RETRY_OPTIONS,
)
def select_task(
    root: str, encoder: StepRef, base: StepRef, config: EvaluationConfig
) -> list[StepRef]:
    """The data-selection test: random and each method's selection (round-robin, as ``airrep
    select`` ships it), each fine-tuned on, with the target task's loss."""
    store = open_store(root)
    factory = method_scores.MethodFactory(store, config, encoder.resolve())
    refs = evaluation.selections(store, config, factory, base.resolve())
    for ref in refs:
        run_logger().info("selection %s", ref.metadata)
    return [StepRef.of(store, ref, **ref.metadata) for ref in refs]


@task(
    name="evaluation-report",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    timeout_seconds=REPORT_TIMEOUT_S,
    **IO_RETRY_OPTIONS,
)
def evaluation_report_task(
    root: str,
    config: EvaluationConfig,
    encoder: StepRef,
    base: StepRef,
    scores: list[StepRef],
    transfer_base: StepRef | None = None,
    command: str = "",
) -> StepRef:
    """Every evaluation of ``config`` and the report artifact; publishes the tables, the Markdown
    report with its chart, and a link.

    ``scores``: the ground truths, LDS scores, classification and selection results the report
    rests on (computed by their own tasks and reused here from the store); they key the cache,
    so a new evaluation-set version makes a new report.
    """
    store = open_store(root)
    result = evaluation.evaluate(
        store,
        config,
        encoder.resolve(),
        base.resolve(),
        transfer_base.resolve() if transfer_base is not None else None,
        command,
    )
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
