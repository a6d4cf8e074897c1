"""The real ``airrep`` CLI in a subprocess, for tests: this worktree's code, wide output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import Result

REPO = Path(__file__).resolve().parents[1]


def airrep_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment without ``PREFECT_API_URL``, so no server is
    contacted) with this worktree on ``PYTHONPATH`` and a wide terminal."""
    base = dict(os.environ) if env is None else dict(env)
    if env is None:
        base.pop("PREFECT_API_URL", None)
    return {**base, "PYTHONPATH": str(REPO), "COLUMNS": "200"}


def airrep_command(*args: str) -> list[str]:
    """The argument vector running ``airrep ARGS...``."""
    return [sys.executable, "-m", "flows.cli", *args]


def airrep(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``airrep ARGS...`` to completion; its exit status, stdout and stderr."""
    return subprocess.run(
        airrep_command(*args),
        cwd=REPO,
        env=airrep_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a JSONL file at ``path``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def invoke(workspace: dict, *args: str) -> Result:
    """Run ``airrep ARGS... --root ROOT`` in this process with ``workspace["runner"]`` (a
    ``CliRunner``) on ``workspace["app"]`` (a Typer app with the query commands)."""
    return workspace["runner"].invoke(workspace["app"], [*args, "--root", workspace["root"]])


def select_from_pool(workspace: dict, budget: int, output: Path, *args: str) -> Result:
    """``invoke`` of ``airrep select`` of ``budget`` examples of dataset ``pool`` for the
    targets file ``workspace["targets"]``, written to ``output``; exit status 0 checked."""
    result = invoke(
        workspace,
        "select",
        "--dataset",
        "pool",
        "--target",
        str(workspace["targets"]),
        "--budget",
        str(budget),
        "--output",
        str(output),
        *args,
    )
    assert result.exit_code == 0, result.output
    return result
