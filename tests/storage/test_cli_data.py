"""``airrep data`` commands, run through typer's CliRunner on a miniature copy of the sample data
(the first lines of each real file, same layout)."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flows.cli_data import data_app
from storage.sample_data import SAMPLE_DATASETS, sample_data_dir

app = typer.Typer()
app.add_typer(data_app, name="data")
runner = CliRunner()


@pytest.fixture
def mini_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real, mini = sample_data_dir(), tmp_path / "data"
    for sample in SAMPLE_DATASETS.values():
        for rel in sample.relative_paths:
            sources = (
                sorted((real / rel).glob("*.jsonl"))[:3] if (real / rel).is_dir() else [real / rel]
            )
            for source in sources:
                target = mini / source.relative_to(real)
                target.parent.mkdir(parents=True, exist_ok=True)
                opener = gzip.open if source.suffix == ".gz" else open
                with opener(source, "rb") as f, opener(target, "wb") as out:
                    out.writelines(itertools.islice(f, 20))
    monkeypatch.setenv("AIRREP_DATA_DIR", str(mini))
    return mini


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["data", *args])
    return result.exit_code, result.output


def test_import_samples_list_show(mini_data: Path, tmp_path: Path) -> None:
    root = f"file://{tmp_path / 'store'}"
    code, out = _run("import-samples", "--root", root)
    assert code == 0, out
    assert "gsm8k_test" in out and "20 rows" in out and "new version" in out
    code, out = _run("import-samples", "--root", root)
    assert code == 0 and out.count("unchanged") == 5
    code, out = _run("list", "--root", root)
    assert code == 0
    for name in SAMPLE_DATASETS:
        assert name in out
    code, out = _run("show", "hh_rlhf_harmless", "--root", root, "--rows", "1")
    assert code == 0, out
    assert "chosen" in out and "rejected" in out and "40 rows" in out


def test_import_and_bad_input(tmp_path: Path) -> None:
    root = f"memory://cli-{tmp_path.name}"
    good = tmp_path / "good.jsonl"
    good.write_text('{"q": "a", "a": "b"}\n{"q": "c", "a": "d"}\n')
    code, out = _run(
        "import",
        str(good),
        "--name",
        "mine",
        "--prompt-field",
        "q",
        "--response-field",
        "a",
        "--root",
        root,
    )
    assert code == 0, out
    assert "mine" in out and "2 rows" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    code, out = _run("import", str(bad), "--name", "bad", "--root", root)
    assert code == 1
    assert f"{bad}, row 2, field 'response': missing field" in " ".join(out.split())
    code, out = _run("import", str(bad), "--name", "bad", "--skip-invalid", "--root", root)
    assert code == 0 and "1 invalid skipped" in out
    code, out = _run("show", "nope", "--root", root)
    assert code == 1 and "no dataset 'nope'" in out
    code, out = _run("show", "mine", "--version", "abc", "--root", root)
    assert code == 1 and "too short" in out
