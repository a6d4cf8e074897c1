"""The end-to-end AirRep pipeline flow, the rebuild flow triggered by data updates, and the data
watcher (DESIGN.md §1, §4).

Stages, each a subflow: import datasets (with the P3 template split: ``flan_p3_train`` is the
label corpus, ``flan_p3_heldout`` the P3 evaluation set) → ``generate-labels`` →
``train-encoder`` → ``refresh-embeddings`` (pool sample and embedding store) → an attribution
example → ``evaluate`` (LDS against the baselines). Each stage's output has a content key, so a
rerun recomputes only what changed: a new corpus version reruns everything downstream, a new pool
version only its embeddings, a new evaluation-set version only its ground truth and evaluation.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from airrep_core.config.pipeline import PipelineConfig
from flows.embeddings_flow import refresh_embeddings_flow
from flows.encoder_flow import train_encoder_flow
from flows.evaluation_flow import evaluate_flow
from flows.events import emit_dataset_updated
from flows.labels_flow import Dispatch, generate_labels_flow
from storage.root import default_root_uri
from storage.sample_data import SAMPLE_DATASETS
from tasks.data_tasks import import_dataset_task, resolve_dataset_task
from tasks.embeddings import as_dataset_version, attribution_example_task
from tasks.ground_truth import split_p3_task
from tasks.labels import prepare_base_model
from tasks.monitoring import publish_markdown, run_logger, stage
from tasks.references import StepRef, open_store
from tasks.run_record import write_run_record


def import_samples(root: str) -> dict[str, StepRef]:
    """Import every sample dataset and the P3 template split (a no-op for unchanged files);
    emits the update event for the ones whose latest version changed (new content or a revert)."""
    imported = {}
    for sample in SAMPLE_DATASETS.values():
        imported[sample.name] = import_dataset_task(
            root, [str(p) for p in sample.paths()], sample.name, sample.skip_invalid
        )
    imported.update(split_p3_task(root))
    for ref, changed in imported.values():
        if changed:
            emit_dataset_updated(as_dataset_version(ref), root)
    return {name: ref for name, (ref, _) in imported.items()}


@flow(name="airrep-pipeline", flow_run_name="pipeline-{preset}", log_prints=True)
def pipeline_flow(
    preset: str = "tiny",
    root: str | None = None,
    config: PipelineConfig | None = None,
    import_data: bool = True,
    dispatch: Dispatch = "local",
    shard_size: int = 8,
    parallel_shards: int = 1,
    evaluate: bool = True,
) -> dict[str, Any]:
    """AirRep end to end.

    Args:
        preset: ``tiny`` (tests, minutes on a CPU), ``mini`` (the CPU benchmark), ``paper``.
        root: storage root URI (default ``$AIRREP_STORAGE_ROOT`` or ``./artifacts``).
        config: overrides the preset's ``PipelineConfig`` when given.
        import_data: import the sample datasets first (else use the latest versions in the store).
        dispatch, shard_size, parallel_shards: how label shards run (see ``generate-labels``).
        evaluate: run the ``evaluate`` stage (LDS against the baselines) at the end.
    Returns:
        The ``StepRef`` of every stage's artifact (``evaluation`` is None when not evaluated),
        and the attribution example's records. The same is recorded in the store
        (``tasks.run_record``), where ``airrep run`` finds it when nothing changed.
    """
    root = root or default_root_uri()
    config = config or PipelineConfig.preset(preset)
    logger = run_logger()
    needed = {config.corpus, config.pool, config.query_dataset}
    with stage("import datasets"):
        if import_data:
            datasets = import_samples(root)
            missing = needed - set(datasets)
            datasets.update({name: resolve_dataset_task(root, name) for name in missing})
        else:
            datasets = {name: resolve_dataset_task(root, name) for name in needed}
    with stage("generate labels"):
        labels = generate_labels_flow(
            root,
            datasets[config.corpus],
            config.labels,
            dispatch=dispatch,
            shard_size=shard_size,
            parallel_shards=parallel_shards,
        )
    with stage("train the encoder"):
        base = prepare_base_model(root, datasets[config.corpus], config.labels.base)
        encoder = train_encoder_flow(root, datasets[config.corpus], labels, config.encoder, base)
    with stage("embed the pool"):
        pool, embeddings = refresh_embeddings_flow(
            root, encoder, datasets[config.pool], config.pool_rows, config.embedding
        )
    with stage("attribute an example"):
        example = attribution_example_task(root, encoder, pool, datasets[config.query_dataset])
    evaluation = None
    if evaluate:
        command = f"airrep run --preset {preset}" + (f" --root {root}" if root else "")
        with stage("evaluate against the baselines"):
            evaluation = evaluate_flow(
                root, datasets[config.corpus], encoder, base, config.evaluation, command
            )
    logger.info("pipeline done: encoder %s, embeddings %s", encoder.key[:12], embeddings.key[:12])
    publish_markdown(
        "pipeline-report",
        _report(preset, labels, encoder, embeddings, evaluation, example),
        f"AirRep pipeline ({preset})",
    )
    result = {
        "datasets": datasets,
        "labels": labels,
        "encoder": encoder,
        "pool": pool,
        "embeddings": embeddings,
        "evaluation": evaluation,
        "example": example,
    }
    write_run_record(open_store(root), config.to_dict(), evaluate, result)
    return result


@flow(name="airrep-rebuild", flow_run_name="rebuild-{dataset}-{version:.12}", log_prints=True)
def rebuild_flow(
    dataset: str, version: str, root: str | None = None, preset: str = "mini"
) -> dict[str, Any]:
    """Triggered by ``airrep.dataset.updated``: rerun the pipeline on the latest versions in the
    store; stages upstream of the changed dataset find their artifacts and are skipped."""
    run_logger().info("dataset %s has a new version %s: rebuilding downstream", dataset, version)
    return pipeline_flow(preset=preset, root=root, import_data=False)


@flow(name="airrep-watch-data", log_prints=True)
def watch_data_flow(root: str | None = None) -> dict[str, str]:
    """Import every sample dataset; each import that yields a new version emits
    ``airrep.dataset.updated`` (which triggers the ``rebuild`` deployment)."""
    refs = import_samples(root or default_root_uri())
    return {name: ref.key for name, ref in refs.items()}


def _report(
    preset: str,
    labels: StepRef,
    encoder: StepRef,
    embeddings: StepRef,
    evaluation: StepRef | None,
    example: list[dict],
) -> str:
    lines = [
        f"# AirRep pipeline ({preset})",
        "",
        "| stage | artifact | summary |",
        "|---|---|---|",
    ]
    stages = [("labels", labels), ("encoder", encoder), ("embeddings", embeddings)]
    for name, ref in stages + ([("evaluation", evaluation)] if evaluation else []):
        summary = ", ".join(f"{k}={v}" for k, v in ref.summary.items() if not isinstance(v, dict))
        lines.append(f"| {name} | [{ref.key[:12]}]({ref.uri}) | {summary} |")
    if example:
        lines += ["", f"## Attribution example: {example[0]['query_id']}", ""]
        lines += [f"> {example[0]['query_prompt'][:300]}", ""]
        lines += ["| direction | rank | score | example | prompt |", "|---|---|---|---|---|"]
        for r in example:
            prompt = r["prompt"][:80].replace("|", "/").replace("\n", " ")
            lines.append(
                f"| {r['direction']} | {r['rank']} | {r['score']:.3f} | {r['example_id']} | {prompt} |"
            )
    return "\n".join(lines)
