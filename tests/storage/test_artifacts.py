"""Content-addressed artifacts: round trips, listing, conflicts, failures and concurrent builders,
on file://, memory:// and a real S3 server (moto)."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from storage.artifacts import MANIFEST_NAME, ArtifactStore, canonical_json, content_key
from storage.errors import ArtifactConflict, ArtifactNotFound, StorageError
from storage.root import StorageRoot

CONFIG = {"lr": 5e-4, "layers": [4, 256], "name": "tiny"}


def _write_two_files(directory: Path) -> dict:
    (directory / "a.txt").write_text("alpha")
    (directory / "sub").mkdir()
    (directory / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    return {"rows": 2}


def _visible_files(store: ArtifactStore) -> list[str]:
    """Every file under the root, as paths relative to it (hidden staging folders included)."""
    fs = store.root.fs
    base = fs._strip_protocol(store.root.uri)
    return sorted(p[len(base) :] for p in fs.find(base))


def test_content_key_is_canonical_and_sensitive() -> None:
    key = content_key("labels", CONFIG, ["k1", "k2"], code_version="1")
    reordered = {"name": "tiny", "layers": (4, 256), "lr": 5e-4}
    assert content_key("labels", reordered, ["k1", "k2"], code_version="1") == key
    changed = [
        content_key("encoder", CONFIG, ["k1", "k2"], code_version="1"),
        content_key("labels", {**CONFIG, "lr": 1e-3}, ["k1", "k2"], code_version="1"),
        content_key("labels", CONFIG, ["k2", "k1"], code_version="1"),
        content_key("labels", CONFIG, ["k1", "k2"], code_version="2"),
    ]
    assert len({key, *changed}) == 5
    assert len(key) == 64 and int(key, 16) >= 0
    assert content_key("labels", CONFIG, ["k1", "k2"]) != key  # default: the package version
    with pytest.raises(TypeError, match=r"\$\.bad"):
        canonical_json({"bad": {1, 2}})
    with pytest.raises(TypeError, match="inputs"):
        content_key("labels", CONFIG, "k1")


def test_build_round_trip(store: ArtifactStore) -> None:
    key = content_key("stage-a", CONFIG, ["in1"])
    assert not store.exists("stage-a", key)
    with pytest.raises(ArtifactNotFound):
        store.get("stage-a", key)
    ref = store.build("stage-a", key, config=CONFIG, inputs=["in1"], writer=_write_two_files)
    assert store.exists("stage-a", key)
    assert ref == store.get("stage-a", key)
    assert ref.config == json.loads(canonical_json(CONFIG))
    assert ref.inputs == ["in1"]
    assert ref.metadata == {"rows": 2}
    assert ref.files == {"a.txt": 5, "sub/b.bin": 2560}
    assert ref.manifest["versions"]["python"]
    with store.open(ref, "a.txt", "r") as f:
        assert f.read() == "alpha"
    assert store.read_bytes(ref, "sub/b.bin") == bytes(range(256)) * 10
    local = store.local_dir(ref)
    assert (local / "a.txt").read_text() == "alpha"
    assert (local / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 10
    assert store.local_dir(ref) == local  # cached
    with pytest.raises(ArtifactNotFound, match="no file"):
        store.open(ref, "missing.txt")
    with pytest.raises(ValueError, match="read-only"):
        store.open(ref, "a.txt", "wb")


def test_existing_key_is_reused_and_conflicting_config_refused(store: ArtifactStore) -> None:
    ref = store.build("s", "k1", config=CONFIG, inputs=[], writer=_write_two_files)

    def must_not_run(directory: Path) -> None:
        raise AssertionError("writer called for an existing key")

    again = store.build(
        "s", "k1", config=dict(reversed(CONFIG.items())), inputs=[], writer=must_not_run
    )
    assert again.manifest == ref.manifest
    with pytest.raises(ArtifactConflict, match="different config"):
        store.build("s", "k1", config={**CONFIG, "lr": 1.0}, inputs=[], writer=must_not_run)
    assert store.get("s", "k1").manifest == ref.manifest


def test_list_ignores_unpublished_and_delete_unpublishes(store: ArtifactStore) -> None:
    refs = [
        store.build("s", f"k{i}", config={"i": i}, inputs=[], writer=_write_two_files)
        for i in range(3)
    ]
    # A folder with data but no manifest (a crashed build) does not exist.
    store.root.fs.pipe_file(store.root.join("s", "orphan", "a1", "x.txt"), b"x")
    assert [r.key for r in store.list("s")] == ["k0", "k1", "k2"]
    assert not store.exists("s", "orphan")
    assert store.list("other") == []
    store.delete(refs[1])
    assert [r.key for r in store.list("s")] == ["k0", "k2"]
    assert not store.exists("s", "k1")
    assert not any(p.startswith("/s/k1/") for p in _visible_files(store))
    rebuilt = store.build("s", "k1", config={"i": 1}, inputs=[], writer=_write_two_files)
    assert store.read_bytes(rebuilt, "a.txt") == b"alpha"


def test_list_reads_the_manifests_in_one_batch(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = [
        store.build("s", f"k{i}", config={"i": i}, inputs=[], writer=_write_two_files)
        for i in range(3)
    ]
    expected = [store.get("s", r.key) for r in built]

    def one_by_one(stage: str, key: str) -> None:
        raise AssertionError(f"list read {stage}/{key} on its own")

    monkeypatch.setattr(store, "get", one_by_one)
    listed = store.list("s")
    assert [(r.key, r.manifest) for r in listed] == [(r.key, r.manifest) for r in expected]


def test_list_names_a_corrupt_manifest(store: ArtifactStore) -> None:
    store.build("s", "k0", config={}, inputs=[], writer=_write_two_files)
    store.root.fs.pipe_file(store.root.join("s", "k0", MANIFEST_NAME), b"{not json")
    with pytest.raises(StorageError, match=r"corrupt manifest .*k0"):
        store.list("s")


def test_failing_writer_leaves_nothing(store: ArtifactStore) -> None:
    def failing(directory: Path) -> None:
        (directory / "half.txt").write_text("half")
        raise RuntimeError("writer exploded")

    with pytest.raises(RuntimeError, match="writer exploded"):
        store.build("s", "k", config={}, inputs=[], writer=failing)
    assert not store.exists("s", "k")
    assert store.list("s") == []
    assert _visible_files(store) == []


def test_failing_upload_leaves_nothing(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.root.is_local:
        pytest.skip("local roots publish by rename; no upload step")
    fs = store.root.fs
    real_put = fs.put_file
    calls = []

    def put_then_fail(lpath: str, rpath: str, **kw: object) -> None:
        calls.append(rpath)
        if len(calls) == 2:
            raise PermissionError("upload refused")  # not transient: no retry
        real_put(lpath, rpath, **kw)

    monkeypatch.setattr(fs, "put_file", put_then_fail)
    with pytest.raises(PermissionError, match="upload refused"):
        store.build("s", "k", config={}, inputs=[], writer=_write_two_files)
    assert len(calls) == 2
    assert not store.exists("s", "k")
    assert _visible_files(store) == []


def test_writer_must_write_something(store: ArtifactStore) -> None:
    with pytest.raises(StorageError, match="no files"):
        store.build("s", "k", config={}, inputs=[], writer=lambda d: None)
    assert store.list("s") == []


def test_bad_names_are_refused(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="stage"):
        store.exists("../x", "k")
    with pytest.raises(ValueError, match="key"):
        store.build("s", "a/b", config={}, inputs=[], writer=_write_two_files)


# ---- concurrent builders -----------------------------------------------------------------------


def _racing_builder(root_uri: str, worker: int, barrier, results) -> None:
    store = ArtifactStore(StorageRoot(root_uri))

    def writer(directory: Path) -> dict:
        payload = bytes([worker]) * 300_000
        (directory / "payload.bin").write_bytes(payload)
        (directory / "worker.txt").write_text(str(worker))
        barrier.wait(timeout=60)  # both builders are past the existence check: a real race
        return {"worker": worker}

    ref = store.build("race", "same-key", config={"c": 1}, inputs=[], writer=writer)
    results.put((worker, ref.metadata["worker"], ref.attempt))


@pytest.mark.parametrize("kind", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_concurrent_builders_leave_one_valid_artifact(kind: str, fresh_root_uri) -> None:
    root_uri = fresh_root_uri(kind)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_racing_builder, args=(root_uri, w, barrier, results)) for w in (1, 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    store = ArtifactStore(StorageRoot(root_uri))
    [ref] = store.list("race")
    winner = ref.metadata["worker"]
    # Both builders returned the published artifact, and its files are all the winner's.
    assert {(seen, attempt) for _, seen, attempt in outcomes} == {(winner, ref.attempt)}
    assert store.read_bytes(ref, "payload.bin") == bytes([winner]) * 300_000
    assert store.read_bytes(ref, "worker.txt") == str(winner).encode()
    # The loser's attempt folder was removed.
    leftover = [p for p in _visible_files(store) if not p.endswith(MANIFEST_NAME)]
    assert all(f"/{ref.attempt}/" in p for p in leftover), leftover


def test_two_builders_in_sequence_on_another_machine_see_the_cache(store: ArtifactStore) -> None:
    ref = store.build("s", "k", config=CONFIG, inputs=["x"], writer=_write_two_files)
    other = ArtifactStore(StorageRoot(store.root.uri))  # a fresh client of the same root
    start = time.perf_counter()
    assert other.build("s", "k", config=CONFIG, inputs=["x"], writer=lambda d: None) == ref
    assert time.perf_counter() - start < 5
