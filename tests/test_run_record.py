"""The run record (``tasks.run_record``): an unchanged rerun of ``airrep run`` answers from the
store; any new dataset version or a deleted artifact makes it run again."""

from __future__ import annotations

import json
from pathlib import Path

from airrep_core.config.pipeline import PipelineConfig
from storage.artifacts import ArtifactStore, content_key
from storage.datasets import import_dataset
from tasks.references import StepRef
from tasks.run_record import read_run_record, write_run_record


def _dataset_file(path: Path, responses: list[str]) -> Path:
    rows = [{"prompt": f"question {i}", "response": r} for i, r in enumerate(responses)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _artifact(store: ArtifactStore, stage: str, n: int) -> StepRef:
    def writer(staging: Path) -> dict:
        (staging / "x.txt").write_text(str(n))
        return {"n": n}

    key = content_key(stage, {"n": n}, [])
    ref = store.build(stage, key, config={"n": n}, inputs=[], writer=writer)
    return StepRef.of(store, ref, n=n)


def _result(store: ArtifactStore) -> dict:
    stages = ("labels", "encoder", "pool", "embeddings", "evaluation")
    refs = {stage: _artifact(store, stage, i) for i, stage in enumerate(stages)}
    example = [{"direction": "helpful", "rank": 1, "score": 0.5, "example_id": "a"}]
    return {**refs, "datasets": {}, "example": example}


def test_record_round_trip_and_invalidation(file_root: str, tmp_path: Path) -> None:
    store = ArtifactStore(file_root)
    import_dataset(store, _dataset_file(tmp_path / "d.jsonl", ["a", "b"]), "d")
    config = PipelineConfig.preset("tiny").to_dict()
    result = _result(store)
    write_run_record(store, config, True, result)

    recorded = read_run_record(store, config, evaluate=True)
    assert recorded == {k: v for k, v in result.items() if k != "datasets"}
    assert read_run_record(store, config, evaluate=False) is None
    other = PipelineConfig.preset("tiny", pool_rows=7).to_dict()
    assert read_run_record(store, other, evaluate=True) is None

    # an unchanged import keeps the record; a new version of any dataset does not
    import_dataset(store, tmp_path / "d.jsonl", "d")
    assert read_run_record(store, config, evaluate=True) is not None
    import_dataset(store, _dataset_file(tmp_path / "e.jsonl", ["c"]), "e")
    assert read_run_record(store, config, evaluate=True) is None


def test_record_with_a_deleted_artifact_is_a_miss(file_root: str, tmp_path: Path) -> None:
    store = ArtifactStore(file_root)
    import_dataset(store, _dataset_file(tmp_path / "d.jsonl", ["a"]), "d")
    config = PipelineConfig.preset("tiny").to_dict()
    result = _result(store)
    write_run_record(store, config, True, result)
    store.delete(result["encoder"].resolve())
    assert read_run_record(store, config, evaluate=True) is None


def test_cli_parses_the_sample_files_only_to_check_a_recorded_run(
    file_root: str, tmp_path: Path, monkeypatch
) -> None:
    """``airrep run`` looks the record up first: with none, it leaves the import to the pipeline
    (no parse here); with one, one import per sample dataset checks the files, and a changed file
    makes it run again."""
    import storage.datasets
    import storage.sample_data
    from flows.cli import _recorded_result

    monkeypatch.setenv(storage.sample_data.DATA_DIR_ENV, str(tmp_path))
    sample = storage.sample_data.SampleDataset("d", ("d.jsonl",))
    monkeypatch.setattr(storage.sample_data, "SAMPLE_DATASETS", {"d": sample})
    parsed: list[str] = []

    def counting_import(store, paths, name, **kwargs):
        parsed.append(name)
        return import_dataset(store, paths, name, **kwargs)

    monkeypatch.setattr(storage.datasets, "import_dataset", counting_import)
    store = ArtifactStore(file_root)
    config = PipelineConfig.preset("tiny")
    _dataset_file(tmp_path / "d.jsonl", ["a", "b"])
    assert _recorded_result(store, file_root, config, import_data=True) is None
    assert parsed == []

    import_dataset(store, tmp_path / "d.jsonl", "d")
    result = _result(store)
    write_run_record(store, config.to_dict(), True, result)
    recorded = _recorded_result(store, file_root, config, import_data=True)
    assert recorded == {k: v for k, v in result.items() if k != "datasets"}
    assert parsed == ["d"]

    _dataset_file(tmp_path / "d.jsonl", ["a", "changed"])
    assert _recorded_result(store, file_root, config, import_data=True) is None
    assert parsed == ["d", "d"]
    assert read_run_record(store, config.to_dict(), evaluate=True) is None
