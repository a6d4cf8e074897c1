"""The layering of DESIGN.md §4, checked on the source (static imports) and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN: dict[str, set[str]] = {
    "airrep_core": {"prefect", "fsspec", "s3fs", "storage", "tasks", "flows"},
    "storage": {"torch", "prefect", "transformers", "airrep_core", "tasks", "flows"},
    "tasks": {"flows"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute imports, at any depth), as written."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imported_top_level_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports."""
    return {name.split(".")[0] for name in imported_modules(path)}


def violations(
    folder: Path, imported: Callable[[Path], set[str]], forbidden: set[str]
) -> list[str]:
    """``"<file> imports <name>"`` for every forbidden name a source file of ``folder`` imports."""
    files = sorted(folder.rglob("*.py"))
    assert files, f"no sources found under {folder}"
    return [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files
        for name in sorted(imported(path) & forbidden)
    ]


def test_imported_top_level_modules_sees_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import os\ndef f():\n    from prefect.flows import flow\n    import torch.nn\n"
    )
    assert imported_top_level_modules(source) == {"os", "prefect", "torch"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package: str) -> None:
    found = violations(REPO / package, imported_top_level_modules, FORBIDDEN[package])
    assert not found, "layering violations (DESIGN.md §4):\n" + "\n".join(found)


def test_only_tasks_and_flows_import_prefect() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("airrep_core", "storage", "benchmarks")
        for path in sorted((REPO / package).rglob("*.py"))
        if "prefect" in imported_top_level_modules(path)
    ]
    assert not offenders, f"only tasks/ and flows/ may import prefect: {offenders}"


def test_importing_storage_loads_no_torch_or_prefect() -> None:
    code = (
        "import importlib, pkgutil, sys, storage\n"
        "for m in pkgutil.walk_packages(storage.__path__, 'storage.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted({'torch', 'prefect', 'transformers'} & set(sys.modules))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "", f"importing storage loaded: {result.stdout.strip()}"


CORE_PACKAGES = ("attribution", "config", "data", "encoder", "evaluation", "lm", "methods")
"""``airrep_core``'s concept subpackages (README "Layout")."""

# core subpackage -> core subpackages it must never import (lower layers stay independent)
CORE_FORBIDDEN: dict[str, set[str]] = {
    "data": {"lm", "encoder", "methods", "evaluation", "attribution", "runtime"},
    "config": {"data", "lm", "encoder", "evaluation", "attribution", "runtime"},
    "lm": {"encoder", "methods", "evaluation", "attribution"},
}


def imported_core_subpackages(path: Path) -> set[str]:
    """The ``airrep_core`` subpackages (or top-level modules) a file imports, at any depth."""
    return {m.split(".")[1] for m in imported_modules(path) if m.startswith("airrep_core.")}


def test_every_core_folder_is_a_known_package_and_installed() -> None:
    folders = sorted(
        p.name for p in (REPO / "airrep_core").iterdir() if (p / "__init__.py").is_file()
    )
    assert folders == sorted(CORE_PACKAGES)
    pyproject = (REPO / "pyproject.toml").read_text()
    missing = [name for name in folders if f'"airrep_core.{name}"' not in pyproject]
    assert not missing, f"packages missing from pyproject.toml: {missing}"


@pytest.mark.parametrize("package", sorted(CORE_FORBIDDEN))
def test_core_subpackages_respect_their_layers(package: str) -> None:
    folder = REPO / "airrep_core" / package
    found = violations(folder, imported_core_subpackages, CORE_FORBIDDEN[package])
    assert not found, "core layering violations (airrep_core.<name>):\n" + "\n".join(found)
