"""Session-wide test settings: offline Hugging Face, private work/cache folders, and one Prefect
test harness (ephemeral server) shared by every Prefect test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import BUCKET, MotoS3

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="airrep-tests-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["AIRREP_WORK_DIR"] = str(_SESSION_DIR / "work")
os.environ["AIRREP_CACHE_DIR"] = str(_SESSION_DIR / "cache")
os.environ["AIRREP_PREFECT_CACHE_KEYS"] = str(_SESSION_DIR / "prefect-cache-keys")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One ephemeral Prefect server (SQLite in a temp folder) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest (and undisturbed by parallel jobs) on one thread; a module opts in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def file_root(tmp_path: Path) -> str:
    """A fresh ``file://`` storage root."""
    return (tmp_path / "store").as_uri()


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
