"""A SIGKILLed ``airrep data import`` leaves its staging folder; ``airrep store gc --dry-run``
lists it (removing nothing), ``airrep store gc`` removes it, and the next import removes it by
itself. Real CLI subprocesses, killed while the examples table is being written."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from airrep_cli import REPO, airrep, airrep_command, airrep_env, write_jsonl

from storage.artifacts import ArtifactStore
from storage.dataset_heads import list_datasets

ROWS = 150_000


def killed_import(tmp_path: Path, root: Path) -> Path:
    """Start importing a large file into ``root`` and SIGKILL the process as soon as its staging
    folder exists; returns that folder."""
    big = tmp_path / "big.jsonl"
    if not big.exists():
        write_jsonl(
            big,
            [{"prompt": f"question {i} " * 8, "response": f"answer {i} " * 8} for i in range(ROWS)],
        )
    staging = root / "datasets" / ".staging"
    process = subprocess.Popen(
        airrep_command("data", "import", str(big), "--name", "big", "--root", str(root)),
        cwd=REPO,
        env=airrep_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            found = list(staging.glob("*")) if staging.is_dir() else []
            if found:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the import finished before it was killed"
    [folder] = list(staging.glob("*"))
    return folder


def test_gc_lists_then_removes_a_killed_import(tmp_path: Path) -> None:
    root = tmp_path / "store"
    folder = killed_import(tmp_path, root)
    listed = airrep("store", "gc", "--dry-run", "--root", str(root))
    assert listed.returncode == 0, listed.stderr
    assert f"would remove {folder} (its build process" in listed.stdout
    assert "1 leftovers" in listed.stdout
    assert folder.exists()
    removed = airrep("store", "gc", "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    assert f"removed {folder}" in removed.stdout
    assert not folder.exists()
    assert list_datasets(ArtifactStore(str(root))) == []


def test_the_next_import_removes_a_killed_imports_staging(tmp_path: Path) -> None:
    root = tmp_path / "store"
    folder = killed_import(tmp_path, root)
    small = write_jsonl(tmp_path / "small.jsonl", [{"prompt": "2+2?", "response": "4"}])
    result = airrep("data", "import", str(small), "--name", "small", "--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not folder.exists()
    assert list((root / "datasets" / ".staging").iterdir()) == []
    assert list_datasets(ArtifactStore(str(root))) == ["small"]
