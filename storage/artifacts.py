"""Content-addressed artifacts with manifests (DESIGN.md §4).

Layout under a storage root, for a stage ``S`` and key ``K``::

    S/K/_manifest.json          written LAST; names the attempt folder and lists its files
    S/K/<attempt>/<files...>    the data files of one build attempt

A key without ``_manifest.json`` does not exist: :meth:`ArtifactStore.exists`,
:meth:`ArtifactStore.list` and :meth:`ArtifactStore.get` look only at manifests, and readers
resolve every file through the manifest's attempt folder. So two processes building the same key
at once each upload into their own attempt folder; whichever manifest is published is whole and
names only its own complete files, never a mix.

Publishing: local roots build in ``S/.staging/<attempt>`` inside the root, rename it into place
and publish the manifest with an atomic, exclusive ``os.link``. Remote roots (s3, memory) upload
each file as one whole object, then create the manifest with an exclusive put (``If-None-Match``
on S3); a builder that loses the race removes its attempt folder and returns the winner.

Leftovers of killed builds (staging folders, attempt folders no manifest names, pending
manifests) are described in :mod:`storage.staging`; :meth:`ArtifactStore.stale_staging` lists
them. Every successful build removes the stale staging of its stage (for remote roots: this host's
``$TMPDIR`` staging); ``airrep store gc`` removes all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq

from storage import staging as staging_mod
from storage.errors import ArtifactConflict, ArtifactNotFound, StorageError
from storage.root import StorageRoot, as_root
from storage.staging import STALE_STAGING_AGE_S, StaleEntry

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 1
CACHE_DIR_ENV = "AIRREP_CACHE_DIR"
PACKAGE_NAME = "airrep-pipeline"

_STAGE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Writer = Callable[[Path], Mapping[str, Any] | None]


def package_version() -> str:
    """The installed ``airrep-pipeline`` version (read from package metadata, without importing torch)."""
    try:
        return importlib.metadata.version(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def canonical_json(value: Any) -> str:
    """Canonical JSON of ``value``: sorted keys, no spaces, UTF-8, no NaN; tuples become lists.

    Raises ``TypeError`` naming the path of a value that is not plain JSON (str, int, float, bool,
    None, mappings with string keys, lists/tuples).
    """
    return json.dumps(
        _plain_json(value, "$"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def _plain_json(value: Any, path: str) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"config key {k!r} at {path} is not a string")
            out[k] = _plain_json(v, f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_plain_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"value {value!r} at {path} is not plain JSON "
        "(allowed: str, int, float, bool, None, mapping, list, tuple)"
    )


def content_key(
    stage: str, config: Mapping[str, Any], inputs: Sequence[str], code_version: str | None = None
) -> str:
    """The artifact key: hex sha256 of canonical JSON of (stage, config, inputs, code version).

    ``inputs`` are the keys (or URIs) of the input artifacts, in order; ``code_version`` defaults
    to the installed package version.
    """
    if isinstance(inputs, str):
        raise TypeError(f"inputs must be a sequence of keys, got the string {inputs!r}")
    payload = {
        "stage": stage,
        "config": config,
        "inputs": list(inputs),
        "code_version": package_version() if code_version is None else code_version,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ArtifactRef:
    """A published artifact: its stage, key, URI (the key folder) and parsed manifest."""

    stage: str
    key: str
    uri: str
    manifest: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    @property
    def config(self) -> dict[str, Any]:
        """The stage config the artifact was built from."""
        return self.manifest["config"]

    @property
    def inputs(self) -> list[str]:
        """The input artifact keys."""
        return self.manifest["inputs"]

    @property
    def attempt(self) -> str:
        """The attempt folder holding the files."""
        return self.manifest["attempt"]

    @property
    def files(self) -> dict[str, int]:
        """File name (relative, POSIX) -> size in bytes."""
        return {f["name"]: f["size"] for f in self.manifest["files"]}

    @property
    def metadata(self) -> dict[str, Any]:
        """What the writer returned (row counts, reports, ...)."""
        return self.manifest.get("metadata", {})

    @property
    def tables(self) -> dict[str, dict[str, Any]]:
        """Parquet file name -> {"schema", "schema_version", "rows"} (read from the files)."""
        return self.manifest.get("tables", {})

    @property
    def created_at(self) -> str:
        """ISO-8601 UTC time of publication."""
        return self.manifest["created_at"]

    def file_uri(self, filename: str) -> str:
        """The URI of one of the artifact's files (``KeyError`` if it has no such file)."""
        if filename not in self.files:
            raise ArtifactNotFound(
                f"artifact {self.uri} has no file {filename!r}; files: {sorted(self.files)}"
            )
        return f"{self.uri}/{self.attempt}/{filename}"


class ArtifactStore:
    """Artifacts under one storage root (see the module docstring for the layout)."""

    def __init__(self, root: StorageRoot | str | os.PathLike[str] | None = None) -> None:
        self.root = as_root(root)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root.uri!r})"

    # ---- reading -----------------------------------------------------------------------------

    def exists(self, stage: str, key: str) -> bool:
        """Whether a published artifact (one with a manifest) is at ``stage``/``key``."""
        uri = self._manifest_uri(stage, key)
        return self.root.retrying(lambda: self.root.fs.exists(uri), f"exists {uri}")

    def get(self, stage: str, key: str) -> ArtifactRef:
        """The artifact at ``stage``/``key``; raises :class:`ArtifactNotFound` when unpublished."""
        uri = self._manifest_uri(stage, key)
        try:
            raw = self.root.retrying(lambda: self.root.fs.cat_file(uri), f"read {uri}")
        except FileNotFoundError as e:
            raise ArtifactNotFound(f"no artifact {stage}/{key} in {self.root.uri}") from e
        return self._ref_of_manifest(stage, key, uri, raw)

    def _ref_of_manifest(self, stage: str, key: str, uri: str, raw: bytes) -> ArtifactRef:
        """The ref of the manifest ``raw`` read from ``uri``; ``StorageError`` when corrupt."""
        try:
            manifest = json.loads(raw)
        except ValueError as e:
            raise StorageError(f"corrupt manifest {uri}: {e}") from e
        if manifest.get("stage") != stage or manifest.get("key") != key:
            raise StorageError(
                f"manifest {uri} names {manifest.get('stage')}/{manifest.get('key')}"
            )
        return ArtifactRef(stage, key, self.root.join(stage, key), manifest)

    def list(self, stage: str) -> list[ArtifactRef]:
        """Every published artifact of ``stage``, oldest first (folders without manifest skipped)."""
        pattern = self.root.join(_checked_stage(stage), "*", MANIFEST_NAME)
        found = self.root.retrying(lambda: self.root.fs.glob(pattern), f"list {stage}")
        # One batched read (concurrent GETs on S3); a manifest it could not read is read again
        # by get(), which retries transient faults.
        bodies = (
            self.root.retrying(lambda: self.root.fs.cat(found, on_error="return"), f"read {stage}")
            if found
            else {}
        )
        refs = []
        for path in found:
            key = path.rstrip("/").split("/")[-2]
            raw = bodies.get(path)
            if isinstance(raw, bytes):
                refs.append(self._ref_of_manifest(stage, key, self._manifest_uri(stage, key), raw))
            elif not isinstance(raw, FileNotFoundError):
                with contextlib.suppress(ArtifactNotFound):  # deleted meanwhile
                    refs.append(self.get(stage, key))
        return sorted(refs, key=lambda r: (r.created_at, r.key))

    def open(self, ref: ArtifactRef, filename: str, mode: str = "rb") -> IO[Any]:
        """Open one of the artifact's files for reading (``mode`` "rb" or "r")."""
        if mode not in ("rb", "r"):
            raise ValueError(f"artifacts are read-only: mode {mode!r} not in ('rb', 'r')")
        uri = ref.file_uri(filename)
        return self.root.retrying(lambda: self.root.fs.open(uri, mode), f"open {uri}")

    def read_bytes(self, ref: ArtifactRef, filename: str) -> bytes:
        """The whole content of one of the artifact's files (one GET, retried on faults)."""
        uri = ref.file_uri(filename)
        return self.root.retrying(lambda: self.root.fs.cat_file(uri), f"read {uri}")

    def local_dir(self, ref: ArtifactRef) -> Path:
        """A local directory with the artifact's files.

        The artifact's own folder for ``file://`` roots; for remote roots a download cache under
        ``$AIRREP_CACHE_DIR`` (default ``~/.cache/airrep``), filled atomically on first use.
        """
        if self.root.is_local:
            return self.root.local_path / ref.stage / ref.key / ref.attempt
        root_tag = hashlib.sha256(self.root.uri.encode()).hexdigest()[:16]
        target = _cache_base() / root_tag / ref.stage / ref.key / ref.attempt
        if _has_files(target, ref.files):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        download = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            for name in ref.files:
                dest = download / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(self.read_bytes(ref, name))
            if target.exists():  # a stale partial copy; complete ones returned above
                shutil.rmtree(target, ignore_errors=True)
            try:
                download.rename(target)
            except OSError:
                if not _has_files(target, ref.files):  # not another process's complete copy
                    raise
        finally:
            shutil.rmtree(download, ignore_errors=True)
        return target

    # ---- writing -----------------------------------------------------------------------------

    def build(
        self,
        stage: str,
        key: str,
        *,
        config: Mapping[str, Any],
        inputs: Sequence[str],
        writer: Writer,
    ) -> ArtifactRef:
        """The artifact at ``stage``/``key``, building it with ``writer`` when absent.

        ``writer(staging_dir)`` writes the files into a fresh local directory and returns extra
        manifest metadata (row counts, reports) or ``None``. An existing artifact is returned
        as is when its config equals ``config``; otherwise :class:`ArtifactConflict`. On any error
        in the writer or while publishing, nothing becomes visible and the error propagates.
        """
        _checked_stage(stage)
        _checked_key(key)
        config_json = canonical_json(config)
        existing = self._existing(stage, key, config_json)
        if existing is not None:
            return existing
        attempt = staging_mod.new_attempt()
        stage_dir = self.root.local_path / stage if self.root.is_local else None
        staging = staging_mod.make_staging(stage_dir, attempt)
        try:
            metadata = writer(staging)
            if metadata is not None and not isinstance(metadata, Mapping):
                raise TypeError(f"writer must return a mapping or None, got {type(metadata)}")
            manifest = _manifest(
                stage, key, attempt, json.loads(config_json), inputs, metadata, staging
            )
            if self.root.is_local:
                won = self._publish_local(stage, key, attempt, staging, manifest)
            else:
                won = self._publish_remote(stage, key, attempt, staging, manifest)
        except BaseException:
            self._remove_attempt(stage, key, attempt)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # best effort: the artifact is published either way
            self.remove_stale(self.stale_staging(stages=[stage], orphans=False))
        if not won:
            self._remove_attempt(stage, key, attempt)
            existing = self._existing(stage, key, config_json)
            if existing is None:
                raise StorageError(f"artifact {stage}/{key} vanished while being published")
            return existing
        return self.get(stage, key)

    # ---- leftovers of killed builds ----------------------------------------------------------

    def stale_staging(
        self,
        *,
        max_age_s: float = STALE_STAGING_AGE_S,
        stages: Sequence[str] | None = None,
        orphans: bool = True,
    ) -> list[StaleEntry]:
        """Leftovers of builds that will never finish (see the module docstring), sorted by path.

        ``stages``: only these stages (default every stage of a local root); ``orphans``: also
        attempt folders and pending manifests in key folders that no manifest names (local
        roots); remote roots report only the local ``$TMPDIR`` staging of their builds.
        """
        now = time.time()
        if not self.root.is_local:
            return staging_mod.stale_remote_staging(now, max_age_s)
        base = self.root.local_path
        if stages is None:
            stages = sorted(
                p.name for p in base.glob("*") if p.is_dir() and _STAGE_RE.match(p.name)
            )
        found: list[StaleEntry] = []
        for stage in stages:
            found += staging_mod.stale_local_staging(base / stage, now, max_age_s)
            if orphans:
                found += staging_mod.stale_orphans(
                    base / stage, MANIFEST_NAME, _KEY_RE.match, now, max_age_s
                )
        return sorted(found, key=lambda e: e.path)

    def remove_stale(self, entries: Sequence[StaleEntry]) -> None:
        """Remove ``entries`` (from :meth:`stale_staging`); ones already gone are skipped."""
        staging_mod.remove_stale(entries)

    def delete(self, ref: ArtifactRef) -> None:
        """Unpublish ``ref`` (manifest first, so it stops existing at once), then remove its files."""
        manifest_uri = self._manifest_uri(ref.stage, ref.key)
        self.root.retrying(lambda: self.root.fs.rm(manifest_uri), f"delete {manifest_uri}")
        with contextlib.suppress(OSError):
            self.root.fs.rm(self.root.join(ref.stage, ref.key), recursive=True)

    # ---- internals ---------------------------------------------------------------------------

    def _manifest_uri(self, stage: str, key: str) -> str:
        return self.root.join(_checked_stage(stage), _checked_key(key), MANIFEST_NAME)

    def _existing(self, stage: str, key: str, config_json: str) -> ArtifactRef | None:
        try:
            ref = self.get(stage, key)
        except ArtifactNotFound:
            return None
        if canonical_json(ref.config) != config_json:
            raise ArtifactConflict(
                f"artifact {stage}/{key} exists with a different config: "
                f"stored {canonical_json(ref.config)}, requested {config_json}"
            )
        return ref

    def _publish_local(
        self, stage: str, key: str, attempt: str, staging: Path, manifest: dict[str, Any]
    ) -> bool:
        key_dir = self.root.local_path / stage / key
        key_dir.mkdir(parents=True, exist_ok=True)
        staging.rename(key_dir / attempt)
        pending = key_dir / f".{MANIFEST_NAME}.{attempt}"
        with open(pending, "wb") as f:
            f.write(json.dumps(manifest, indent=1, ensure_ascii=False).encode())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(pending, key_dir / MANIFEST_NAME)  # atomic and exclusive
            return True
        except FileExistsError:
            return False
        finally:
            pending.unlink(missing_ok=True)

    def _publish_remote(
        self, stage: str, key: str, attempt: str, staging: Path, manifest: dict[str, Any]
    ) -> bool:
        fs = self.root.fs
        for entry in manifest["files"]:
            local = str(staging / entry["name"])
            remote = self.root.join(stage, key, attempt, entry["name"])
            self.root.retrying(
                lambda lo=local, re_=remote: fs.put_file(lo, re_), f"upload {remote}"
            )
        manifest_uri = self._manifest_uri(stage, key)
        if self.exists(stage, key):
            return False
        body = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
        try:
            self.root.retrying(
                lambda: fs.pipe_file(manifest_uri, body, mode="create"), f"publish {manifest_uri}"
            )
            return True
        except FileExistsError:
            # Lost the race, or our own put succeeded but its answer was lost and a retry hit it.
            return self.get(stage, key).attempt == attempt

    def _remove_attempt(self, stage: str, key: str, attempt: str) -> None:
        uri = self.root.join(stage, key, attempt)
        with contextlib.suppress(Exception):  # best effort: the attempt is invisible anyway
            if self.root.fs.exists(uri):
                self.root.fs.rm(uri, recursive=True)
        if self.root.is_local:  # an empty key folder left by a failed first build
            with contextlib.suppress(OSError):
                (self.root.local_path / stage / key).rmdir()


def _manifest(
    stage: str,
    key: str,
    attempt: str,
    config: dict[str, Any],
    inputs: Sequence[str],
    metadata: Mapping[str, Any] | None,
    staging: Path,
) -> dict[str, Any]:
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    if not files:
        raise StorageError(f"writer of {stage}/{key} wrote no files")
    tables = {}
    for path in files:
        if path.suffix == ".parquet":
            meta = pq.read_metadata(path)
            schema_meta = meta.schema.to_arrow_schema().metadata or {}
            tables[path.relative_to(staging).as_posix()] = {
                "schema": schema_meta.get(b"airrep.schema", b"").decode() or None,
                "schema_version": int(schema_meta.get(b"airrep.schema_version", b"0")) or None,
                "rows": meta.num_rows,
            }
    return {
        "format": MANIFEST_FORMAT,
        "stage": stage,
        "key": key,
        "attempt": attempt,
        "config": config,
        "inputs": list(inputs),
        "code_version": package_version(),
        "metadata": json.loads(canonical_json(dict(metadata or {}))),
        "tables": tables,
        "files": [
            {"name": p.relative_to(staging).as_posix(), "size": p.stat().st_size} for p in files
        ],
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "versions": {
            "python": platform.python_version(),
            "airrep": package_version(),
            "pyarrow": importlib.metadata.version("pyarrow"),
        },
    }


def _checked_stage(stage: str) -> str:
    if not isinstance(stage, str) or not _STAGE_RE.match(stage):
        raise ValueError(f"bad stage name {stage!r}: allowed [a-z0-9][a-z0-9_.-]*")
    return stage


def _checked_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"bad artifact key {key!r}: allowed [A-Za-z0-9][A-Za-z0-9_.-]*")
    return key


def _cache_base() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "airrep")


def _has_files(directory: Path, files: Mapping[str, int]) -> bool:
    return all(
        (directory / name).is_file() and (directory / name).stat().st_size == size
        for name, size in files.items()
    )
