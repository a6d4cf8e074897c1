"""Dataset names, versions, the latest version and the history of a dataset.

A dataset version is an artifact of stage ``datasets`` whose key is the version (the content hash
of its examples table, see :mod:`storage.datasets`) and whose config names the dataset.

Names: 1 to 64 ASCII letters, digits, ``_`` or ``-``, starting with a letter or digit
(:func:`validate_dataset_name`, checked before anything is read or written).

The latest version is the one imported last: publishing a version makes it the latest, and
importing content that is already stored but is not the latest (a revert: A, then B, then A again)
records a **head record** ``datasets/_heads/<name>/<time>-<id>.json`` (``{"name", "version",
"at"}``) that makes it the latest again (``became_latest=True``). :func:`dataset_history` lists
both kinds of event in time order.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.artifacts import ArtifactRef, ArtifactStore
from storage.errors import ArtifactNotFound

DATASET_STAGE = "datasets"
HEADS_DIR = "_heads"
NAME_MAX_LENGTH = 64
NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{NAME_MAX_LENGTH - 1}}}", re.ASCII)


def validate_dataset_name(name: str) -> str:
    """``name`` when it is a valid dataset name (see the module docstring); ``ValueError`` else."""
    if not NAME_PATTERN.fullmatch(name):
        shown = name if len(name) <= 80 else f"{name[:40]}...({len(name)} characters)"
        raise ValueError(
            f"invalid dataset name {shown!r}: use 1-{NAME_MAX_LENGTH} ASCII letters, digits, '_' "
            "or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class DatasetVersion:
    """One published version of a dataset; ``created`` says whether this call published it,
    ``became_latest`` whether this call made an already stored version the latest again."""

    name: str
    version: str
    ref: ArtifactRef
    created: bool = False
    became_latest: bool = False

    @property
    def changed(self) -> bool:
        """Whether the dataset's latest version changed (a new version, or a revert)."""
        return self.created or self.became_latest

    @property
    def rows(self) -> int:
        """Number of examples."""
        return self.ref.metadata["rows"]

    @property
    def short_version(self) -> str:
        """The first 12 hex digits of the version."""
        return self.version[:12]

    @property
    def duplicates_dropped(self) -> int:
        """Rows dropped because an earlier row had the same content."""
        return self.ref.metadata["duplicates"]["dropped"]

    @property
    def skipped(self) -> int:
        """Input records lost to skipped problems (``skip_invalid=True``), file-level problems
        included; the per-problem report is ``skipped.jsonl``."""
        return self.ref.metadata["skipped"]

    @property
    def skip_report(self) -> list[dict[str, Any]]:
        """The per-file skip report (:func:`skip_report`; empty for versions without one)."""
        return self.ref.metadata.get("skip_report", [])

    @property
    def created_at(self) -> str:
        """When the version was published (ISO-8601 UTC)."""
        return self.ref.created_at


def version_of(ref: ArtifactRef) -> DatasetVersion:
    """The ``DatasetVersion`` of a published ``datasets`` artifact."""
    return DatasetVersion(ref.config["name"], ref.key, ref)


def list_datasets(store: ArtifactStore) -> list[str]:
    """The names of the datasets in ``store``, sorted."""
    return sorted({ref.config["name"] for ref in store.list(DATASET_STAGE)})


def dataset_versions(store: ArtifactStore, name: str) -> list[DatasetVersion]:
    """Every version of dataset ``name``, oldest first (empty if there is none)."""
    return [version_of(r) for r in store.list(DATASET_STAGE) if r.config["name"] == name]


def latest_version(store: ArtifactStore, name: str) -> DatasetVersion:
    """The version of dataset ``name`` imported last (see the module docstring);
    ``ArtifactNotFound`` naming the known datasets."""
    history = dataset_history(store, name)
    if not history:
        raise ArtifactNotFound(
            f"no dataset {name!r} in {store.root.uri}; datasets: {list_datasets(store)}"
        )
    return history[-1].version


@dataclass(frozen=True)
class HistoryEvent:
    """One event of a dataset's history: ``version`` became the latest at ``at`` (ISO-8601 UTC),
    by publication (``kind="published"``) or by a re-import of stored content (``"re-imported"``)."""

    at: str
    kind: str
    version: DatasetVersion


def dataset_history(store: ArtifactStore, name: str) -> list[HistoryEvent]:
    """Every event that set the latest version of ``name``, oldest first (the last one names the
    latest version); empty when there is no such dataset."""
    versions = {v.version: v for v in dataset_versions(store, name)}
    events = [HistoryEvent(v.created_at, "published", v) for v in versions.values()]
    for record in _head_records(store, name):
        if record.get("version") in versions:  # a record of a deleted version is ignored
            events.append(HistoryEvent(record["at"], "re-imported", versions[record["version"]]))
    return sorted(events, key=lambda e: e.at)


def _heads_uri(store: ArtifactStore, name: str) -> str:
    return store.root.join(DATASET_STAGE, HEADS_DIR, name)


def write_head_record(store: ArtifactStore, name: str, version: str) -> None:
    """Record that ``version`` of ``name`` became the latest now (a head record, see above)."""
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    record = {"name": name, "version": version, "at": at}
    compact = at.replace("-", "").replace(":", "").replace(".", "").removesuffix("+0000")
    uri = f"{_heads_uri(store, name)}/{compact}-{uuid.uuid4().hex[:8]}.json"
    body = json.dumps(record).encode()
    store.root.retrying(lambda: store.root.fs.pipe_file(uri, body), f"write {uri}")


def _head_records(store: ArtifactStore, name: str) -> list[dict[str, Any]]:
    pattern = f"{_heads_uri(store, name)}/*.json"
    paths = store.root.retrying(lambda: store.root.fs.glob(pattern), f"list {pattern}")
    if not paths:
        return []
    # One batched read (concurrent GETs on S3) instead of one request after another.
    bodies = store.root.fs.cat(paths, on_error="return")
    records = []
    for body in bodies.values():
        if isinstance(body, FileNotFoundError):  # removed meanwhile
            continue
        if isinstance(body, Exception):
            raise body
        with contextlib.suppress(ValueError):  # a torn write
            records.append(json.loads(body))
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("at"), str)]


def find_version(store: ArtifactStore, name: str, version: str) -> DatasetVersion:
    """The version of ``name`` whose hash starts with ``version`` (at least 6 hex digits)."""
    if len(version) < 6:
        raise ValueError(f"version prefix {version!r} is too short: give at least 6 hex digits")
    versions = dataset_versions(store, name)
    matches = [v for v in versions if v.version.startswith(version)]
    if len(matches) != 1:
        known = [v.short_version for v in versions]
        what = "no" if not matches else "more than one"
        raise ArtifactNotFound(f"{what} version {version!r} of dataset {name!r}; versions: {known}")
    return matches[0]
