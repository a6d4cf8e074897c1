"""``airrep data import`` on the real CLI (a subprocess of the installed ``airrep`` script with
this checkout on ``PYTHONPATH``): each refused input exits non-zero with one ``error:`` line on
stderr and leaves the store as it was; the common shapes and the skip report work end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.artifacts import ArtifactStore
from storage.dataset_heads import latest_version
from storage.datasets import import_dataset, read_examples

AIRREP = Path(sys.executable).parent / "airrep"
REPO = Path(__file__).resolve().parents[2]


def airrep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``airrep ARGS`` as a user would (no Prefect server configured)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [str(AIRREP), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root``."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit status non-zero, exactly one stderr line ``error: ...message...``, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, object]:
    """A store holding one dataset ``base`` and a valid input file."""
    root = tmp_path / "store"
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "p1", "response": "r1"}\n{"prompt": "p2", "response": "r2"}\n')
    import_dataset(ArtifactStore(f"file://{root}"), good, "base")
    return {"root": root, "uri": f"file://{root}", "good": good, "dir": tmp_path}


def test_help_prints_the_detection_table(tmp_path: Path) -> None:
    result = airrep("data", "import", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for expected in (
        "sharegpt (conversations)",
        "gpteacher (instruction, response)",
        "question_response (question, response)",
        "id (id): example id = the value",
    ):
        assert expected in text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_a_device_is_not_a_regular_file(workspace: dict) -> None:
    fifo = workspace["dir"] / "pipe.jsonl"
    os.mkfifo(fifo)
    before = snapshot(workspace["root"])
    for path, kind in ((fifo, "a named pipe (FIFO)"), (Path("/dev/null"), "a character device")):
        result = airrep(
            "data", "import", str(path), "--name", "x", "--root", workspace["uri"], cwd=fifo.parent
        )
        assert_refused(result, f"not a regular file or folder: {path} is {kind}")
    assert snapshot(workspace["root"]) == before


def test_a_mixed_folder_reports_the_shapes(workspace: dict) -> None:
    folder = workspace["dir"] / "mixed"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (folder / "b.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    before = snapshot(workspace["root"])
    result = airrep(
        "data", "import", str(folder), "--name", "m", "--root", workspace["uri"], cwd=folder
    )
    assert_refused(
        result,
        f"mixed formats: {folder / 'a.jsonl'} is gsm8k (question, answer), "
        f"{folder / 'b.jsonl'} is prompt_response (prompt, response)",
    )
    assert snapshot(workspace["root"]) == before


def test_a_bad_first_row_is_named_and_can_be_skipped(workspace: dict) -> None:
    path = workspace["dir"] / "first_bad.jsonl"
    path.write_text('{"prompt": "no response"}\n{"prompt": "p", "response": "r"}\n')
    before = snapshot(workspace["root"])
    args = ("data", "import", str(path), "--name", "fb", "--root", workspace["uri"])
    assert_refused(
        airrep(*args, cwd=path.parent), f"{path}, row 1, field 'response': missing field"
    )
    assert snapshot(workspace["root"]) == before
    result = airrep(*args, "--skip-invalid", cwd=path.parent)
    assert result.returncode == 0, result.stderr
    assert "fb" in result.stdout and "1 rows" in result.stdout
    assert "1 invalid skipped" in result.stdout


def test_skip_invalid_counts_every_lost_record_and_show_reports_them(workspace: dict) -> None:
    folder = workspace["dir"] / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_text(workspace["good"].read_text())
    items = [json.dumps({"prompt": f"q{i}", "response": "r"}) for i in range(10)]
    items[3] = items[3].replace('"response":', '"response"')
    bad = folder / "b.json"
    bad.write_text("[\n" + ",\n".join(items) + "\n]\n")
    uri = workspace["uri"]
    result = airrep(
        "data", "import", str(folder), "--name", "f", "--skip-invalid", "--root", uri, cwd=folder
    )
    assert result.returncode == 0, result.stderr
    assert "2 rows" in result.stdout and "10 invalid skipped" in result.stdout
    result = airrep("data", "show", "f", "--root", uri, cwd=folder)
    assert result.returncode == 0, result.stderr
    shown = " ".join(result.stdout.split())
    assert "10 records lost" in shown and "malformed JSON" in shown and "b.json" in shown
    before = snapshot(workspace["root"])
    result = airrep(
        "data", "import", str(bad), "--name", "b", "--skip-invalid", "--root", uri, cwd=folder
    )
    assert_refused(result, f"{bad}, row 5: malformed JSON")
    assert "no valid rows in the input: 10 record(s) lost in 1 problem(s)" in result.stderr
    assert snapshot(workspace["root"]) == before


def test_sharegpt_with_ids_imports_without_options(workspace: dict) -> None:
    path = workspace["dir"] / "sharegpt.json"
    records = [
        {
            "id": f"conv_{i}",
            "conversations": [
                {"from": "human", "value": f"Question {i}?"},
                {"from": "gpt", "value": f"Answer {i}."},
                {"from": "human", "value": "And then?"},
                {"from": "gpt", "value": "That is all."},
            ],
        }
        for i in range(3)
    ]
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(records).encode())  # with a UTF-8 BOM
    result = airrep(
        "data", "import", str(path), "--name", "share", "--root", workspace["uri"], cwd=path.parent
    )
    assert result.returncode == 0, result.stderr
    store = ArtifactStore(workspace["uri"])
    rows = read_examples(store, latest_version(store, "share")).to_pylist()
    assert [(r["example_id"], r["prompt"], r["response"]) for r in rows] == [
        (f"conv_{i}", f"Question {i}?", f"Answer {i}.") for i in range(3)
    ]


@pytest.mark.parametrize("name", ["rel_データ", "rel_²", "r" * 304, "-rel"])
def test_invalid_names_are_refused(workspace: dict, name: str) -> None:
    before = snapshot(workspace["root"])
    result = airrep(
        "data",
        "import",
        str(workspace["good"]),
        f"--name={name}",
        "--root",
        workspace["uri"],
        cwd=workspace["dir"],
    )
    assert_refused(result, "invalid dataset name")
    assert (
        "1-64 ASCII letters, digits, '_' or '-', starting with a letter or digit" in result.stderr
    )
    assert snapshot(workspace["root"]) == before


def test_select_import_as_a_bad_name_writes_nothing(workspace: dict) -> None:
    output = workspace["dir"] / "selection.jsonl"
    before = snapshot(workspace["root"])
    result = airrep(
        "select",
        "--dataset",
        "base",
        "--target",
        str(workspace["good"]),
        "--budget",
        "1",
        "--output",
        str(output),
        "--import-as=-rel",
        "--root",
        workspace["uri"],
        cwd=workspace["dir"],
    )
    assert_refused(result, "invalid dataset name '-rel'")
    assert not output.exists()
    assert snapshot(workspace["root"]) == before
