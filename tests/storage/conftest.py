"""Fixtures of the storage tests: storage roots on file://, memory:// and a real S3-compatible
server (moto's ThreadedMotoServer on 127.0.0.1, one per session, dummy credentials from env)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.artifacts import ArtifactStore
from storage.root import StorageRoot

BUCKET = "airrep-test"

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log


class MotoS3:
    """A moto S3 server on a fixed local port that tests can stop and restart (state is kept)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """The session's S3 server; AWS_* env vars point every client (and child process) at it."""
    server = MotoS3()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": server.endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server.start()
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test downloads remote artifacts into its own cache directory."""
    monkeypatch.setenv("AIRREP_CACHE_DIR", str(tmp_path / "cache"))


def make_root_uri(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty root of ``kind`` ("file", "memory" or "s3")."""
    if kind == "file":
        return f"file://{tmp_path / 'store'}"
    if kind == "memory":
        return f"memory://airrep-{uuid.uuid4().hex[:12]}"
    request.getfixturevalue("moto_s3")
    return f"s3://{BUCKET}/run-{uuid.uuid4().hex[:12]}"


@pytest.fixture(
    params=["file", "memory", pytest.param("s3", marks=pytest.mark.s3)],
)
def root_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh root URI on each backend."""
    return make_root_uri(request.param, tmp_path, request)


@pytest.fixture
def store(root_uri: str) -> ArtifactStore:
    """An ArtifactStore on a fresh root of each backend."""
    return ArtifactStore(StorageRoot(root_uri))
