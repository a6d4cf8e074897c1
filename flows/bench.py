"""The LDS benchmark end to end (``airrep bench lds``), every step cached in the store: P3 split
by template, labels on ``flan_p3_train``, the AirRep encoder, then the evaluation flow's
composition (``flows.evaluation_flow.evaluate``) without a Prefect run."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.labels import LabelsConfig, base_steps_override
from airrep_core.config.pipeline import EncoderStageConfig
from flows.evaluation_flow import evaluate
from storage.artifacts import ArtifactRef, ArtifactStore
from tasks import labels
from tasks.encoder import train_encoder_artifact
from tasks.evaluation import EvaluationResult
from tasks.ground_truth import P3_TRAIN_DATASET, import_p3_holdout
from tasks.teacher import build_teacher

log = logging.getLogger("airrep.evaluation")


@dataclass(frozen=True)
class BenchResult:
    """``run_bench``'s outcome: the report and the artifacts it rests on."""

    evaluation: EvaluationResult
    encoder_ref: ArtifactRef
    base_ref: ArtifactRef
    labels_key: str
    command: str


def bench_command(
    preset: str,
    eval_sets: Sequence[str] | None,
    root: str | None,
    transfer_sets: Sequence[str] | None = None,
    recipe: str | None = None,
    base_steps: int | None = None,
) -> str:
    """The CLI command that reproduces a benchmark run."""
    parts = ["airrep", "bench", "lds", "--preset", preset]
    if recipe:
        parts += ["--recipe", recipe]
    if base_steps:
        parts += ["--base-steps", str(base_steps)]
    for name in eval_sets or ():
        parts += ["--eval-set", name]
    for name in transfer_sets or ():
        parts += ["--transfer-set", name]
    if root:
        parts += ["--root", root]
    return shlex.join(parts)


def run_bench(
    store: ArtifactStore,
    preset: str,
    eval_sets: Sequence[str] | None = None,
    root: str | None = None,
    progress: Callable[[str], None] | None = None,
    transfer_sets: Sequence[str] | None = None,
    recipe: str | None = None,
    base_steps: int | None = None,
) -> BenchResult:
    """The LDS benchmark at ``preset`` end to end: P3 split by template, labels on
    ``flan_p3_train`` (``LabelsConfig.preset``), the AirRep encoder (``EncoderStageConfig.preset``,
    after the teacher when the recipe has one), then the evaluation (with the transfer base LM
    when there are transfer sets: the preset's, or ``transfer_sets``). ``base_steps`` replaces
    the scratch base LM's warm-up budget (``BaseModelConfig.max_steps``): the regime table's
    other base budgets; labels and ground truths are then those of that base."""
    say = progress or log.info
    config = EvaluationConfig.preset(preset)
    if eval_sets:
        config = config.replace(eval_sets=tuple(eval_sets))
    if transfer_sets:
        config = config.replace(transfer_eval_sets=tuple(transfer_sets))
    command = bench_command(preset, eval_sets, root, transfer_sets, recipe, base_steps)
    say("importing P3 split by template (train / held out)")
    p3_train, _ = import_p3_holdout(store)
    say(f"labels for AirRep on {P3_TRAIN_DATASET} ({preset})")
    labels_config = LabelsConfig.preset(preset, **base_steps_override(base_steps))
    labels_result = labels.generate_labels(store, p3_train, labels_config)
    labels_ref = store.get(labels.LABELS_STAGE, labels_result.labels_key)
    base_ref = store.get(labels.BASE_STAGE, labels_result.base_key)
    stage = EncoderStageConfig.preset(preset, train={"recipe": recipe} if recipe else {})
    teacher_ref = None
    if stage.train.teacher_steps:
        say(f"teacher scores ({' + '.join(stage.teacher.methods)}) on {P3_TRAIN_DATASET}")
        teacher_ref = build_teacher(
            store, p3_train.ref, labels_ref, base_ref, stage.teacher, stage.validation_splits
        )
    say(f"training the AirRep encoder (recipe {stage.train.recipe})")
    encoder_ref = train_encoder_artifact(
        store, p3_train.ref, labels_ref, stage, teacher_ref=teacher_ref, base_ref=base_ref
    )
    say("evaluating")
    result = evaluate(store, config, encoder_ref, base_ref, command=command)
    return BenchResult(result, encoder_ref, base_ref, labels_result.labels_key, command)
