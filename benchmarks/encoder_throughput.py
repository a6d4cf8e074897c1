"""Encoding throughput of the AirRep encoder (all-MiniLM-L6-v2 + projection) on this machine.

Texts: real examples in the encoder text format, half P3 (a seeded sample over all templates of
``flan_p3``) and half Dolly, truncated to ``--max-length`` tokens. For every combination of
precision (float32, bf16 autocast), batch size and batching order (sorted by token length, or in
the input order) it encodes all texts once after a warm-up batch and reports examples/s, real
(unpadded) tokens/s and the peak resident memory of that run (VmHWM, reset before each run).

Run from the repository root::

    .venv/bin/python -m benchmarks.encoder_throughput
    .venv/bin/python -m benchmarks.encoder_throughput --n 512 --batch-sizes 16,64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

from airrep_core.data.examples import encoder_text
from airrep_core.encoder.model import AirRepEncoder

END_OF_TEXT = "<|endoftext|>"


def data_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("AIRREP_DATA_DIR", default))


def real_texts(n: int, seed: int) -> list[str]:
    """``n`` encoder texts: a seeded sample of P3 records and the first Dolly records."""
    rng = random.Random(seed)
    p3_files = sorted((data_dir() / "flan_p3").glob("*.jsonl"))
    p3 = []
    for path in rng.sample(p3_files, min(len(p3_files), n)):
        with path.open() as f:
            row = json.loads(next(f))
        p3.append(encoder_text(row["prompt"], row["completion"].removesuffix(END_OF_TEXT)))
    dolly = []
    with (data_dir() / "dolly" / "dolly_6400.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            dolly.append(encoder_text(row["instruction"], row["text"]))
            if len(dolly) == n - n // 2:
                break
    texts = p3[: n // 2] + dolly
    rng.shuffle(texts)
    return texts


def reset_peak_rss() -> None:
    """Reset VmHWM (Linux: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="texts to encode per run")
    parser.add_argument("--max-length", type=int, default=128, help="encoder max length")
    parser.add_argument("--batch-sizes", default="16,32,64", help="comma-separated")
    parser.add_argument("--precisions", default="float32,bf16", help="float32 and/or bf16")
    parser.add_argument("--orders", default="sorted,input", help="sorted and/or input")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    encoder = AirRepEncoder.from_backbone(max_length=args.max_length)
    texts = real_texts(args.n, args.seed)
    token_ids = encoder.tokenize(texts)
    n_tokens = sum(len(ids) for ids in token_ids)
    print(
        f"{len(texts)} texts (P3 + Dolly), {n_tokens / len(texts):.0f} tokens/text on average "
        f"at max length {args.max_length}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    header = f"{'precision':>9} {'batch':>5} {'order':>6} {'ex/s':>8} {'tokens/s':>9} {'peak RSS MiB':>12}"
    print(header)
    print("-" * len(header))
    for precision in args.precisions.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            for order in args.orders.split(","):
                encoder.encode_token_ids(token_ids[:batch_size], batch_size, precision=precision)
                reset_peak_rss()
                start = time.perf_counter()
                encoder.encode_token_ids(
                    token_ids, batch_size, precision=precision, sort_by_length=order == "sorted"
                )
                seconds = time.perf_counter() - start
                print(
                    f"{precision:>9} {batch_size:>5} {order:>6} {len(texts) / seconds:>8.1f} "
                    f"{n_tokens / seconds:>9.0f} {peak_rss_mib():>12.0f}",
                    flush=True,
                )
    print(
        f"\nreproduce: .venv/bin/python -m benchmarks.encoder_throughput {' '.join(sys.argv[1:])}"
    )


if __name__ == "__main__":
    main()
