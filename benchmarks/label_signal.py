"""What predicts the subset labels: text views, BM25 term units, the encoder's text and the
gradient signal, measured on AirRep's own label splits (never on an evaluation set).

This is where the label-efficient recipe's text settings come from (DESIGN.md §2): the target
LM's loss and fine-tuning read only response tokens, and at ``mini`` a BM25 over the target LM's
response tokens ranks the subsets far better than the paper's BM25 over question-and-answer
words. Every row scores each split's targets against its subsets (sum of per-example scores) and
reports the LDS ×100 per split; the last split is the held-out one the encoder never trains on.

Rows:
- BM25 over the question-and-answer text (the paper's baseline), the response alone with and
  without stop-words, and the response in target-LM tokens (``bm25_response``);
- the untrained MiniLM encoder (cosine) on the question-and-answer text and on the response;
- with ``--logra``: LoGra on the base LM θ₀, and its per-target z-score sum with
  ``bm25_response`` (how much the gradient signal adds to token overlap);
- the target-independent part: LDS of the other targets' mean label (leave one out) and the
  mean pairwise Spearman ρ between targets' subset rankings.

    .venv/bin/python -m benchmarks.label_signal --preset mini [--logra]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
import torch

from airrep_core.config.baselines import Bm25Config, Bm25ResponseConfig
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.data.examples import Example
from airrep_core.data.labels import SplitLabels, normalise_losses
from airrep_core.encoder.head_training import split_pool
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.teacher import zscore_rows
from airrep_core.evaluation.lds_eval import lds_of
from airrep_core.lm.loading import load_causal_lm
from airrep_core.methods.interface import sum_group_scores
from airrep_core.methods.lexical import Bm25Attributor
from airrep_core.methods.registry import build_method
from storage.artifacts import ArtifactStore
from storage.root import default_root_uri
from tasks import labels
from tasks.corpus import load_corpus
from tasks.ground_truth import import_p3_holdout

Scorer = Callable[[list[Example], list[Example]], np.ndarray]
"""(targets, pool) -> (n_targets, n_pool) float32 scores, higher = more helpful."""


def bm25_scorer(settings: Bm25Config, tokenizer: object = None) -> Scorer:
    def score(targets: list[Example], pool: list[Example]) -> np.ndarray:
        attributor = Bm25Attributor(settings, tokenizer=tokenizer)
        attributor.fit(pool)
        return attributor.score(targets)

    return score


def encoder_scorer(view: str, config: EncoderTrainConfig) -> Scorer:
    encoder = AirRepEncoder.from_backbone(
        config.encoder,
        projection=False,
        max_length=config.max_length,
        max_prompt_words=config.max_prompt_words,
        normalize=True,
        text_view=view,
    )

    def score(targets: list[Example], pool: list[Example]) -> np.ndarray:
        def unit(e: np.ndarray) -> np.ndarray:
            return e / np.linalg.norm(e, axis=1, keepdims=True)

        return unit(encoder.encode_examples(targets)) @ unit(encoder.encode_examples(pool)).T

    return score


def method_scorer(name: str, model: object, tokenizer: object, preset: str) -> Scorer:
    def score(targets: list[Example], pool: list[Example]) -> np.ndarray:
        attributor = build_method(name, preset, model=model, tokenizer=tokenizer)
        attributor.fit(pool)
        return attributor.score(targets)

    return score


def target_independent(split: SplitLabels) -> tuple[float, float]:
    """(LDS of the leave-one-out mean of the other targets' normalised labels, mean pairwise
    Spearman ρ between targets' subset losses)."""
    normalised = normalise_losses(split.losses)  # (n_subsets, n_targets), higher = helped
    n = normalised.shape[1]
    others = (normalised.sum(axis=1, keepdims=True) - normalised) / (n - 1)
    rho = scipy.stats.spearmanr(split.losses).statistic
    return lds_of(others.T, split.losses).mean, float((rho.sum() - n) / (n * (n - 1)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini", choices=("tiny", "mini"))
    parser.add_argument("--root", default=None, help="storage root (default $AIRREP_STORAGE_ROOT)")
    parser.add_argument("--logra", action="store_true", help="add LoGra on θ₀ and its fusion")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    started = time.perf_counter()
    store = ArtifactStore(args.root or default_root_uri())
    p3_train, _ = import_p3_holdout(store)
    result = labels.generate_labels(store, p3_train, LabelsConfig.preset(args.preset))
    splits = labels.load_split_labels(store, result.labels_key)
    examples = load_corpus(store, p3_train).examples
    model, tokenizer = load_causal_lm(
        store.local_dir(store.get(labels.BASE_STAGE, result.base_key)), "cpu"
    )
    config = EncoderTrainConfig.preset(args.preset)
    rows: dict[str, Scorer] = {
        "bm25, question+answer words (paper baseline)": bm25_scorer(Bm25Config()),
        "bm25, response words": bm25_scorer(Bm25Config(view="response")),
        "bm25, response words, stop-words kept": bm25_scorer(
            Bm25Config(view="response", stopwords="")
        ),
        "bm25_response: response, target-LM tokens": bm25_scorer(Bm25ResponseConfig(), tokenizer),
        "MiniLM cosine, question+answer": encoder_scorer("question_answer", config),
        "MiniLM cosine, response": encoder_scorer("response", config),
    }
    if args.logra:
        rows["logra on θ₀"] = method_scorer("logra", model, tokenizer, args.preset)
    table: dict[str, list[float]] = {name: [] for name in rows}
    fused = "bm25_response + 0.5 · logra (z-scored)"
    extra: dict[str, list[float]] = {fused: []} if args.logra else {}
    extra |= {"target-independent (other targets' mean label)": [], "mean pairwise ρ": []}
    for split in splits:
        pool_ids, membership = split_pool(split)
        pool = [examples[i] for i in pool_ids]
        targets = [examples[i] for i in split.target_ids]
        scores = {}
        for name, scorer in rows.items():
            scores[name] = scorer(targets, pool)
            table[name].append(
                lds_of(sum_group_scores(scores[name], membership), split.losses).mean
            )
        if args.logra:
            h = zscore_rows(
                scores["bm25_response: response, target-LM tokens"]
            ) + 0.5 * zscore_rows(scores["logra on θ₀"])
            extra[fused].append(lds_of(sum_group_scores(h, membership), split.losses).mean)
        consensus, rho = target_independent(split)
        extra["target-independent (other targets' mean label)"].append(consensus)
        extra["mean pairwise ρ"].append(rho)
    names = [f"split {s.split_id}" for s in splits[:-1]] + [
        f"split {splits[-1].split_id} (held out)"
    ]
    print(
        f"\nLDS ×100 on the {args.preset} label splits ({len(splits[0].target_ids)} targets x "
        f"{len(splits[0].subset_ids)} subsets each); rows sum per-example scores over a subset\n"
    )
    print("| row | " + " | ".join(names) + " | mean |")
    print("|---|" + "---|" * (len(names) + 1))
    for name, values in {**table, **extra}.items():
        scale = 1 if name == "mean pairwise ρ" else 100
        cells = [f"{scale * v:.1f}" if scale == 100 else f"{v:.3f}" for v in values]
        mean = np.mean(values) * scale
        print(
            f"| {name} | "
            + " | ".join(cells)
            + (f" | {mean:.1f} |" if scale == 100 else f" | {mean:.3f} |")
        )
    command = shlex.join([".venv/bin/python", "-m", "benchmarks.label_signal", *sys.argv[1:]])
    print(f"\nReproduce: `{command}` ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
