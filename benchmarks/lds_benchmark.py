"""The LDS benchmark (DESIGN.md §3): every method × every evaluation set against ground-truth
retraining, with the noise ceiling, costs, classification, data selection and transfer tables.

    .venv/bin/python -m benchmarks.lds_benchmark --preset mini            # hours on 2 CPU cores
    .venv/bin/python -m benchmarks.lds_benchmark --preset mini --estimate  # the plan, no run
    .venv/bin/python -m benchmarks.lds_benchmark --preset tiny            # about a minute

Same as ``airrep bench lds``; everything is cached in the store (``--root``, default
``$AIRREP_STORAGE_ROOT``), so a rerun only loads and an interrupted run resumes. ``--estimate``
prints the fine-tunes the preset needs and the time they take at DESIGN.md §6's calibration
(16 s per 100-example subset of the 4-layer, 256-wide base on 2 cores, ~3 epochs).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.labels import LabelsConfig

SECONDS_PER_100_EXAMPLE_SUBSET = 16.0
"""DESIGN.md §6: one fine-tune (3 epochs, batch 8, length 192, bf16) + 100 test losses, 2 cores."""
BASE_WARMUP_SECONDS_PER_STEP = 600.0 / 780
"""DESIGN.md §6: the mini base LM's warm-up took 10 minutes for 780 steps."""


def planned_finetunes(preset: str) -> list[tuple[str, int, int]]:
    """``(what, count, subset_size)`` of every fine-tune the benchmark at ``preset`` runs."""
    config = EvaluationConfig.preset(preset)
    sampling = LabelsConfig.preset(preset).sampling
    size = config.sampling.subset_size
    plan = [
        ("AirRep labels (P3)", sampling.n_splits * sampling.n_subsets, sampling.subset_size),
        ("ground truth", len(config.eval_sets) * config.sampling.n_subsets, size),
        ("noise ceiling", len(config.eval_sets) * config.noise_subsets, size),
        (
            "transfer ground truth",
            len(config.transfer_eval_sets) * (config.sampling.n_subsets + config.noise_subsets),
            size,
        ),
    ]
    if config.selection_methods:
        count = config.selection_random_draws + len(config.selection_methods)
        plan.append(("data selection", count, config.selection_size))
    return plan


def estimate_seconds(preset: str) -> float:
    """Fine-tunes and base warm-ups at the §6 calibration (encoder training and scoring not
    included: see the encoder throughput benchmark and the report's time column)."""
    finetunes = sum(
        count * SECONDS_PER_100_EXAMPLE_SUBSET * size / 100
        for _, count, size in planned_finetunes(preset)
    )
    bases = 1 + bool(EvaluationConfig.preset(preset).transfer_eval_sets)
    warmup_steps = LabelsConfig.preset(preset).base.max_steps
    return finetunes + bases * warmup_steps * BASE_WARMUP_SECONDS_PER_STEP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini", choices=("tiny", "mini"))
    parser.add_argument("--eval-set", action="append", default=None, help="repeatable")
    parser.add_argument("--root", default=None, help="storage root URI")
    parser.add_argument("--estimate", action="store_true", help="print the plan only")
    args = parser.parse_args()
    print(f"Plan at preset {args.preset!r} (fine-tunes of the base LM):")
    for what, count, size in planned_finetunes(args.preset):
        print(f"  {what:<24} {count:>5} x {size} examples")
    print(f"  estimate at the §6 calibration: {estimate_seconds(args.preset) / 3600:.1f} h")
    command = ["python -m benchmarks.lds_benchmark", "--preset", args.preset]
    for name in args.eval_set or ():
        command += ["--eval-set", name]
    if args.root:
        command += ["--root", args.root]
    if args.estimate:
        print("Run:", " ".join(command))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from flows.bench import run_bench
    from storage.artifacts import ArtifactStore

    started = time.perf_counter()
    result = run_bench(ArtifactStore(args.root), args.preset, args.eval_set, args.root)
    print(result.evaluation.markdown)
    print(
        f"Wall time: {time.perf_counter() - started:.0f} s; report: {result.evaluation.report.uri}"
    )
    print("Reproduce:", " ".join(command), f"  (or: {result.command})")


if __name__ == "__main__":
    main()
