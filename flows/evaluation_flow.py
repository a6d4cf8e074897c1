"""The ``evaluate`` stage flow: the held-out check first, then LDS ground truth per evaluation
set, every method's scores, the classification / data-selection / transfer tests and the report
(DESIGN.md §3).

``compose_evaluation`` is the one composition of the evaluation's steps. The flow runs it with
the Prefect tasks (``TASK_STEPS``): each ground truth and each (method, set) score is its own
task run, named after the set and the method, and the classification and data-selection tests
are tasks of their own. ``evaluate`` runs the same composition with the tasks' plain functions
(``PLAIN_STEPS``, no Prefect run): what ``airrep bench`` and notebooks use. Every step is cached
in the store, so a new version of one evaluation set reruns only that set's ground truth, its
scores and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from airrep_core.config.evaluation import EvaluationConfig
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.dataset_heads import DATASET_STAGE
from tasks.data_selection import select_task
from tasks.evaluation import (
    EvaluationResult,
    check_held_out_task,
    evaluation_report_task,
    report_step,
)
from tasks.ground_truth import ground_truth_task, resolve_eval_set_task
from tasks.labels import prepare_base_model
from tasks.method_scores import classify_task, score_method_task
from tasks.monitoring import run_logger
from tasks.references import StepRef


@dataclass(frozen=True)
class EvaluationSteps:
    """The steps ``compose_evaluation`` calls (same signatures as the tasks)."""

    check_held_out: Callable[..., Any]
    resolve_eval_set: Callable[..., StepRef]
    ground_truth: Callable[..., StepRef]
    prepare_base: Callable[..., StepRef]
    score: Callable[..., StepRef]
    classify: Callable[..., list[StepRef]]
    select: Callable[..., list[StepRef]]
    report: Callable[..., Any]


TASK_STEPS = EvaluationSteps(
    check_held_out_task,
    resolve_eval_set_task,
    ground_truth_task,
    prepare_base_model,
    score_method_task,
    classify_task,
    select_task,
    evaluation_report_task,
)
"""The Prefect tasks: each call is a task run of the calling flow."""

PLAIN_STEPS = EvaluationSteps(
    *(step.fn for step in (check_held_out_task, resolve_eval_set_task, ground_truth_task)),
    prepare_base_model.fn,
    score_method_task.fn,
    classify_task.fn,
    select_task.fn,
    report_step,
)
"""The same steps as plain functions; the report step returns the ``EvaluationResult``."""


def compose_evaluation(
    steps: EvaluationSteps,
    root: str,
    corpus: StepRef,
    encoder: StepRef,
    base: StepRef,
    config: EvaluationConfig,
    command: str = "",
    transfer_base: StepRef | None = None,
) -> Any:
    """The evaluation of ``encoder`` against the baselines of ``config``: the held-out check,
    each set's ground truth and every method's scores on it, the classification and
    data-selection tests, the cross-model transfer (its base LM warmed up on ``corpus`` unless
    ``transfer_base`` is given), then the report (what ``steps.report`` returns)."""
    steps.check_held_out(root, encoder, config)  # before any ground truth is computed

    def truths_and_scores(names, methods, lm) -> tuple[dict[str, StepRef], list[StepRef]]:
        truths = {
            name: steps.ground_truth(root, name, steps.resolve_eval_set(root, name), lm, config)
            for name in names
        }
        scores = [
            steps.score(root, method, truth, encoder, config)
            for truth in truths.values()
            for method in config.method_list(methods)
        ]
        return truths, scores

    truths, scores = truths_and_scores(config.eval_sets, config.methods, base)
    results: dict[str, Any] = {
        "truths": truths,
        "scores": scores,
        "classified": steps.classify(root, encoder, base, config)
        if config.classification_tasks
        else [],
        "selected": steps.select(root, encoder, base, config) if config.selection_methods else [],
    }
    if config.transfer_eval_sets:
        transfer_base = transfer_base or steps.prepare_base(root, corpus, config.transfer_base)
        transfer_truths, transfer_scores = truths_and_scores(
            config.transfer_eval_sets, config.transfer_methods, transfer_base
        )
        results |= {
            "transfer_base": transfer_base,
            "transfer_truths": transfer_truths,
            "transfer_scores": transfer_scores,
        }
    return steps.report(root, config, encoder, base, results, command)


def evaluation_run_name() -> str:
    """``evaluate-<set>-<set>...`` from the run's ``config`` parameter."""
    config = flow_run.parameters.get("config")
    sets = (
        config.eval_sets
        if isinstance(config, EvaluationConfig)
        else (config or {}).get("eval_sets", ())
    )
    return "evaluate-" + "-".join(sets) if sets else "evaluate"


@flow(name="evaluate", flow_run_name=evaluation_run_name, log_prints=True)
def evaluate_flow(
    root: str,
    corpus: StepRef,
    encoder: StepRef,
    base: StepRef,
    config: EvaluationConfig,
    command: str = "",
) -> StepRef:
    """Evaluate the AirRep ``encoder`` against the baselines of ``config``.

    Args:
        root: storage root URI.
        corpus: the dataset AirRep's labels came from (the transfer base LM warms up on it).
        encoder: the trained AirRep encoder; it must share no example with any evaluation set.
        base: the base LM of the LDS ground truth (the one AirRep's labels came from).
        config: evaluation sets, ground-truth sizes, methods and the extra tests.
        command: the command that reproduces the report (printed in it).
    Returns:
        The ``evaluation-report`` artifact (Markdown, Parquet tables, PNG chart).
    """
    report = compose_evaluation(TASK_STEPS, root, corpus, encoder, base, config, command)
    run_logger().info("evaluation report %s", report.key[:12])
    return report


def evaluate(
    store: ArtifactStore,
    config: EvaluationConfig,
    encoder_ref: ArtifactRef,
    base_ref: ArtifactRef,
    transfer_base_ref: ArtifactRef | None = None,
    command: str = "",
) -> EvaluationResult:
    """``evaluate_flow``'s composition without Prefect (every step cached in ``store``): the
    report artifact and its tables. The transfer base LM, when ``config`` has transfer sets and
    ``transfer_base_ref`` is None, is warmed up on the encoder's training dataset."""
    root = store.root.uri
    corpus = StepRef.of(store, store.get(DATASET_STAGE, encoder_ref.inputs[1]))
    transfer = StepRef.of(store, transfer_base_ref) if transfer_base_ref is not None else None
    return compose_evaluation(
        PLAIN_STEPS,
        root,
        corpus,
        StepRef.of(store, encoder_ref),
        StepRef.of(store, base_ref),
        config,
        command,
        transfer,
    )
