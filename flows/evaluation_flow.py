"""The ``evaluate`` stage flow: the held-out check first, then LDS ground truth per evaluation
set, every method's scores, the classification / data-selection / transfer tests and the report
(DESIGN.md §3).

Each ground truth and each (method, set) score is its own task run, named after the set and the
method; all of them are cached in the store, so a new version of one evaluation set reruns only
that set's ground truth, its scores and the report.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from airrep_core.config.evaluation import EvaluationConfig
from tasks.data_selection import select_task
from tasks.evaluation import check_held_out_task, evaluation_report_task
from tasks.ground_truth import ground_truth_task, resolve_eval_set_task
from tasks.labels import prepare_base_model
from tasks.method_scores import classify_task, score_method_task
from tasks.monitoring import run_logger
from tasks.references import StepRef


def evaluation_run_name() -> str:
    """``evaluate-<set>-<set>...`` from the run's ``config`` parameter."""
    config = flow_run.parameters.get("config")
    sets = (
        config.eval_sets
        if isinstance(config, EvaluationConfig)
        else (config or {}).get("eval_sets", ())
    )
    return "evaluate-" + "-".join(sets) if sets else "evaluate"


def ground_truths(
    root: str, names: tuple[str, ...], base: StepRef, config: EvaluationConfig
) -> dict[str, StepRef]:
    """Each evaluation set's ground truth from ``base`` (its latest dataset version)."""
    datasets = {name: resolve_eval_set_task(root, name) for name in names}
    return {name: ground_truth_task(root, name, datasets[name], base, config) for name in names}


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
    logger = run_logger()
    check_held_out_task(root, encoder, config)  # before any ground truth is computed
    truths = ground_truths(root, config.eval_sets, base, config)
    transfer_base = None
    if config.transfer_eval_sets:
        transfer_base = prepare_base_model(root, corpus, config.transfer_base)
        truths.update(
            {
                f"transfer:{name}": truth
                for name, truth in ground_truths(
                    root, config.transfer_eval_sets, transfer_base, config
                ).items()
            }
        )
    scores = list(truths.values())
    for label, truth in truths.items():
        methods = config.transfer_methods if label.startswith("transfer:") else config.methods
        for method in config.method_list(methods):
            scores.append(score_method_task(root, method, truth, encoder, config))
    if config.classification_tasks:
        scores += classify_task(root, encoder, base, config)
    if config.selection_methods:
        scores += select_task(root, encoder, base, config)
    logger.info("%d ground truths scored; writing the report", len(truths))
    return evaluation_report_task(root, config, encoder, base, scores, transfer_base, command)
