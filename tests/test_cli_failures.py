"""Storage, OS and S3 failures on the real ``airrep`` CLI (subprocesses): each ends in one line
on stderr naming what failed and what to do, with a non-zero exit status, no traceback unless
``--debug`` / ``AIRREP_DEBUG=1``, no credential, and an unchanged store."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from airrep_cli import REPO, airrep, airrep_command, airrep_env, write_jsonl
from s3_server import BUCKET, MotoS3

from storage.artifacts import ArtifactStore
from storage.dataset_heads import list_datasets
from storage.errors import StorageError
from storage.root import StorageRoot

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
ROWS = [{"prompt": "What is 2+2?", "response": "4"}]


def one_line_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of a failed command, checked for ``needles``."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(path: Path) -> list[str]:
    """Every path below ``path`` (to show that a store is unchanged)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.is_dir() else []


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "a.jsonl", ROWS)


def test_a_root_that_is_a_file_is_an_error_not_an_empty_store(tmp_path: Path, data: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a store")
    line = one_line_failure(
        airrep("data", "list", "--root", str(afile)), f"storage root {afile} is a file"
    )
    assert "give a folder" in line
    one_line_failure(
        airrep("data", "import", str(data), "--name", "a", "--root", str(afile / "sub")),
        f"is below {afile}, which is a file",
    )
    assert afile.read_text() == "not a store"


def test_a_read_only_root_fails_before_the_input_is_read(tmp_path: Path, data: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("needs unshare -rm to mount a read-only folder")
    store = tmp_path / "ro"
    store.mkdir()
    (store / "keep").write_text("x")
    # The input is a folder the import could not even read: the root check must come first.
    unreadable = tmp_path / "missing-input"
    script = (
        f"mount --bind {store} {store} && mount -o remount,ro,bind {store} && "
        "exec "
        + shlex.join(
            airrep_command(
                "data", "import", str(unreadable), "--name", "a", "--root", str(store / "sub")
            )
        )
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=airrep_env(),
        cwd=REPO,
    )
    one_line_failure(result, f"storage root {store / 'sub'}", "read-only file system")
    assert tree(store) == ["keep"]


def test_a_storage_failure_after_the_checks_is_one_line_and_debug_shows_it(
    tmp_path: Path, data: Path
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "datasets").write_text("a file where the stage folder belongs")
    result = airrep("data", "import", str(data), "--name", "a", "--root", str(root))
    line = one_line_failure(result, str(root / "datasets"), "run with --debug")
    assert line.startswith("error: ")
    for debug in (["--debug"], []):
        env = None if debug else {**airrep_env(), "AIRREP_DEBUG": "1"}
        shown = airrep(
            *debug, "data", "import", str(data), "--name", "a", "--root", str(root), env=env
        )
        assert shown.returncode != 0 and "Traceback" in shown.stderr
    assert tree(root) == ["datasets"]


def test_select_output_under_a_file_fails_first(tmp_path: Path, data: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    output = afile / "out.jsonl"
    result = airrep(
        "select",
        "--dataset",
        "nope",
        "--target",
        str(data),
        "--budget",
        "1",
        "--output",
        str(output),
        "--root",
        str(tmp_path / "store"),
    )
    one_line_failure(result, f"output {output}: {afile} is a file")
    assert not (tmp_path / "store").exists()


def test_an_unreachable_s3_endpoint_fails_fast_without_credentials(
    tmp_path: Path, data: Path
) -> None:
    env = {
        **airrep_env(),
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLEID",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": MotoS3().endpoint,  # a free port nobody listens on
    }
    started = time.perf_counter()
    result = airrep(
        "data", "import", str(data), "--name", "a", "--root", f"s3://{BUCKET}/x", env=env
    )
    seconds = time.perf_counter() - started
    one_line_failure(result, f"storage root s3://{BUCKET}/x is not reachable", "AWS_ENDPOINT_URL")
    assert SECRET not in result.stdout + result.stderr
    assert seconds < 35, seconds  # was 38–41 s of retries before any message
    in_uri = "uRiSeCrEt-" + SECRET[::-1]  # not in the environment: only the URI has it
    with_userinfo = airrep("data", "list", "--root", f"s3://AKID:{in_uri}@{BUCKET}/x", env=env)
    one_line_failure(with_userinfo, "names credentials (user:secret@): not supported")
    assert in_uri not in with_userinfo.stdout + with_userinfo.stderr


@pytest.mark.s3
def test_an_s3_server_going_away_leaves_the_store_unchanged(
    moto_s3: MotoS3, tmp_path: Path, data: Path
) -> None:
    root = f"s3://{BUCKET}/failures-{tmp_path.name}"
    first = airrep("data", "import", str(data), "--name", "a", "--root", root)
    assert first.returncode == 0, first.stdout + first.stderr
    changed = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "2+3?", "response": "5"}])
    moto_s3.stop()
    try:
        result = airrep("data", "import", str(changed), "--name", "b", "--root", root)
        one_line_failure(result, f"storage root {root} is not reachable")
    finally:
        moto_s3.start()
    assert list_datasets(ArtifactStore(root)) == ["a"]


def test_the_s3_probe_is_quick_and_names_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLEID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", MotoS3().endpoint)
    started = time.perf_counter()
    with pytest.raises(StorageError, match="is not reachable") as caught:
        StorageRoot(f"s3://{BUCKET}/x").check(writable=True)
    assert time.perf_counter() - started < 5
    assert SECRET not in str(caught.value)


def test_a_failed_pipeline_run_is_one_line_without_prefects_tracebacks(tmp_path: Path) -> None:
    """A stage failing inside the Prefect flow (here: the corpus is not in an empty store) ends in
    the boundary's one line; Prefect's failure records and tracebacks stay off the terminal."""
    result = airrep("run", "--no-import-data", "--root", str(tmp_path / "store"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: no dataset ")  # whichever dataset the flow resolved first
    assert errors[0].endswith(
        f"in file://{tmp_path / 'store'}; datasets: [] (run with --debug for the traceback)"
    )
