"""Storage roots: URI handling, the default root, and surviving a briefly unavailable S3 server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from s3_server import BUCKET, MotoS3

from storage.artifacts import ArtifactStore
from storage.root import StorageRoot, default_root_uri, is_transient_error


def test_uris_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert StorageRoot("rel/dir").uri == f"file://{tmp_path / 'rel' / 'dir'}"
    assert StorageRoot(tmp_path).uri == f"file://{tmp_path}"
    assert StorageRoot(f"file://{tmp_path}/").uri == f"file://{tmp_path}"
    assert StorageRoot("s3://bucket/pre/fix/").uri == "s3://bucket/pre/fix"
    assert StorageRoot("memory://m").protocol == "memory"
    root = StorageRoot(f"file://{tmp_path}")
    assert root.join("a", "b/c.txt") == f"file://{tmp_path}/a/b/c.txt"
    assert root.local_path == tmp_path
    for bad, match in [
        ("gs://b", "unsupported storage protocol 'gs'"),
        ("file://relative", "absolute"),
        ("s3://", "bucket"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            StorageRoot(bad)
    with pytest.raises(ValueError, match="relative"):
        root.join("..", "x")
    with pytest.raises(ValueError, match="not a local"):
        _ = StorageRoot("memory://m").local_path


def test_default_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRREP_STORAGE_ROOT", raising=False)
    assert default_root_uri().endswith("/artifacts")
    assert Path(default_root_uri().removeprefix("file://")).parent == Path(__file__).parents[2]
    monkeypatch.setenv("AIRREP_STORAGE_ROOT", "s3://team/airrep")
    assert default_root_uri() == "s3://team/airrep"


def test_transient_error_classification() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(code: str, status: int) -> ClientError:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "GetObject")

    assert is_transient_error(EndpointConnectionError(endpoint_url="http://x"))
    assert is_transient_error(client_error("InternalError", 500))
    assert is_transient_error(client_error("SlowDown", 503))
    assert is_transient_error(ConnectionRefusedError())
    assert not is_transient_error(client_error("AccessDenied", 403))
    assert not is_transient_error(FileNotFoundError("x"))
    assert not is_transient_error(ValueError("x"))
    wrapped = OSError(5, "translated")
    wrapped.__cause__ = client_error("ServiceUnavailable", 503)
    assert is_transient_error(wrapped)


def _writes(name: str, text: str):
    """An artifact writer writing one text file."""

    def writer(directory: Path) -> None:
        (directory / name).write_text(text)

    return writer


def _outage(server: MotoS3, seconds: float) -> threading.Thread:
    """Stop the server now and restart it after ``seconds`` (moto keeps its state)."""
    server.stop()
    restart = threading.Timer(seconds, server.start)
    restart.start()
    return restart


@pytest.mark.s3
def test_s3_outage_is_survived_by_retries(moto_s3: MotoS3) -> None:
    # botocore's and s3fs's own retries off, so this is the store's backoff at work. Every store talking
    # during the outage is a fresh filesystem instance: a cached one may still hold a keep-alive
    # connection that the stopped server keeps serving, which would hide the outage.
    fail_fast = {
        "config_kwargs": {"retries": {"mode": "standard", "max_attempts": 1}},
        "skip_instance_cache": True,
    }
    uri = f"s3://{BUCKET}/outage"

    def fresh_store(**kwargs: float) -> ArtifactStore:
        root = StorageRoot(uri, storage_options=fail_fast, **kwargs)
        root.fs.retries = 1  # s3fs's own retry loop (a class attribute) off for this instance
        return ArtifactStore(root)

    ref = fresh_store().build("s", "k", config={}, inputs=[], writer=_writes("x", "x"))

    # Longer than a failing request takes (~2 s of connection attempts under load).
    restart = _outage(moto_s3, 5.0)
    try:
        with pytest.raises(Exception) as failure:
            fresh_store(retries=1).read_bytes(ref, "x")
        assert is_transient_error(failure.value)
        start = time.perf_counter()
        assert fresh_store(retry_base_delay=0.3).read_bytes(ref, "x") == b"x"
        assert time.perf_counter() - start > 0.3  # it waited out the rest of the outage
    finally:
        restart.join()

    restart = _outage(moto_s3, 1.5)
    try:
        store = fresh_store(retry_base_delay=0.3)
        built = store.build("s", "k2", config={}, inputs=[], writer=_writes("y", "y"))
    finally:
        restart.join()
    assert store.get("s", "k2") == built
    assert store.read_bytes(built, "y") == b"y"


@pytest.mark.s3
def test_default_s3_settings_survive_an_outage(moto_s3: MotoS3) -> None:
    store = ArtifactStore(f"s3://{BUCKET}/outage-default")
    restart = _outage(moto_s3, 2.0)
    try:
        start = time.perf_counter()
        assert not store.exists("s", "missing")
        assert time.perf_counter() - start > 1.0
    finally:
        restart.join()
