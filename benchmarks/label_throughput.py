"""Label-generation throughput at the ``mini`` preset: subset models per hour, tokens/s, FLOP/s.

Fine-tunes and evaluates a few subsets of one P3 split exactly as ``tasks.labels`` does (the
``mini`` preset's base model, subset size, targets and fine-tune settings), and measures in the
same run this machine's dense matmul peak (bf16 and fp32, ``torch.mm`` of ``--peak-size`` square
matrices), so that the achieved training FLOP/s can be read as a fraction of it.

Training FLOPs are counted analytically from the real token counts (padding excluded):
3 x forward, forward = 2 x (decoder linear weights) per token + causal attention
(4 x hidden per (query, key) pair per layer) + the LM head on the response positions only
(``finetune.response_token_loss``). Evaluation FLOPs: one forward with the LM head on every
position (``lm.loss.response_losses_for_model``).

Run from the repository root (``--base quick`` skips the 10-minute warm-up: same shapes and cost,
untrained weights)::

    .venv/bin/python -m benchmarks.label_throughput --subsets 3
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from airrep_core.config.labels import LabelsConfig
from airrep_core.data.examples import Example
from airrep_core.data.sampling import partition_corpus, sample_split
from airrep_core.lm.base_model import build_base_model
from airrep_core.lm.finetune import FinetuneStats, SubsetFinetuner
from airrep_core.lm.loss import tokenize_pairs
from airrep_core.runtime import matmul_peak
from storage.artifacts import ArtifactStore
from tasks.corpus import load_corpus
from tasks.ground_truth import import_p3_holdout
from tasks.labels import build_base

QUICK_WARMUP_STEPS = 2
QUICK_WARMUP_EXAMPLES = 3000
QUICK_HELDOUT_EXAMPLES = 50


@dataclass
class SubsetTiming:
    """One subset's measured cost and its analytic FLOPs."""

    stats: FinetuneStats
    train_flops: float
    eval_flops: float
    eval_tokens: int


def forward_flops(config: object, lengths: Sequence[int], head_positions: int) -> float:
    """Forward FLOPs of sequences of ``lengths`` with the LM head on ``head_positions`` tokens."""
    d = config.hidden_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    per_layer_weights = 2 * d * d + 2 * d * kv + 3 * d * config.intermediate_size
    tokens = sum(lengths)
    pairs = sum(n * (n + 1) // 2 for n in lengths)
    layers = config.num_hidden_layers
    return (
        2 * per_layer_weights * layers * tokens
        + 4 * d * layers * pairs
        + 2 * d * config.vocab_size * head_positions
    )


def time_subset(
    finetuner: SubsetFinetuner, subset: list[Example], targets: list[Example]
) -> SubsetTiming:
    """Run one subset and count its FLOPs from the tokenised examples."""
    config = finetuner.config
    model_config = finetuner.model.config
    tokenized = tokenize_pairs(
        finetuner.tokenizer, [(e.prompt, e.response) for e in subset], config.max_length
    )
    lengths = [len(t) for t in tokenized]
    response = sum(t.num_response_tokens for t in tokenized)
    # The first token is never predicted, so a sequence has len - 1 head positions at most.
    train_flops = 3 * config.epochs * forward_flops(model_config, lengths, response)
    target_lengths = [
        len(t)
        for t in tokenize_pairs(
            finetuner.tokenizer, [(e.prompt, e.response) for e in targets], config.max_length
        )
    ]
    eval_flops = forward_flops(model_config, target_lengths, sum(target_lengths))
    _, stats = finetuner.run(subset, targets)
    return SubsetTiming(stats, train_flops, eval_flops, sum(target_lengths))


def prepare(args: argparse.Namespace) -> tuple[Path, list[list[Example]], list[Example], dict]:
    """The base model directory, ``args.subsets`` subsets and the targets of split 0 (mini), on
    the pipeline's label corpus ``flan_p3_train`` (so ``--base mini`` reuses its base LM)."""
    config = LabelsConfig.preset("mini")
    store = ArtifactStore(args.store)
    version, _ = import_p3_holdout(store)
    corpus = load_corpus(store, version)
    if args.base == "mini":
        base_ref = build_base(store, corpus, config.base)
        base_dir, report = store.local_dir(base_ref), dict(base_ref.metadata)
    else:
        base_dir = Path(tempfile.mkdtemp(prefix="quick-base-"))
        quick = config.base.replace(
            max_steps=QUICK_WARMUP_STEPS,
            eval_every=QUICK_WARMUP_STEPS,
            n_warmup_examples=QUICK_WARMUP_EXAMPLES,
            n_heldout_examples=QUICK_HELDOUT_EXAMPLES,
        )
        report = build_base_model(list(corpus.examples.values()), quick, base_dir).to_dict()
    _, label_ids = partition_corpus(corpus.examples, config.base.corpus_share)
    split = sample_split(label_ids, 0, config.sampling)
    subsets = [[corpus.examples[i] for i in s] for s in split.subsets[: args.subsets]]
    targets = [corpus.examples[i] for i in split.target_ids]
    return base_dir, subsets, targets, report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subsets", type=int, default=3, help="subsets to time")
    parser.add_argument("--base", choices=("mini", "quick"), default="quick")
    parser.add_argument("--store", default=None, help="storage root (default: artifacts/)")
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--peak-seconds", type=float, default=3.0)
    parser.add_argument("--precision", choices=("float32", "bf16"), default=None)
    parser.add_argument("--profile", action="store_true", help="torch.profiler of one subset")
    parser.add_argument(
        "--seed-noise",
        action="store_true",
        help="also retrain every subset with fine-tune seed 1 and compare the label spread "
        "across subsets with the retraining noise (use --base mini)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    base_dir, subsets, targets, report = prepare(args)
    finetune = LabelsConfig.preset("mini").finetune
    if args.precision:
        finetune = finetune.replace(precision=args.precision, eval_precision=args.precision)
    finetuner = SubsetFinetuner(base_dir, finetune)
    time_subset(finetuner, subsets[0], targets)  # warm-up: first-call kernel selection
    if args.profile:
        profile(finetuner, subsets[0], targets)
    timings = [time_subset(finetuner, subset, targets) for subset in subsets]
    if args.seed_noise:
        print_seed_noise(base_dir, finetune, subsets, targets)
    peak_bf16 = matmul_peak(torch.bfloat16, args.peak_size, args.peak_seconds)
    peak_fp32 = matmul_peak(torch.float32, args.peak_size, args.peak_seconds)
    print_table(args, finetune, report, timings, peak_bf16, peak_fp32)


def print_table(
    args: argparse.Namespace,
    finetune: object,
    report: dict,
    timings: list[SubsetTiming],
    peak_bf16: float,
    peak_fp32: float,
) -> None:
    """Print the results and the reproducing command."""
    train_s = np.array([t.stats.train_seconds for t in timings])
    eval_s = np.array([t.stats.eval_seconds for t in timings])
    train_flops = np.array([t.train_flops for t in timings])
    eval_flops = np.array([t.eval_flops for t in timings])
    tokens = np.array([t.stats.train_tokens for t in timings])
    eval_tokens = np.array([t.eval_tokens for t in timings])
    per_subset = train_s + eval_s
    train_rate = train_flops.sum() / train_s.sum()
    rows = [
        ("subsets timed", f"{len(timings)}"),
        ("torch threads", f"{torch.get_num_threads()}"),
        ("precision (train / eval)", f"{finetune.precision} / {finetune.eval_precision}"),
        ("base model", f"{args.base}: {report.get('n_parameters', 0) / 1e6:.2f}M params"),
        ("seconds per subset (train + eval)", f"{per_subset.mean():.2f} ± {per_subset.std():.2f}"),
        ("  train / eval seconds", f"{train_s.mean():.2f} / {eval_s.mean():.2f}"),
        ("subset models per hour", f"{3600 / per_subset.mean():.0f}"),
        ("train tokens/s (no padding)", f"{tokens.sum() / train_s.sum():.0f}"),
        ("eval tokens/s", f"{eval_tokens.sum() / eval_s.sum():.0f}"),
        ("train GFLOP per subset", f"{train_flops.mean() / 1e9:.1f}"),
        ("achieved train GFLOP/s", f"{train_rate / 1e9:.1f}"),
        ("achieved eval GFLOP/s", f"{eval_flops.sum() / eval_s.sum() / 1e9:.1f}"),
        ("matmul peak bf16 / fp32 GFLOP/s", f"{peak_bf16 / 1e9:.0f} / {peak_fp32 / 1e9:.0f}"),
        ("train FLOP/s / bf16 peak", f"{train_rate / peak_bf16:.1%}"),
        ("train FLOP/s / fp32 peak", f"{train_rate / peak_fp32:.1%}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nLabel-generation throughput (mini preset, {sys.platform})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    command = " ".join(["python -m benchmarks.label_throughput", *sys.argv[1:]])
    print(f"\nReproduce: cd <repo> && .venv/bin/{command}")


def print_seed_noise(
    base_dir: Path, finetune: object, subsets: list[list[Example]], targets: list[Example]
) -> None:
    """Label spread across subsets vs the noise of retraining the same subset with another seed.

    spread: per target, the population std of its loss over the subsets (seed 0), averaged over
    targets. noise: per target, the std of one subset's loss under two seeds (|ℓ₀ − ℓ₁| / √2),
    root-mean-squared over subsets and targets.
    """
    runs = {}
    for seed in (0, 1):
        tuner = SubsetFinetuner(base_dir, finetune.replace(seed=seed))
        runs[seed] = np.stack([tuner.run(subset, targets)[0] for subset in subsets])
    base_losses = SubsetFinetuner(base_dir, finetune).target_losses(targets)
    spread = runs[0].std(axis=0).mean()
    noise = np.sqrt(np.mean((runs[0] - runs[1]) ** 2) / 2)
    print(f"\nLabel sanity ({len(subsets)} subsets x {len(targets)} targets)")
    print(f"  mean target loss: base {base_losses.mean():.3f} -> fine-tuned {runs[0].mean():.3f}")
    print(f"  per-target spread across subsets (std): {spread:.4f}")
    print(f"  retraining noise, same subset, seed 0 vs 1 (std): {noise:.4f}")
    print(f"  spread / noise: {spread / noise:.1f}")


def profile(finetuner: SubsetFinetuner, subset: list[Example], targets: list[Example]) -> None:
    """Print where one subset's time goes (operators by self CPU time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        finetuner.run(subset, targets)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
