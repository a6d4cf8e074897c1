"""The label-generation flow: base model, splits, fine-tune-and-evaluate shards, gathered labels.

Shards of (split, subset) units are dispatched either in-process (a bounded thread task runner)
or, with ``dispatch="deployment"``, as flow runs of the ``label-shard`` deployment on the ``gpu``
work pool (one worker per GPU); the parent waits for them and reads their units from the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from prefect import flow, task
from prefect.deployments import run_deployment
from prefect.task_runners import ThreadPoolTaskRunner

from airrep_core.config.labels import LabelsConfig
from tasks.labels import (
    SHARD_TIMEOUT_S,
    LabelShard,
    Unit,
    gather_labels_task,
    label_shard,
    prepare_base_model,
)
from tasks.monitoring import publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.splits import read_splits, sample_splits_task

LABEL_SHARD_DEPLOYMENT = "label-shard/label-shard"
Dispatch = Literal["local", "deployment"]


def plan_shards(splits: StepRef, shard_size: int) -> list[list[Unit]]:
    """The units of every split, in order, cut into shards of at most ``shard_size``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    store = open_store(splits.root)
    units = [
        (split.split_id, j)
        for split in read_splits(store, splits.resolve())
        for j in split.subset_ids
    ]
    return [units[i : i + shard_size] for i in range(0, len(units), shard_size)]


def shard_name(index: int, units: Sequence[Unit]) -> str:
    """A readable shard name: ``3-s1.8-s1.15`` (index, first and last unit)."""
    first, last = units[0], units[-1]
    return f"{index}-s{first[0]}.{first[1]}-s{last[0]}.{last[1]}"


@flow(
    name="label-shard",
    flow_run_name="label-shard-{shard.name}",
    timeout_seconds=SHARD_TIMEOUT_S,
    log_prints=True,
)
def label_shard_flow(shard: LabelShard) -> list[StepRef]:
    """One shard as its own flow run: what the ``label-shard`` deployment runs on a GPU worker."""
    return label_shard(shard)


@task(name="dispatch-label-shard", task_run_name="dispatch-{shard.name}")
def dispatch_shard(deployment: str, shard: LabelShard) -> str:
    """Run one shard as a flow run of ``deployment`` and wait for it; returns the flow run id."""
    flow_run = run_deployment(
        deployment,
        parameters={"shard": shard},
        flow_run_name=f"label-shard-{shard.name}",
        timeout=None,
        poll_interval=2,
        tags=["label-shard"],
    )
    if not flow_run.state or not flow_run.state.is_completed():
        raise RuntimeError(
            f"label shard {shard.name}: flow run {flow_run.id} ended {flow_run.state}"
        )
    return str(flow_run.id)


@flow(
    name="generate-labels",
    flow_run_name="labels-{dataset.summary[name]}-{dataset.key:.8}",
    task_runner=ThreadPoolTaskRunner(max_workers=8),
    log_prints=True,
)
def generate_labels_flow(
    root: str,
    dataset: StepRef,
    config: LabelsConfig,
    dispatch: Dispatch = "local",
    shard_size: int = 8,
    parallel_shards: int = 1,
    deployment: str = LABEL_SHARD_DEPLOYMENT,
) -> StepRef:
    """Labels of ``config`` for a dataset version: the subset-losses table (DESIGN.md §2).

    Args:
        root: storage root URI.
        dataset: the dataset version (``StepRef`` of a ``dataset`` artifact).
        config: sampling, base-model and fine-tuning configs.
        dispatch: ``local`` runs shards in this process, ``parallel_shards`` at a time;
            ``deployment`` runs each shard as a flow run of ``deployment`` (GPU work pool).
        shard_size: (split, subset) units per shard (dispatch costs seconds, a unit less).
    """
    if parallel_shards < 1:
        raise ValueError(f"parallel_shards must be >= 1, got {parallel_shards}")
    logger = run_logger()
    base = prepare_base_model(root, dataset, config.base)
    splits = sample_splits_task(root, dataset, config.sampling, config.base)
    shards = [
        LabelShard(root, dataset, base, splits, config.finetune, units, shard_name(i, units))
        for i, units in enumerate(plan_shards(splits, shard_size))
    ]
    n_units = sum(len(shard.units) for shard in shards)
    logger.info("%d units in %d shards, dispatch=%s", n_units, len(shards), dispatch)
    if dispatch == "deployment":
        futures = [dispatch_shard.submit(deployment, shard) for shard in shards]
        for future in futures:
            future.result()
    elif dispatch == "local":
        for start in range(0, len(shards), parallel_shards):
            futures = [label_shard.submit(s) for s in shards[start : start + parallel_shards]]
            for future in futures:
                future.result()
    else:
        raise ValueError(f"dispatch must be 'local' or 'deployment', got {dispatch!r}")
    result = gather_labels_task(
        root, dataset, base, splits, config.finetune, {"labels": config.to_dict()}
    )
    publish_table(
        "labels-summary",
        [{"artifact": result.uri, **result.summary}],
        "Label generation: rows, units and the mean per-target loss spread across subsets",
    )
    return result
