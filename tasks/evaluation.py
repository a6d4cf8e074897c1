"""The whole evaluation and the LDS benchmark end to end over the artifact store (DESIGN.md
§3): plain step functions.

``evaluate`` resolves every evaluation set (``tasks.ground_truth``), builds the ground truths,
scores the methods (LDS and classification, ``tasks.method_scores``), runs the data selection
(``tasks.data_selection``) and the cross-model transfer, then writes the report. Stage and key
(``content_key(stage, config, inputs)``):

- ``evaluation-report``: Markdown, Parquet tables and the PNG chart of everything above.

``run_bench`` is the benchmark end to end: P3 split by template, labels, the AirRep encoder, then
``evaluate``.

Honesty: ``evaluate`` refuses an AirRep encoder whose training dataset shares an example (by
content hash) with any evaluation set (``tasks.ground_truth.check_held_out``), and the test
examples are never used to fit or tune.
"""

from __future__ import annotations

import base64
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.evaluation.report import (
    CHART_FILE,
    NOISE_CEILING,
    ReportTables,
    render_markdown,
    write_report,
)
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from tasks import labels
from tasks.caching import store_task
from tasks.corpus import load_corpus
from tasks.data_selection import selections
from tasks.encoder import train_encoder_artifact
from tasks.ground_truth import (
    P3_TRAIN_DATASET,
    build_ground_truth,
    ceiling_row,
    check_held_out,
    import_p3_holdout,
    load_ground_truth,
    resolve_eval_dataset,
)
from tasks.method_scores import (
    SOURCE_TASK_SETS,
    MethodFactory,
    classifications,
    lds_row,
    score_method,
)
from tasks.monitoring import publish_link, publish_markdown, publish_table, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS
from tasks.teacher import build_teacher

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


def _lds_rows(
    store: ArtifactStore,
    truth_refs: dict[str, ArtifactRef],
    methods: Sequence[str],
    factory: MethodFactory,
) -> tuple[list[dict[str, Any]], list[str]]:
    rows, keys = [], []
    for truth_ref in truth_refs.values():
        for method in methods:
            ref = score_method(store, method, truth_ref, factory)
            rows.append(lds_row(ref))
            keys.append(ref.key)
        ceiling = ceiling_row(load_ground_truth(store, truth_ref))
        if ceiling is not None:
            rows.append(ceiling)
    return rows, keys


def check_encoder_held_out(
    store: ArtifactStore, config: EvaluationConfig, encoder_ref: ArtifactRef
) -> list[str]:
    """``ValueError`` when the dataset ``encoder_ref`` was trained on shares an example (by content
    hash) with any evaluation set ``config`` reads (``check_held_out``); returns those sets."""
    names = used_sets(config)
    corpora = {name: load_corpus(store, resolve_eval_dataset(store, name)) for name in names}
    check_held_out(store, encoder_ref.inputs[1], corpora)
    return names


def evaluate(
    store: ArtifactStore,
    config: EvaluationConfig,
    encoder_ref: ArtifactRef,
    base_ref: ArtifactRef,
    transfer_base_ref: ArtifactRef | None = None,
    command: str = "",
    progress: labels.UnitProgress | None = None,
) -> EvaluationResult:
    """Every evaluation of ``config`` and the ``evaluation-report`` artifact (all cached).

    Args:
        encoder_ref: the AirRep encoder; its training dataset must share no example with any
            evaluation set (``check_encoder_held_out``, checked before anything is computed).
        base_ref: the base LM of the ground truth (the one AirRep's labels came from).
        transfer_base_ref: another base LM for the cross-model transfer table (skipped if None).
        command: the command that reproduces the report (printed in it).
    """
    config = resolved(config)
    check_encoder_held_out(store, config, encoder_ref)
    factory = MethodFactory(store, config, encoder_ref)
    truths = {
        name: build_ground_truth(
            store, name, resolve_eval_dataset(store, name), base_ref, config, progress
        )
        for name in config.eval_sets
    }
    methods = config.method_list(config.methods)
    lds_rows, keys = _lds_rows(store, truths, methods, factory)
    keys += [t.key for t in truths.values()]

    classification_refs = classifications(store, config, factory, base_ref)
    classification_rows = [dict(ref.metadata) for ref in classification_refs]
    keys += [ref.key for ref in classification_refs]

    selection_refs = selections(store, config, factory, base_ref)
    base_loss = selection_refs[0].metadata["base_loss"] if selection_refs else None
    selection_rows = [{**ref.metadata, "base_loss": base_loss} for ref in selection_refs]
    keys += [ref.key for ref in selection_refs]

    transfer_rows: list[dict[str, Any]] = []
    if transfer_base_ref is not None and config.transfer_eval_sets:
        transfer_truths = {
            name: build_ground_truth(
                store, name, resolve_eval_dataset(store, name), transfer_base_ref, config, progress
            )
            for name in config.transfer_eval_sets
        }
        rows, transfer_keys = _lds_rows(
            store, transfer_truths, config.method_list(config.transfer_methods), factory
        )
        base_name = transfer_base_ref.metadata.get("model", transfer_base_ref.key[:12])
        transfer_rows = [{**row, "base": base_name} for row in rows]
        keys += transfer_keys + [t.key for t in transfer_truths.values()]

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
        *methods,
        *(row["method"] for row in classification_rows + transfer_rows),
        *(row["selection"] for row in selection_rows),
    ]
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
    report_inputs = [encoder_ref.key, base_ref.key, *sorted(set(keys))]
    report_key = content_key(REPORT_STAGE, report_config, report_inputs)
    report = store.build(
        REPORT_STAGE,
        report_key,
        config=report_config,
        inputs=report_inputs,
        writer=lambda staging: {"files": write_report(staging, tables)},
    )
    return EvaluationResult(report, tables)


# ---- the benchmark end to end ----------------------------------------------------------------


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
) -> str:
    """The CLI command that reproduces a benchmark run."""
    parts = ["airrep", "bench", "lds", "--preset", preset]
    if recipe:
        parts += ["--recipe", recipe]
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
) -> BenchResult:
    """The LDS benchmark at ``preset`` end to end, every step cached in ``store``:
    P3 split by template, labels on ``flan_p3_train`` (``LabelsConfig.preset``), the AirRep encoder
    (``EncoderStageConfig.preset``), the transfer base LM when there are transfer sets (the
    preset's, or ``transfer_sets``), then ``evaluate``."""
    say = progress or log.info
    config = EvaluationConfig.preset(preset)
    if eval_sets:
        config = config.replace(eval_sets=tuple(eval_sets))
    if transfer_sets:
        config = config.replace(transfer_eval_sets=tuple(transfer_sets))
    command = bench_command(preset, eval_sets, root, transfer_sets, recipe)
    say("importing P3 split by template (train / held out)")
    p3_train, _ = import_p3_holdout(store)
    labels_config = LabelsConfig.preset(preset)
    say(f"labels for AirRep on {P3_TRAIN_DATASET} ({preset})")
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
        store, p3_train.ref, labels_ref, stage, teacher_ref=teacher_ref
    )
    transfer_base_ref = None
    if config.transfer_eval_sets:
        say(f"transfer base LM ({config.transfer_base.architecture})")
        corpus = load_corpus(store, p3_train)
        transfer_base_ref = labels.build_base(store, corpus, config.transfer_base)
    say("evaluating")
    result = evaluate(store, config, encoder_ref, base_ref, transfer_base_ref, command)
    return BenchResult(result, encoder_ref, base_ref, labels_result.labels_key, command)


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
    result = evaluate(
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
