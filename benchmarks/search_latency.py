"""Top-10 search latency over stored embeddings: exact chunked search (float32 and float16) against
this machine's streaming read bandwidth measured in the same run, and the approximate IVF index
with its recall@10 (the default ``nprobe`` of ``SearchConfig`` must reach 0.95).

The stored matrix is synthetic (the store cannot hold a million real embeddings on this machine
in reasonable time): ``--clusters`` Gaussian clusters in ``--dim`` dimensions, like embeddings of a
multi-task pool. Every timing is the best of ``--repeats`` rounds; a round times every method once,
bandwidth kernels included, so that all figures see the same load. Run::

    .venv/bin/python -m benchmarks.search_latency --rows 1000000 --dim 384
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from airrep_core.attribution.search import (
    DEFAULT_CHUNK_ROWS,
    IvfIndex,
    exact_top_k,
    in_chunk_workers,
    recall_at_k,
)
from airrep_core.config.embedding import SearchConfig
from airrep_core.runtime import machine_line

TARGET_ONE_QUERY_MS = 40.0
TARGET_RECALL = 0.95


def threaded_sum(matrix: torch.Tensor, chunk_rows: int) -> Callable[[], float]:
    """A pure read of ``matrix (n, d)``: its chunks summed in the exact search's worker layout
    (``in_chunk_workers``) without the arithmetic."""

    def work(starts: list[int]) -> float:
        return sum(float(matrix[s : s + chunk_rows].sum()) for s in starts)

    return lambda: sum(in_chunk_workers(matrix.shape[0], chunk_rows, work))


def read_kernels(matrix: np.ndarray, chunk_rows: int) -> dict[str, Callable[[], object]]:
    """Read-only passes over the float32 ``matrix``: each streams ``matrix.nbytes`` once."""
    tensor = torch.from_numpy(matrix)
    return {
        "numpy sum (1 thread)": lambda: matrix.sum(dtype=np.float32),
        f"torch sum ({torch.get_num_threads()} threads)": lambda: tensor.sum(),
        f"chunked sum in {torch.get_num_threads()} workers": threaded_sum(tensor, chunk_rows),
    }


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


def timed_rounds(
    runs: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds of each run in each of ``repeats`` rounds (after one warm-up
    call each). CPU seconds count every thread's work and not the waits for a busy core."""
    for run in runs.values():
        run()
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            seconds[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return seconds


def best_wall(runs: list[tuple[float, float]]) -> float:
    return min(wall for wall, _ in runs)


def main() -> None:
    defaults = SearchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--repeats", type=int, default=5, help="rounds; figures are the best")
    parser.add_argument("--nlist", type=int, default=defaults.nlist)
    parser.add_argument(
        "--nprobe",
        type=int,
        nargs="+",
        default=sorted({4, 16, defaults.nprobe}),
        help=f"IVF cells per query to time; the default nprobe {defaults.nprobe} is added",
    )
    args = parser.parse_args()

    print(
        f"machine: {machine_line()}; cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )
    matrix = clustered(args.rows, args.dim, args.clusters, seed=0)
    half = torch.from_numpy(matrix).half().numpy()
    queries = clustered(args.batch, args.dim, args.clusters, seed=1)
    stores = {"float32": matrix, "float16": half}
    reads = read_kernels(matrix, args.chunk_rows)
    searches: dict[str, Callable[[], object]] = {}
    for dtype, stored in stores.items():
        for n in (1, args.batch):
            searches[f"exact {dtype}|{n}"] = lambda s=stored, n=n: exact_top_k(
                queries[:n], s, 10, chunk_rows=args.chunk_rows
            )
    seconds = timed_rounds({**reads, **searches}, args.repeats)

    read_gbs = {name: matrix.nbytes / best_wall(seconds[name]) / 1e9 for name in reads}
    peak = max(read_gbs.values())
    print(
        f"matrix {args.rows:,} x {args.dim}: float32 {matrix.nbytes / 1e9:.2f} GB, "
        f"float16 {half.nbytes / 1e9:.2f} GB; best of {args.repeats} rounds; "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print(
        "streaming read bandwidth (float32 matrix, measured now): "
        + ", ".join(f"{name} {gbs:.1f} GB/s" for name, gbs in read_gbs.items())
        + f"; best {peak:.1f} GB/s"
    )

    exact = exact_top_k(queries, matrix, 10, chunk_rows=args.chunk_rows)
    start = time.perf_counter()
    index = IvfIndex.build(matrix, nlist=args.nlist, seed=0)
    build = time.perf_counter() - start
    nprobes = sorted({*args.nprobe, defaults.nprobe})
    recalls = {
        nprobe: recall_at_k(index.search(queries, 10, nprobe=nprobe), exact) for nprobe in nprobes
    }
    ivf = {
        f"ivf nprobe={nprobe}|{n}": (lambda p=nprobe, n=n: index.search(queries[:n], 10, nprobe=p))
        for nprobe in nprobes
        for n in (1, args.batch)
    }
    seconds.update(timed_rounds(ivf, args.repeats))

    print(f"\nIVF nlist={args.nlist} build (train + add): {build:.1f} s\n")
    print(
        "| method | queries | best (ms) | median (ms) | CPU (ms) | per query (ms) | GB/s read "
        f"| of {peak:.1f} GB/s measured | recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key, runs in seconds.items():
        if key in reads:
            continue
        name, n = key.split("|")
        best, median = best_wall(runs), statistics.median(wall for wall, _ in runs)
        cpu = min(cpu for _, cpu in runs)
        if name.startswith("exact"):
            gbs = stores[name.split()[1]].nbytes / best / 1e9
            read, fraction, recall = f"{gbs:.1f}", f"{gbs / peak:.0%}", "1.000 (exact)"
        else:
            read, fraction, recall = "-", "-", f"{recalls[int(name.split('=')[1])]:.3f}"
        print(
            f"| {name} | {n} | {1000 * best:.1f} | {1000 * median:.1f} | {1000 * cpu:.1f} | "
            f"{1000 * best / int(n):.2f} | {read} | {fraction} | {recall} |"
        )

    print()
    for n in (1, args.batch):
        f32, f16 = seconds[f"exact float32|{n}"], seconds[f"exact float16|{n}"]
        best32, best16 = best_wall(f32), best_wall(f16)
        spread = statistics.median(wall for wall, _ in f32) / best32 - 1
        if best16 <= best32:
            verdict = "float16 no slower"
        elif best16 <= best32 * (1 + spread):
            verdict = f"the same within the float32 rounds' spread (median {spread:+.0%} of best)"
        else:
            verdict = "float16 SLOWER"
        print(
            f"float16 vs float32, {n} quer{'y' if n == 1 else 'ies'}: {1000 * best16:.1f} ms vs "
            f"{1000 * best32:.1f} ms (x{best16 / best32:.2f}: {verdict}); CPU "
            f"{1000 * min(c for _, c in f16):.1f} ms vs {1000 * min(c for _, c in f32):.1f} ms"
        )
    for dtype, stored in stores.items():
        floor = 1000 * stored.nbytes / peak / 1e9
        one = 1000 * best_wall(seconds[f"exact {dtype}|1"])
        print(
            f"one query, {dtype}: {one:.1f} ms; floor at {peak:.1f} GB/s: "
            f"{stored.nbytes / 1e9:.2f} GB / {peak:.1f} GB/s = {floor:.1f} ms; "
            f"target {TARGET_ONE_QUERY_MS:.0f} ms "
            + (
                "met"
                if one <= TARGET_ONE_QUERY_MS
                else "not met"
                + (
                    " (out of reach at the bandwidth measured now: the floor exceeds it)"
                    if floor > TARGET_ONE_QUERY_MS
                    else ""
                )
            )
        )
    default_recall = recalls[defaults.nprobe]
    print(
        f"IVF default (SearchConfig nlist={defaults.nlist}, nprobe={defaults.nprobe}): "
        f"recall@10 {default_recall:.3f} at nlist={args.nlist}, "
        f"{'meets' if default_recall >= TARGET_RECALL else 'BELOW'} {TARGET_RECALL}"
    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"\nreproduce: .venv/bin/python -m benchmarks.search_latency {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
