"""Cross-check our gradient baselines against kronfluence, an independent implementation.

Same model (the tiny Qwen2 of ``tests/core/baseline_fixtures.py``, or any saved causal LM), same
data (real P3 examples), same loss (mean response-token cross-entropy, ``lm.data`` tokens), same
tracked layers (every linear layer of the decoder blocks, biases as an input column of ones):

- ``grad_dot`` (exact, no projection)  vs kronfluence ``identity`` strategy;
- ``logra`` (exact, damping 0.1 · mean eigenvalue) vs kronfluence ``kfac`` with the empirical
  Fisher and its heuristic damping (``damping_factor=None`` = 0.1 · mean eigenvalue): the same
  estimator, so the score matrices should agree to float precision;
- ``logra`` with 8x8 (the tiny preset) and 32x32 projections vs kronfluence ``kfac``: how much
  the projection changes the scores.

Prints Pearson and Spearman correlation of the flattened (query x train) score matrices, the
per-query Spearman mean and the max relative difference. Run from the repository root::

    .venv/bin/python -m benchmarks.crosscheck_gradients
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from airrep_core.config.baselines import GradDotConfig, LograConfig
from airrep_core.data.examples import Example
from airrep_core.lm.data import IGNORE_INDEX, collate, tokenize_example
from airrep_core.methods import GradientAttributor
from airrep_core.methods.gradient_features import tracked_linear_layers

MAX_LENGTH = 64
BATCH_SIZE = 4
PROJECTIONS = (8, 32)
"""Per-layer projection sizes compared with the exact K-FAC scores (the tiny preset uses 8)."""


class _TokenizedDataset(Dataset):
    """Examples tokenised like ours (``lm.data.tokenize_example``), one item per example."""

    def __init__(self, tokenizer: Any, examples: Sequence[Example]) -> None:
        self.items = [
            tokenize_example(tokenizer, e.prompt, e.response, MAX_LENGTH) for e in examples
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def _summed_response_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over the batch of each example's mean response-token CE (our loss, written afresh)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    token_losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return (token_losses.sum(dim=1) / counts).sum()


def kronfluence_scores(
    model_dir: Path, train: Sequence[Example], queries: Sequence[Example], strategy: str
) -> np.ndarray:
    """``(n_query, n_train)`` kronfluence pairwise scores (``strategy``: ``identity`` or ``kfac``)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    tracked = [layer.name for layer in tracked_linear_layers(model, LograConfig().module_suffixes)]

    class ResponseLossTask(Task):
        def compute_train_loss(
            self, batch: Any, model: torch.nn.Module, sample: bool = False
        ) -> torch.Tensor:
            if sample:
                raise ValueError("the cross-check uses the empirical Fisher (sample=False)")
            return _summed_response_loss(model, batch)

        def compute_measurement(self, batch: Any, model: torch.nn.Module) -> torch.Tensor:
            return _summed_response_loss(model, batch)

        def get_influence_tracked_modules(self) -> list[str]:
            return tracked

        def get_attention_mask(self, batch: Any) -> torch.Tensor:
            return batch["attention_mask"]

    task = ResponseLossTask()
    model = prepare_model(model, task)
    loader_kwargs = DataLoaderKwargs(
        collate_fn=lambda items: collate(items, tokenizer.pad_token_id)
    )
    train_data = _TokenizedDataset(tokenizer, train)
    query_data = _TokenizedDataset(tokenizer, queries)
    with tempfile.TemporaryDirectory() as output_dir:
        analyzer = Analyzer(
            analysis_name="crosscheck",
            model=model,
            task=task,
            cpu=True,
            disable_tqdm=True,
            output_dir=output_dir,
        )
        analyzer.set_dataloader_kwargs(loader_kwargs)
        analyzer.fit_all_factors(
            factors_name=strategy,
            dataset=train_data,
            per_device_batch_size=BATCH_SIZE,
            factor_args=FactorArguments(strategy=strategy, use_empirical_fisher=True),
        )
        analyzer.compute_pairwise_scores(
            scores_name=f"{strategy}_scores",
            factors_name=strategy,
            query_dataset=query_data,
            train_dataset=train_data,
            per_device_query_batch_size=BATCH_SIZE,
            per_device_train_batch_size=BATCH_SIZE,
            score_args=ScoreArguments(damping_factor=None),
        )
        scores = analyzer.load_pairwise_scores(f"{strategy}_scores")["all_modules"]
    return scores.double().numpy()


def our_scores(
    model_dir: Path,
    train: Sequence[Example],
    queries: Sequence[Example],
    method: str,
    projection: int = 0,
) -> np.ndarray:
    """``(n_query, n_train)`` scores of our ``grad_dot``/``logra`` with ``projection`` x ``projection``."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    settings = {
        "max_length": MAX_LENGTH,
        "batch_size": BATCH_SIZE,
        "projection_in": projection,
        "projection_out": projection,
    }
    if method == "grad_dot":
        attributor = GradientAttributor(model, tokenizer, GradDotConfig.preset("tiny", **settings))
    elif method == "logra":
        attributor = GradientAttributor(model, tokenizer, LograConfig.preset("tiny", **settings))
    else:
        raise ValueError(f"method={method!r} is unknown; allowed: ('grad_dot', 'logra')")
    attributor.fit(train)
    return attributor.score(queries).astype(np.float64)


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Pearson/Spearman of the flattened matrices, mean per-query Spearman, max relative diff."""
    per_query = [stats.spearmanr(a, b).statistic for a, b in zip(ours, reference, strict=True)]
    scale = np.abs(reference).max()
    return {
        "pearson": float(stats.pearsonr(ours.ravel(), reference.ravel()).statistic),
        "spearman": float(stats.spearmanr(ours.ravel(), reference.ravel()).statistic),
        "per_query_spearman": float(np.mean(per_query)),
        "max_rel_diff": float(np.abs(ours - reference).max() / scale),
    }


def run_crosscheck(
    model_dir: Path, train: Sequence[Example], queries: Sequence[Example]
) -> dict[str, dict[str, float]]:
    """``{comparison: agreement}`` for the three comparisons of the module docstring."""
    reference_identity = kronfluence_scores(model_dir, train, queries, "identity")
    reference_kfac = kronfluence_scores(model_dir, train, queries, "kfac")
    return {
        "grad_dot (exact) vs kronfluence identity": agreement(
            our_scores(model_dir, train, queries, "grad_dot"), reference_identity
        ),
        "logra (exact) vs kronfluence kfac": agreement(
            our_scores(model_dir, train, queries, "logra"), reference_kfac
        ),
        **{
            f"logra ({k}x{k} projection) vs kronfluence kfac": agreement(
                our_scores(model_dir, train, queries, "logra", projection=k), reference_kfac
            )
            for k in PROJECTIONS
        },
    }


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table of ``run_crosscheck``'s results."""
    header = f"{'comparison':<45} {'pearson':>8} {'spearman':>9} {'per-query ρ':>12} {'max rel diff':>13}"
    lines = [header, "-" * len(header)]
    for name, row in results.items():
        lines.append(
            f"{name:<45} {row['pearson']:>8.5f} {row['spearman']:>9.5f} "
            f"{row['per_query_spearman']:>12.5f} {row['max_rel_diff']:>13.2e}"
        )
    return "\n".join(lines)


def load_baseline_fixtures() -> ModuleType:
    """``tests/core/baseline_fixtures.py`` loaded by path (the site-packages of some tools ship a
    top-level ``tests`` package, so ``import tests.core...`` is not reliable)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "core" / "baseline_fixtures.py"
    spec = importlib.util.spec_from_file_location("baseline_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-query", type=int, default=6)
    args = parser.parse_args()
    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    fixtures = load_baseline_fixtures()
    train, queries = fixtures.train_and_query_examples(args.n_train, args.n_query)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        model_dir = fixtures.build_tiny_target_lm(Path(directory))
        results = run_crosscheck(model_dir, train, queries)
    print(
        f"tiny Qwen2 (2 layers, width 128), {len(train)} train x {len(queries)} query P3 examples"
    )
    print(format_table(results))
    print(f"({time.perf_counter() - started:.0f} s)")
    print(
        "reproduce: .venv/bin/python -m benchmarks.crosscheck_gradients "
        f"--n-train {args.n_train} --n-query {args.n_query}"
    )


if __name__ == "__main__":
    main()
