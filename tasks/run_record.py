"""The record of a finished pipeline run: how an unchanged rerun answers from the store.

A ``pipeline-run`` artifact holds what ``airrep run`` prints (every stage's ``StepRef``, the
attribution example's records) at a content key of
(pipeline config, whether it evaluated, the latest version of every dataset in the store, code
version). Every stage's own key is a function of these, so while the record exists and every
artifact it references is still published, rerunning the pipeline would only find each stage's
artifact and load it: ``airrep run`` then prints the record without starting Prefect or loading
a model. Any new dataset version (imported by the run or by anyone else) changes the key.

Imports neither Prefect nor torch (the CLI reads records before deciding to run anything).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storage.artifacts import ArtifactStore, content_key
from storage.dataset_heads import latest_version, list_datasets
from tasks.references import StepRef, step_refs

RUN_STAGE = "pipeline-run"
RECORD_FILE = "run.json"
STAGES = ("labels", "encoder", "pool", "embeddings", "evaluation")


def run_key(store: ArtifactStore, config: dict[str, Any], evaluate: bool) -> str:
    """The record key of a run of ``config`` (``PipelineConfig.to_dict()``) on ``store`` now."""
    return content_key(RUN_STAGE, _record_config(config, evaluate), _dataset_versions(store))


def write_run_record(
    store: ArtifactStore,
    config: dict[str, Any],
    evaluate: bool,
    result: dict[str, Any],
) -> StepRef:
    """Publish the record of a finished run (``result``: ``pipeline_flow``'s return value)."""
    inputs = _dataset_versions(store)
    record_config = _record_config(config, evaluate)
    key = content_key(RUN_STAGE, record_config, inputs)
    record = {
        "stages": {s: result[s].to_dict() if result[s] is not None else None for s in STAGES},
        "example": result["example"],
    }

    def writer(staging: Path) -> dict[str, Any]:
        (staging / RECORD_FILE).write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
        return {"stages": list(STAGES)}

    ref = store.build(RUN_STAGE, key, config=record_config, inputs=inputs, writer=writer)
    return StepRef.of(store, ref)


def read_run_record(
    store: ArtifactStore, config: dict[str, Any], evaluate: bool
) -> dict[str, Any] | None:
    """The recorded result of an identical earlier run (``pipeline_flow``'s stage refs and
    ``example``), or None when there is none or one of its artifacts was
    deleted since."""
    key = run_key(store, config, evaluate)
    if not store.exists(RUN_STAGE, key):
        return None
    raw = json.loads(store.read_bytes(store.get(RUN_STAGE, key), RECORD_FILE))
    result: dict[str, Any] = {
        stage: StepRef(**ref) if ref is not None else None for stage, ref in raw["stages"].items()
    }
    if not all(ref.exists() for ref in step_refs(result)):
        return None
    return {**result, "example": raw["example"]}


def _record_config(config: dict[str, Any], evaluate: bool) -> dict[str, Any]:
    return {"pipeline": config, "evaluate": evaluate}


def _dataset_versions(store: ArtifactStore) -> list[str]:
    """``name@version`` of the latest version of every dataset in ``store``, sorted."""
    return [f"{name}@{latest_version(store, name).version}" for name in list_datasets(store)]
