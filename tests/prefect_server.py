"""A real local Prefect server and process workers for tests (subprocesses on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPrefectServer:
    """``prefect server start`` with its own home and SQLite database in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def start(self, timeout_s: float = 180) -> None:
        self.spawn(
            "server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"Prefect server on {self.api_url} did not start in {timeout_s}s")

    def spawn(self, name: str, args: list[str]) -> Path:
        """Start a background process (output in ``home/<name>.log``); returns the log path."""
        log = self.home / f"{name}.log"
        handle = open(log, "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            args, cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT
        )
        self.processes.append((process, log))
        return log

    def cli(self, *args: str, timeout_s: float = 300) -> str:
        """Run a ``prefect`` CLI command against the server; its output (raises on failure)."""
        result = subprocess.run(
            [PREFECT, "--no-prompt", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def stop(self) -> None:
        for process, _ in reversed(self.processes):
            process.terminate()
        for process, _ in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
