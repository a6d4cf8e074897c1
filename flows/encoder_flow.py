"""The ``train-encoder`` stage flow: the AirRep encoder trained on a label set (DESIGN.md §2)."""

from __future__ import annotations

from prefect import flow

from airrep_core.config.pipeline import EncoderStageConfig
from tasks.encoder import train_encoder_task
from tasks.references import StepRef
from tasks.teacher import teacher_scores_task


@flow(
    name="train-encoder",
    flow_run_name="train-encoder-{labels.key:.8}-{config.train.steps}-steps",
    log_prints=True,
)
def train_encoder_flow(
    root: str,
    dataset: StepRef,
    labels: StepRef,
    config: EncoderStageConfig,
    base: StepRef | None = None,
) -> StepRef:
    """Train (or reuse) the encoder on ``labels`` of ``dataset``, after the teacher stage when
    the recipe pre-trains on a teacher (``base``: the base LM θ₀ the gradient teachers and a
    hybrid score over target-LM tokens read); a
    killed run resumes (teacher units, training checkpoints). Returns the ``encoder`` artifact
    (a Hugging Face-style directory)."""
    teacher = None
    if config.train.teacher_steps:
        if base is None:
            raise ValueError("a recipe with teacher_steps > 0 needs the base LM (base=...)")
        teacher = teacher_scores_task(root, dataset, labels, base, config)
    return train_encoder_task(root, dataset, labels, config, teacher, base)
