"""Cost of an incremental embedding-store refresh against a full embedding pass, and the effect
of float16 storage on scores (real GSM8K rows, the real MiniLM encoder).

Steps: import the first ``--rows`` GSM8K train examples and embed them (full pass); import a
version with ``--added`` percent more rows and refresh (only the new rows are encoded); then
store the same embeddings as float16 and compare scores of GSM8K test queries against the
float32 view (max/mean absolute score difference and top-10 overlap: the LDS tooling is not part
of this step). Run::

    .venv/bin/python -m benchmarks.refresh_cost --rows 2000 --added 1 --max-length 64
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from airrep_core.attribution.search import exact_top_k
from airrep_core.config.embedding import EmbeddingConfig
from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from storage.artifacts import ArtifactStore
from storage.datasets import import_dataset, read_examples
from storage.embedding_store import StoreSpec, load_view, refresh_view
from storage.sample_data import sample_data_dir
from tasks.embeddings import embed_function


class TimedEmbed:
    """The encoder's embed function, remembering each vector (to store them again as float16)."""

    def __init__(self, encoder: AirRepEncoder, config: EmbeddingConfig) -> None:
        self.embed = embed_function(encoder, config)
        self.rows = 0
        self.seconds = 0.0
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, rows: pa.Table) -> np.ndarray:
        start = time.perf_counter()
        out = self.embed(rows)
        self.seconds += time.perf_counter() - start
        self.rows += rows.num_rows
        self.vectors.update(zip(rows.column("content_hash").to_pylist(), out, strict=True))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--added", type=float, default=1.0, help="percent of new rows")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="refresh-cost-"))
    store = ArtifactStore(f"file://{work / 'store'}")
    extra = max(1, round(args.rows * args.added / 100))
    with open(sample_data_dir() / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        lines = list(itertools.islice(f, args.rows + extra))
    base_file, grown_file = work / "base.jsonl", work / "grown.jsonl"
    base_file.write_text("".join(lines[: args.rows]))
    grown_file.write_text("".join(lines))
    base = import_dataset(store, base_file, "gsm8k")
    grown = import_dataset(store, grown_file, "gsm8k")

    encoder = AirRepEncoder.from_backbone("all-MiniLM-L6-v2", max_length=args.max_length)
    config = EmbeddingConfig.preset("mini", precision="float32", part_rows=512)
    spec = StoreSpec("benchmark-encoder", "float32", config.precision)
    embed = TimedEmbed(encoder, config)

    def refresh(version, spec=spec):
        start = time.perf_counter()
        result = refresh_view(
            store,
            spec,
            version.version,
            read_examples(store, version),
            embed,
            part_rows=config.part_rows,
        )
        return result, time.perf_counter() - start

    full, full_seconds = refresh(base)
    full_encode = embed.seconds
    incremental, inc_seconds = refresh(grown)
    inc_encode = embed.seconds - full_encode

    print(
        f"GSM8K train rows {args.rows:,} + {extra:,} new ({args.added:g}%), MiniLM max_length "
        f"{args.max_length}, float32 encoder on {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print("| refresh | rows in view | rows encoded | total (s) | encoding (s) | other (s) |")
    print("|---|---|---|---|---|---|")
    for name, result, seconds, encode in (
        ("full", full, full_seconds, full_encode),
        (f"incremental (+{args.added:g}%)", incremental, inc_seconds, inc_encode),
    ):
        print(
            f"| {name} | {result.rows:,} | {result.encoded:,} | {seconds:.2f} | {encode:.2f} | "
            f"{seconds - encode:.2f} |"
        )
    print(
        f"\nincremental / full: {inc_seconds / full_seconds:.2%} of the time "
        f"(encoded rows: {incremental.encoded / full.encoded:.2%})"
    )

    # float16 storage of the very same vectors
    half_spec = StoreSpec("benchmark-encoder", "float16", config.precision)

    def replay(rows: pa.Table) -> np.ndarray:
        return np.stack([embed.vectors[h] for h in rows.column("content_hash").to_pylist()])

    half = refresh_view(
        store,
        half_spec,
        grown.version,
        read_examples(store, grown),
        replay,
        part_rows=config.part_rows,
    )
    f32 = load_view(store, incremental.view)
    f16 = load_view(store, half.view)
    with open(sample_data_dir() / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
        tests = [json.loads(line) for line in itertools.islice(f, args.queries)]
    queries = encoder.encode_queries(
        [Example(str(i), r["question"], r["answer"]) for i, r in enumerate(tests)]
    )
    s32 = queries @ np.asarray(f32.embeddings).T
    s16 = queries @ np.asarray(f16.embeddings, dtype=np.float32).T
    diff = np.abs(s32 - s16)
    top32 = exact_top_k(queries, f32.embeddings, 10).indices
    top16 = exact_top_k(queries, f16.embeddings, 10).indices
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top32, top16, strict=True)])
    print(
        f"\nfloat16 vs float32 storage ({len(tests)} GSM8K test queries x {f32.rows:,} rows; "
        "LDS tooling not used here):"
    )
    print(
        "| max abs score diff | mean abs score diff | score std | top-10 overlap | bytes f16/f32 |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {diff.max():.5f} | {diff.mean():.6f} | {s32.std():.3f} | {overlap:.4f} | "
        f"{f16.embeddings.nbytes / f32.embeddings.nbytes:.2f} |"
    )
    print(f"\nreproduce: .venv/bin/python -m benchmarks.refresh_cost {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
