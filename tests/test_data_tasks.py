"""The import tasks' return value: whether the dataset's latest version changed."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.data_tasks import import_dataset_task


def _jsonl(path: Path, prompts: list[str]) -> str:
    path.write_text(
        "".join(json.dumps({"prompt": p, "response": f"r-{p}"}) + "\n" for p in prompts),
        encoding="utf-8",
    )
    return str(path)


def test_import_task_reports_a_new_version_and_a_revert_as_changed(tmp_path: Path) -> None:
    root = (tmp_path / "store").as_uri()
    first = _jsonl(tmp_path / "a.jsonl", ["one", "two"])
    second = _jsonl(tmp_path / "b.jsonl", ["three"])
    ref_a, changed = import_dataset_task.fn(root, [first], "demo")
    assert changed
    assert import_dataset_task.fn(root, [first], "demo") == (ref_a, False)  # unchanged
    _, changed = import_dataset_task.fn(root, [second], "demo")
    assert changed
    ref_back, changed = import_dataset_task.fn(root, [first], "demo")  # revert to a stored one
    assert changed and ref_back.key == ref_a.key
    assert ref_back.summary == {"name": "demo", "version": ref_a.key, "rows": 2}
