"""Knobs of the embedding store refresh and of attribution queries (DESIGN.md §2 "Scores", §4).

- :class:`EmbeddingConfig`: how a dataset version is embedded by one encoder checkpoint (storage
  dtype, rows per stored part, encode batch size and precision). ``dtype`` and ``precision`` change
  the stored numbers, so they are part of every part's and view's content key; the batch size
  and part size only change the cost.
- :class:`SearchConfig`: how queries search the stored embeddings (top-k, exact chunked search or
  an approximate IVF index, data-selection settings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from airrep_core.config.base import PRECISIONS, StageConfig, help_field, require
from airrep_core.config.encoder import POOLINGS

EMBEDDING_DTYPES = ("float32", "float16")
INDEX_KINDS = ("exact", "ivf")


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig(StageConfig):
    """How the training pool is embedded into the store by one encoder checkpoint."""

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # Unit tests: small parts so that a few hundred rows make several of them.
        "tiny": {"part_rows": 64, "batch_size": 32, "precision": "float32"},
        # The CPU benchmark: "auto" = float32 on CPU, bf16 on GPU (bf16 on a CPU is fast only with
        # AMX/AVX512-BF16: airrep_core/runtime.py measures this machine at run time).
        "mini": {"part_rows": 2048, "batch_size": 64, "precision": "auto"},
        # GPU scale: big parts (few files on S3), bf16 on CUDA.
        "paper": {"part_rows": 65536, "batch_size": 512, "precision": "auto"},
    }

    dtype: str = help_field(
        "float32",
        f"storage dtype of the embeddings, one of {EMBEDDING_DTYPES} (float16 halves bytes)",
    )
    part_rows: int = help_field(
        8192, "rows per stored part: the unit of resumption of a killed refresh and of reuse"
    )
    batch_size: int = help_field(64, "texts per encoder forward pass")
    precision: str = help_field(
        "float32", f"encoder precision, one of {PRECISIONS} (part of the store's key)"
    )

    def validate(self) -> None:
        require(self.dtype in EMBEDDING_DTYPES, self, "dtype", self.dtype, str(EMBEDDING_DTYPES))
        require(self.part_rows >= 1, self, "part_rows", self.part_rows, ">= 1")
        require(self.batch_size >= 1, self, "batch_size", self.batch_size, ">= 1")


@dataclasses.dataclass(frozen=True)
class SearchConfig(StageConfig):
    """How attribution queries and data selection search the stored embeddings."""

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {"chunk_rows": 64, "nlist": 8, "nprobe": 4},
        "mini": {"chunk_rows": 32768, "nlist": 256, "nprobe": 16},
        "paper": {"chunk_rows": 65536, "nlist": 4096, "nprobe": 64},
    }

    k: int = help_field(10, "examples listed per query, for the most helpful and most harmful")
    chunk_rows: int = help_field(
        32768, "stored rows per selection step of the exact search (bounds the score buffer)"
    )
    index: str = help_field("exact", f"search method, one of {INDEX_KINDS}")
    nlist: int = help_field(1024, "IVF index: number of k-means cells")
    nprobe: int = help_field(
        64,
        "IVF index: cells visited per query (recall/latency trade-off); 64 of 1024 cells: "
        "recall@10 0.96 in benchmarks/search_latency.py (16: 0.88); the paper preset's 64 of "
        "4096: 0.963 (32: 0.897). Pools of a few thousand rows (tiny, mini) are searched "
        "exactly by default: IVF there buys no speed and its recall is low",
    )
    seed: int = help_field(0, "seed of the IVF k-means training sample and initialisation")
    pooling: str = help_field("attention", f"group-influence pooling, one of {POOLINGS}")
    batch_size: int = help_field(64, "query texts per encoder forward pass")
    precision: str = help_field("float32", f"query encoder precision, one of {PRECISIONS}")

    def validate(self) -> None:
        require(self.k >= 1, self, "k", self.k, ">= 1")
        require(self.chunk_rows >= 1, self, "chunk_rows", self.chunk_rows, ">= 1")
        require(self.index in INDEX_KINDS, self, "index", self.index, str(INDEX_KINDS))
        require(self.nlist >= 1, self, "nlist", self.nlist, ">= 1")
        require(self.nprobe >= 1, self, "nprobe", self.nprobe, ">= 1")
        require(self.pooling in POOLINGS, self, "pooling", self.pooling, str(POOLINGS))
        require(self.batch_size >= 1, self, "batch_size", self.batch_size, ">= 1")
