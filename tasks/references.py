"""Small, JSON-ready references to artifacts: what every task returns (never tensors or frames)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from airrep_core.records import JsonRecord
from storage.artifacts import ArtifactRef, ArtifactStore


@dataclass(frozen=True)
class StepRef(JsonRecord):
    """One artifact a step produced or reused.

    Attributes:
        root: the storage root URI (``file://``, ``s3://``, ``memory://``).
        stage: the artifact's stage (``labels``, ``encoder``, ...).
        key: its content key (hex sha256).
        uri: the artifact folder's URI, for links in the UI.
        summary: a few JSON values worth showing (row counts, metrics).
    """

    root: str
    stage: str
    key: str
    uri: str
    summary: Mapping[str, Any]

    @classmethod
    def of(cls, store: ArtifactStore, ref: ArtifactRef, **summary: Any) -> StepRef:
        """The reference of ``ref`` in ``store`` with optional summary values."""
        return cls(store.root.uri, ref.stage, ref.key, ref.uri, dict(summary))

    def resolve(self) -> ArtifactRef:
        """The artifact itself (raises ``ArtifactNotFound`` when it was deleted)."""
        return open_store(self.root).get(self.stage, self.key)

    def exists(self) -> bool:
        """Whether the artifact is still published in its store."""
        return open_store(self.root).exists(self.stage, self.key)


@lru_cache(maxsize=16)
def open_store(root: str) -> ArtifactStore:
    """One ``ArtifactStore`` per root URI per process."""
    return ArtifactStore(root)


def step_refs(value: Any) -> Iterator[StepRef]:
    """Every ``StepRef`` inside a task's return value (nested in lists, tuples and dicts)."""
    if isinstance(value, StepRef):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from step_refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from step_refs(item)
