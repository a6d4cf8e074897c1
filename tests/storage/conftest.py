"""Fixtures of the storage tests: storage roots on file://, memory:// and a real S3-compatible
server (moto's ThreadedMotoServer on 127.0.0.1, one per session, dummy credentials from env)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from s3_server import BUCKET

from storage.artifacts import ArtifactStore
from storage.root import StorageRoot


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


@pytest.fixture
def fresh_root_uri(request: pytest.FixtureRequest, tmp_path: Path):
    """``fresh_root_uri(kind)``: a fresh, empty root of ``kind`` ("file", "memory" or "s3")."""
    return lambda kind: make_root_uri(kind, tmp_path, request)


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
