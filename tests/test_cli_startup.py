"""The ``airrep`` CLI starts without the heavy libraries: torch, transformers and Prefect are
imported only inside the commands that need them (issue 12; the timing is in the README)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "prefect", "vllm", "bm25s")


def _imported_top_level(args: list[str], tmp_path: Path) -> set[str]:
    """Top-level packages the real CLI (``python -m flows.cli ARGS``) imports, from ``-X importtime``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIRREP_STORAGE_ROOT": (tmp_path / "s").as_uri()}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "typer" in names, "importtime output not parsed"
    return names


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["data", "list"], ["bench", "lds", "--help"]],
    ids=["help", "run-help", "data-list", "bench-help"],
)
def test_cli_imports_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    assert not _imported_top_level(args, tmp_path) & set(HEAVY)


def test_importtime_parsing_sees_heavy_imports(tmp_path: Path) -> None:
    """The check above would see them: ``-X importtime`` of a command module that needs torch."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import tasks.embeddings"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())
