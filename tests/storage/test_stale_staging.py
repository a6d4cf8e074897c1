"""Which leftovers of builds are stale (``ArtifactStore.stale_staging``) on a ``file://`` root:
a dead builder's staging at once, a live builder's never, anything of unknown builder and unnamed
attempt folders after the age limit; published artifacts never."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage.artifacts import ArtifactStore
from storage.staging import STALE_STAGING_AGE_S, host_tag


def _build(store: ArtifactStore, key: str) -> None:
    store.build(
        "stage", key, config={}, inputs=[], writer=lambda d: (d / "f").write_text(key) and None
    )


def _age(path: Path, seconds: float) -> None:
    old = os.path.getmtime(path) - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))


def test_stale_leftovers_are_found_and_removed(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    _build(store, "k1")
    staging = tmp_path / "store" / "stage" / ".staging"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # a process that has exited
    gone = staging / f"a{'0' * 16}.{dead_pid}@{host_tag()}"
    live = staging / f"a{'1' * 16}.{os.getpid()}@{host_tag()}"
    foreign_new = staging / f"a{'2' * 16}.1@another-host"
    foreign_old = staging / f"a{'3' * 16}.1@another-host"
    legacy_old = staging / f"a{'4' * 16}"
    for folder in (gone, live, foreign_new, foreign_old, legacy_old):
        folder.mkdir(parents=True)
        (folder / "examples.parquet").write_bytes(b"x" * 10)
    _age(live, 2 * STALE_STAGING_AGE_S)  # a live builder is never stale, however old
    _age(foreign_old, STALE_STAGING_AGE_S + 60)
    _age(legacy_old, STALE_STAGING_AGE_S + 60)
    key_dir = tmp_path / "store" / "stage" / "k1"
    orphan = key_dir / f"a{'5' * 16}"
    orphan.mkdir()
    _age(orphan, STALE_STAGING_AGE_S + 60)
    pending = key_dir / f"._manifest.json.a{'6' * 16}"
    pending.write_text("{}")
    _age(pending, STALE_STAGING_AGE_S + 60)
    named = store.get("stage", "k1").attempt

    found = {Path(e.path): e for e in store.stale_staging()}
    assert set(found) == {gone, foreign_old, legacy_old, orphan, pending}
    assert "process" in found[gone].reason and found[gone].size == 10
    store.remove_stale(list(found.values()))
    assert sorted(p.name for p in staging.iterdir()) == sorted([live.name, foreign_new.name])
    assert sorted(p.name for p in key_dir.iterdir()) == sorted(["_manifest.json", named])
    assert (key_dir / named / "f").read_text() == "k1"
    assert store.stale_staging() == []


def test_a_build_sweeps_only_its_stages_dead_staging(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    dead = tmp_path / "store" / "stage" / ".staging" / f"a{'0' * 16}.999999999@{host_tag()}"
    other_stage = tmp_path / "store" / "other" / ".staging" / f"a{'0' * 16}.999999999@{host_tag()}"
    for folder in (dead, other_stage):
        folder.mkdir(parents=True)
    _build(store, "k1")
    assert not dead.exists() and other_stage.exists()
