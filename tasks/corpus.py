"""A dataset version loaded as examples in memory (by id, with content hashes), and the
identity of a set of its examples."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from airrep_core.data.examples import Example
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.dataset_heads import DatasetVersion
from storage.datasets import read_examples

DatasetLike = DatasetVersion | ArtifactRef


@dataclass(frozen=True)
class Corpus:
    """A dataset version's examples in memory, by id, with their content hashes."""

    key: str
    examples: dict[str, Example]
    content_hashes: dict[str, str]


def load_corpus(store: ArtifactStore, dataset: DatasetLike) -> Corpus:
    """The examples of a dataset version (a ``DatasetVersion`` or its ``ArtifactRef``)."""
    ref = dataset.ref if isinstance(dataset, DatasetVersion) else dataset
    table = read_examples(store, ref)
    examples: dict[str, Example] = {}
    hashes: dict[str, str] = {}
    for row in table.to_pylist():
        example = Example(
            row["example_id"], row["prompt"], row["response"], row["source"], row["group"]
        )
        examples[example.example_id] = example
        hashes[example.example_id] = row["content_hash"]
    return Corpus(ref.key, examples, hashes)


def ids_digest(corpus: Corpus, ids: Sequence[str]) -> str:
    """sha256 of the sorted (example_id, content_hash) pairs: the identity of a set of examples."""
    digest = hashlib.sha256()
    for example_id in sorted(ids):
        digest.update(f"{example_id}\t{corpus.content_hashes[example_id]}\n".encode())
    return digest.hexdigest()
