""" "Latest" is the last import: a revert (import A, then B, then A again) makes A the latest
again, ``data show`` lists the history in order, and the rebuild event is emitted. The store is
driven by the real ``airrep`` CLI in subprocesses; the event is read back from a real
local Prefect server."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from airrep_cli import airrep, write_jsonl
from prefect_server import LocalPrefectServer

from flows.events import DATASET_UPDATED
from storage.artifacts import ArtifactStore
from storage.dataset_heads import dataset_history, latest_version

A = [
    {"prompt": "What is 2+2?", "response": "4"},
    {"prompt": "Capital of France?", "response": "Paris"},
]
B = [{"prompt": "What is 2+3?", "response": "5"}]


def test_a_revert_makes_the_old_version_latest_again_on_the_cli(tmp_path: Path) -> None:
    root = (tmp_path / "store").as_uri()
    data = tmp_path / "a.jsonl"
    states = []
    for rows in (A, B, A):
        write_jsonl(data, rows)
        result = airrep("data", "import", str(data), "--name", "rel", "--root", root)
        assert result.returncode == 0, result.stdout + result.stderr
        states.append(result.stdout)
    assert "new version" in states[0] and "new version" in states[1]
    assert "it is the latest again" in states[2]
    store = ArtifactStore(root)
    history = dataset_history(store, "rel")
    a_version = history[0].version.short_version
    assert [(e.kind, e.version.short_version) for e in history] == [
        ("published", a_version),
        ("published", history[1].version.short_version),
        ("re-imported", a_version),
    ]
    assert latest_version(store, "rel").short_version == a_version
    listed = airrep("data", "list", "--root", root)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "rel" in line]
    assert a_version in row and "2" in row.split(a_version)[1]  # A's 2 rows, 2 versions
    shown = airrep("data", "show", "rel", "--root", root)
    assert shown.returncode == 0, shown.stderr
    lines = [
        line for line in shown.stdout.splitlines() if "published" in line or "re-imported" in line
    ]
    assert [("re-imported" in line, a_version in line) for line in lines] == [
        (False, True),
        (False, False),
        (True, True),
    ]
    assert "<- shown" in lines[2]
    again = airrep("data", "import", str(data), "--name", "rel", "--root", root)
    assert "unchanged (version exists)" in again.stdout
    assert len(dataset_history(store, "rel")) == 3  # importing the latest again records nothing


@pytest.mark.prefect
def test_a_revert_emits_dataset_updated_to_a_real_server(tmp_path: Path) -> None:
    server = LocalPrefectServer(tmp_path / "prefect-home")
    server.home.mkdir()
    server.start()
    try:
        root = (tmp_path / "store").as_uri()
        data = tmp_path / "a.jsonl"
        emitted = []
        for rows in (A, B, A, A):
            write_jsonl(data, rows)
            result = airrep(
                "data", "import", str(data), "--name", "rel", "--root", root, env=server.env
            )
            assert result.returncode == 0, result.stdout + result.stderr
            emitted.append(f"emitted {DATASET_UPDATED}" in result.stdout)
        assert emitted == [True, True, True, False]
        latest = latest_version(ArtifactStore(root), "rel").version
        deadline, versions = time.monotonic() + 60, []
        while time.monotonic() < deadline and len(versions) < 3:
            time.sleep(1)
            versions = [e["payload"]["version"] for e in _events(server.api_url)]
        assert len(versions) == 3
        assert versions[0] == versions[2] == latest != versions[1]
    finally:
        server.stop()


def _events(api_url: str) -> list[dict]:
    """The server's ``airrep.dataset.updated`` events, oldest first."""
    body = {"filter": {"event": {"name": [DATASET_UPDATED]}, "order": "ASC"}, "limit": 50}
    request = urllib.request.Request(
        f"{api_url}/events/filter",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["events"]
