"""The ``train-encoder`` stage flow: the AirRep encoder trained on a label set (DESIGN.md §2)."""

from __future__ import annotations

from prefect import flow

from airrep_core.config.pipeline import EncoderStageConfig
from tasks.encoder_tasks import train_encoder_task
from tasks.references import StepRef


@flow(
    name="train-encoder",
    flow_run_name="train-encoder-{labels.key:.8}-{config.train.steps}-steps",
    log_prints=True,
)
def train_encoder_flow(
    root: str, dataset: StepRef, labels: StepRef, config: EncoderStageConfig
) -> StepRef:
    """Train (or reuse) the encoder on ``labels`` of ``dataset``; a killed run resumes from its
    last checkpoint. Returns the ``encoder`` artifact (a Hugging Face-style directory)."""
    return train_encoder_task(root, dataset, labels, config)
