"""Top-10 search latency over stored embeddings: exact chunked search (float32 and float16) against
this machine's memory bandwidth, and the approximate IVF index with its recall@10.

The stored matrix is synthetic (the store cannot hold a million real embeddings on this machine
in reasonable time): ``--clusters`` Gaussian clusters in ``--dim`` dimensions, like embeddings of a
multi-task pool. Run::

    .venv/bin/python -m benchmarks.search_latency --rows 1000000 --dim 384
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from airrep_core.attribution.search import IvfIndex, exact_top_k, recall_at_k


def measured_bandwidth(matrix: np.ndarray) -> dict[str, float]:
    """GB/s of a read pass (``sum``) and of a copy (read + write bytes) over ``matrix``."""
    out = np.empty_like(matrix)
    copy = _best(lambda: np.copyto(out, matrix), 2)
    read = _best(lambda: matrix.sum(dtype=np.float32), 2)
    return {"read_gbs": matrix.nbytes / read / 1e9, "copy_gbs": 2 * matrix.nbytes / copy / 1e9}


def _best(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def clustered(rows: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    matrix = np.empty((rows, dim), dtype=np.float32)
    step = 65536
    for start in range(0, rows, step):
        n = min(step, rows - start)
        labels = rng.integers(0, clusters, size=n)
        matrix[start : start + n] = centers[labels] + 0.7 * rng.standard_normal(
            (n, dim), dtype=np.float32
        )
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--chunk-rows", type=int, default=32768)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--skip-float16-batch", action="store_true")
    args = parser.parse_args()

    matrix = clustered(args.rows, args.dim, args.clusters, seed=0)
    queries = clustered(args.batch, args.dim, args.clusters, seed=1)
    bandwidth = measured_bandwidth(matrix)
    peak = max(bandwidth.values())
    load = os.getloadavg()[0]
    print(
        f"matrix {args.rows:,} x {args.dim} float32 = {matrix.nbytes / 1e9:.2f} GB; "
        f"cpus {os.cpu_count()}, load average {load:.1f}"
    )
    print(
        f"memory bandwidth: read (sum) {bandwidth['read_gbs']:.2f} GB/s, "
        f"copy (r+w) {bandwidth['copy_gbs']:.2f} GB/s"
    )

    rows = []
    half = matrix.astype(np.float16)
    for name, stored in (("float32", matrix), ("float16", half)):
        exact_top_k(queries[:1], stored[: min(args.rows, 100_000)], 10)  # warm-up
        one = _best(lambda s=stored: exact_top_k(queries[:1], s, 10, chunk_rows=args.chunk_rows), 3)
        rows.append((f"exact {name}", 1, one, stored.nbytes / one / 1e9, None))
        if name == "float16" and args.skip_float16_batch:
            continue
        batch = _best(lambda s=stored: exact_top_k(queries, s, 10, chunk_rows=args.chunk_rows), 1)
        rows.append((f"exact {name}", args.batch, batch, stored.nbytes / batch / 1e9, None))
    del half

    exact = exact_top_k(queries, matrix, 10, chunk_rows=args.chunk_rows)
    start = time.perf_counter()
    index = IvfIndex.build(matrix, nlist=args.nlist, seed=0)
    build = time.perf_counter() - start
    for nprobe in args.nprobe:
        one = _best(lambda n=nprobe: index.search(queries[:1], 10, nprobe=n), 3)
        batch = _best(lambda n=nprobe: index.search(queries, 10, nprobe=n), 1)
        recall = recall_at_k(index.search(queries, 10, nprobe=nprobe), exact)
        rows.append((f"ivf nlist={args.nlist} nprobe={nprobe}", 1, one, None, recall))
        rows.append((f"ivf nlist={args.nlist} nprobe={nprobe}", args.batch, batch, None, recall))

    print(f"\nIVF build (train + add): {build:.1f} s\n")
    print(
        f"| method | queries | latency (s) | per query (ms) | GB/s scanned | of peak {peak:.2f} GB/s | recall@10 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, n, seconds, gbs, recall in rows:
        fraction = f"{gbs / peak:.0%}" if gbs is not None else "-"
        print(
            f"| {name} | {n} | {seconds:.3f} | {1000 * seconds / n:.2f} | "
            f"{'-' if gbs is None else f'{gbs:.2f}'} | {fraction} | "
            f"{'1.000 (exact)' if recall is None else f'{recall:.3f}'} |"
        )
    print(f"\nreproduce: .venv/bin/python -m benchmarks.search_latency {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
