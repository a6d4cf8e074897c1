"""Training the AirRep encoder over the artifact store (DESIGN.md §2 "Training").

Stage ``encoder``: the trained encoder as a Hugging Face-style directory (``AirRepEncoder.save``)
in ``encoder/``, plus ``history.json`` (the training curve). Key: the stage config and the keys of the label set
and of the dataset version holding the examples. Training checkpoints go to a local work folder
named by that key, so a killed training resumes from its last checkpoint; the folder is removed
once the artifact is published.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.encoder.head_training import train_encoder_head
from airrep_core.encoder.model import ENCODER_CONFIG_FILE, AirRepEncoder
from airrep_core.encoder.training import ProgressCallback, TrainProgress, train_encoder
from airrep_core.lm.loading import load_causal_lm
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from tasks import labels
from tasks.caching import store_task
from tasks.corpus import load_corpus
from tasks.monitoring import Progress, publish_link, publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.teacher import load_teacher

ENCODER_STAGE = "encoder"
ENCODER_SUBDIR = "encoder"
HISTORY_FILE = "history.json"

log = logging.getLogger("airrep.encoder")


def work_dir(stage: str, key: str) -> Path:
    """A local folder for resumable intermediate state of one artifact's build
    (``$AIRREP_WORK_DIR``, default ``~/.cache/airrep/work``)."""
    base = Path(os.environ.get("AIRREP_WORK_DIR", Path.home() / ".cache" / "airrep" / "work"))
    return base / stage / key


def train_encoder_artifact(
    store: ArtifactStore,
    dataset: ArtifactRef,
    labels_ref: ArtifactRef,
    config: EncoderStageConfig,
    progress: ProgressCallback | None = None,
    teacher_ref: ArtifactRef | None = None,
    base_ref: ArtifactRef | None = None,
) -> ArtifactRef:
    """The ``encoder`` artifact trained on ``labels_ref`` (built when absent).

    The last ``config.validation_splits`` splits are held out for validation and best-checkpoint
    selection (by validation LDS); the rest are trained on. ``config.train.recipe``: ``paper``
    trains the whole encoder (``train_encoder``, resumable checkpoints); ``efficient`` trains the
    projection on frozen backbone features (``train_encoder_head``), first on the teacher's
    pseudo-labels (``teacher_ref``, a ``teacher-scores`` artifact) when ``teacher_steps`` > 0.
    ``base_ref`` (the base LM θ₀) gives the tokenizer of a hybrid score over target-LM tokens
    and the input embeddings of a token bag (``train.needs_base_lm``).
    """
    if config.train.teacher_steps and teacher_ref is None:
        raise ValueError(
            f"teacher_steps={config.train.teacher_steps} needs a teacher-scores artifact "
            "(tasks.teacher.build_teacher)"
        )
    if not config.train.teacher_steps:
        teacher_ref = None
    if not config.train.needs_base_lm:
        base_ref = None
    elif base_ref is None:
        raise ValueError(
            "a hybrid score over target-LM tokens (train.lexical.tokens='target_lm') or a token "
            "bag (train.token_bag_weights) needs the base LM (base_ref=...)"
        )
    config = resolved(config)
    stage_config = config.to_dict()
    inputs = [
        labels_ref.key,
        dataset.key,
        *([teacher_ref.key] if teacher_ref else []),
        *([base_ref.key] if base_ref else []),
    ]
    key = content_key(ENCODER_STAGE, stage_config, inputs)
    checkpoints = work_dir(ENCODER_STAGE, key)

    def writer(staging: Path) -> dict[str, Any]:
        split_labels = labels.load_split_labels(store, labels_ref)
        n_val = config.validation_splits
        if len(split_labels) <= n_val:
            raise ValueError(
                f"labels {labels_ref.key[:12]} have {len(split_labels)} splits; "
                f"validation_splits={n_val} leaves none to train on"
            )
        train_splits = split_labels[: len(split_labels) - n_val]
        validation = split_labels[len(split_labels) - n_val :]
        corpus = load_corpus(store, dataset)
        if config.train.recipe == "efficient":
            base_model, base_tokenizer = None, None
            if base_ref is not None and config.train.token_bag_weights:
                base_model, base_tokenizer = load_causal_lm(store.local_dir(base_ref), "cpu")
            elif base_ref is not None:
                base_tokenizer = AutoTokenizer.from_pretrained(str(store.local_dir(base_ref)))
            result = train_encoder_head(
                train_splits,
                corpus.examples,
                config.train,
                validation_splits=validation,
                teacher=load_teacher(store, teacher_ref) if teacher_ref else None,
                lexical_tokenizer=base_tokenizer,
                base_model=base_model,
                progress=progress,
            )
        else:
            result = train_encoder(
                train_splits,
                corpus.examples,
                config.train,
                validation_splits=validation,
                checkpoint_dir=checkpoints,
                progress=progress,
            )
        result.encoder.save(staging / ENCODER_SUBDIR)
        (staging / HISTORY_FILE).write_text(json.dumps(result.history, indent=1))
        return {
            "best_step": result.best_step,
            "best_validation": result.best_validation,
            "train_splits": len(train_splits),
            "validation_splits": len(validation),
            "steps": config.train.steps,
        }

    ref = store.build(ENCODER_STAGE, key, config=stage_config, inputs=inputs, writer=writer)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return ref


def encoder_directory(store: ArtifactStore, ref: ArtifactRef) -> Path:
    """The local directory of the saved encoder inside an ``encoder`` artifact."""
    directory = store.local_dir(ref) / ENCODER_SUBDIR
    if not (directory / ENCODER_CONFIG_FILE).is_file():
        raise ValueError(
            f"encoder artifact {ref.uri} holds no saved AirRepEncoder "
            f"({ENCODER_SUBDIR}/{ENCODER_CONFIG_FILE}); files: {sorted(ref.files)[:10]}"
        )
    return directory


def load_encoder(store: ArtifactStore, ref: ArtifactRef) -> AirRepEncoder:
    """The encoder checkpoint of an ``encoder`` artifact, loaded for inference (eval mode)."""
    return AirRepEncoder.from_pretrained(encoder_directory(store, ref)).eval()


@store_task("train-encoder", "train-encoder-{config.train.steps}-steps", gpu=True, timeout_h=12)
def train_encoder_task(
    root: str,
    dataset: StepRef,
    labels: StepRef,
    config: EncoderStageConfig,
    teacher: StepRef | None = None,
    base: StepRef | None = None,
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
        base_ref=base.resolve() if base is not None else None,
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
