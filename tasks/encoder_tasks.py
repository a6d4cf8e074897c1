"""Prefect task of encoder training: progress and the training curve in the UI."""

from __future__ import annotations

import json

from prefect import task

from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.encoder_training import TrainProgress
from tasks.caching import store_verified_cache
from tasks.encoder import HISTORY_FILE, train_encoder_artifact
from tasks.monitoring import Progress, publish_link, publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS
from tasks.teacher import build_teacher

TRAIN_TIMEOUT_S = 12 * 3600


@task(
    name="train-encoder",
    task_run_name="train-encoder-{config.train.steps}-steps",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    timeout_seconds=TRAIN_TIMEOUT_S,
    **IO_RETRY_OPTIONS,
)
def train_encoder_task(
    root: str,
    dataset: StepRef,
    labels: StepRef,
    config: EncoderStageConfig,
    teacher: StepRef | None = None,
) -> StepRef:
    """Train (or reuse) the AirRep encoder on ``labels``; a killed run resumes from its last
    checkpoint. Validation metrics are logged and the curve is published as a table."""
    store = open_store(root)
    progress = Progress(f"encoder training: {config.train.steps} steps")
    logger = run_logger()

    def report(p: TrainProgress) -> None:
        progress.update(p.step, p.steps)
        if p.validation is not None:
            logger.info("step %d/%d loss %.4f validation %s", p.step, p.steps, p.loss, p.validation)

    ref = train_encoder_artifact(
        store,
        dataset.resolve(),
        labels.resolve(),
        config,
        report,
        teacher_ref=teacher.resolve() if teacher is not None else None,
    )
    step = StepRef.of(store, ref, **ref.metadata)
    history = json.loads(store.read_bytes(ref, HISTORY_FILE))
    publish_table(
        "encoder-training-curve",
        [
            {"step": r["step"], "loss": r.get("loss"), **r["validation"]}
            for r in history
            if "validation" in r
        ],
        "AirRep encoder: validation metrics during training (held-out splits)",
    )
    publish_link(step, "trained AirRep encoder (Hugging Face-style directory)")
    return step


@task(
    name="teacher-scores",
    task_run_name="teacher-{config.teacher.n_targets}x{config.teacher.n_candidates}",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    timeout_seconds=TRAIN_TIMEOUT_S,
    **IO_RETRY_OPTIONS,
)
def teacher_scores_task(
    root: str, dataset: StepRef, labels: StepRef, base: StepRef, config: EncoderStageConfig
) -> StepRef:
    """The teacher's scores of (target, candidate) pairs of the label corpus, one unit per
    teacher method (a killed run resumes after the finished methods)."""
    store = open_store(root)
    teacher = config.teacher
    progress = Progress(f"teacher scores: {' + '.join(teacher.methods)}")
    ref = build_teacher(
        store,
        dataset.resolve(),
        labels.resolve(),
        base.resolve(),
        teacher,
        config.validation_splits,
        progress=progress.update,
    )
    step = StepRef.of(store, ref, **ref.metadata)
    run_logger().info("teacher %s: %s", ref.key[:12], ref.metadata)
    publish_link(step, "teacher scores (Parquet: target, candidate, method, score)")
    return step
