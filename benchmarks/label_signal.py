"""What predicts the subset labels: text views, BM25 term units, the encoder's text and the
gradient signal, measured on AirRep's own label splits (never on an evaluation set).

This is where the label-efficient recipe's text settings come from (DESIGN.md §2): the target
LM's loss and fine-tuning read only response tokens, and at ``mini`` a BM25 over the target LM's
response tokens ranks the subsets far better than the paper's BM25 over question-and-answer
words. Every row scores each split's targets against its subsets (sum of per-example scores) and
reports the LDS ×100 per split; the last split is the held-out one the encoder never trains on.

Rows:
- BM25 over the question-and-answer text (the paper's baseline), the response alone with and
  without stop-words, the whole response in target-LM tokens, and ``bm25_response``: exactly the
  response tokens the LM reads at the labels' fine-tuning length;
- the untrained MiniLM encoder (cosine) on the question-and-answer text and on the response;
- BM25 over the bigrams and over the trigrams of those tokens alone, and the hybrid's lexical
  term: unigrams, bigrams and trigrams z-scored per target and weighted 1 : 1 : 0.5
  (``LEXICAL_NGRAM_WEIGHTS``);
- the token bag (``encoder.token_bag``, fitted on the split's examples) as a plain mean,
  idf-weighted, and as the recipe encodes it (idf-weighted, no bag for a target past
  ``token_bag_max_query_tokens``), alone and added to ``bm25_response`` or to the
  n-gram term as the hybrid adds it: z(bag·bag) + 8·z(lexical);
- with ``--logra``: LoGra on the base LM θ₀, and its per-target z-score sum with
  ``bm25_response`` (how much the gradient signal adds to token overlap);
- the target-independent part: LDS of the other targets' mean label (leave one out) and the
  mean pairwise Spearman ρ between targets' subset rankings.

A second table splits the targets of all splits by how many response tokens the LM reads and
gives the mean per-target gain of each fused row over ``bm25_response``. A third is where the
n-gram weights come from: LDS of 1·z(uni) + a_2·z(bi) + a_3·z(tri) over a grid, on the training
splits with the held-out split's validation targets (the recipe's ``validation_max_targets``
first ones), which choose, and on its remaining test targets, which only confirm. A fourth
chooses the token bag's query cut-off the same way.

    .venv/bin/python -m benchmarks.label_signal --preset mini [--logra] [--base-steps N]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.stats
import torch

from airrep_core.config.baselines import Bm25Config, Bm25ResponseConfig
from airrep_core.config.encoder import LEXICAL_NGRAM_WEIGHTS, EncoderTrainConfig
from airrep_core.config.labels import LabelsConfig, base_steps_override
from airrep_core.data.examples import Example
from airrep_core.data.labels import SplitLabels, normalise_losses
from airrep_core.encoder.head_training import split_pool
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.token_bag import TokenBag
from airrep_core.evaluation.lds_eval import lds_of
from airrep_core.lm.data import read_token_ids
from airrep_core.lm.loading import load_causal_lm
from airrep_core.methods.interface import sum_group_scores, zscore_rows
from airrep_core.methods.lexical import Bm25Attributor
from airrep_core.methods.registry import build_method
from storage.artifacts import ArtifactStore
from storage.root import default_root_uri
from tasks import labels
from tasks.corpus import load_corpus
from tasks.ground_truth import import_p3_holdout

BIGRAMS = "bm25, bigrams of the response tokens the LM reads"
TRIGRAMS = "bm25, trigrams of the response tokens the LM reads"
NGRAMS = "the hybrid's lexical term: uni + bi + 0.5 · tri, each z-scored"
BAG_PLAIN = "token bag, plain mean"
BAG_IDF = "token bag, idf-weighted"
BAG = "token bag as the recipe encodes it (idf, none on long queries)"  # derived from BAG_IDF
CUT_OFF_GRID = (2, 4, 8, 16, 32, 0)
"""Query cut-offs of the token bag the grid scores (0 = none)."""
NGRAM_GRID = [(a2, a3) for a2 in (0.0, 0.25, 0.5, 1.0, 2.0) for a3 in (0.0, 0.25, 0.5, 1.0)]
"""(a_2, a_3) weights of bigrams and trigrams beside unigrams (weight 1) that the grid scores."""

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


def token_bag_scorer(model: object, tokenizer: object, max_length: int, **settings: Any) -> Scorer:
    """Token bags (``TokenBag`` with ``settings``, no query cut-off) fitted on the split's targets
    and pool."""

    def score(targets: list[Example], pool: list[Example]) -> np.ndarray:
        bag = TokenBag.from_model(model, tokenizer, max_length, **settings)
        bags = bag.fit_tokens(bag.read_tokens([*targets, *pool]))  # one read of each example
        return bags[: len(targets)] @ bags[len(targets) :].T

    return score


def bag_cut_off(scores: np.ndarray, lengths: np.ndarray, cut_off: int) -> np.ndarray:
    """``(n_targets, n_pool)`` bag scores with the rows of targets reading more than
    ``cut_off`` tokens (``lengths``) zeroed, as ``TokenBag.encode_queries`` zeroes their bags
    (0 = no cut-off)."""
    return scores * (lengths <= cut_off if cut_off else np.ones(len(lengths), bool))[:, None]


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


def print_gains_by_length(gains: dict[str, list[np.ndarray]], lengths: np.ndarray) -> None:
    """Mean per-target LDS gain ×100 of each fused row over bm25_response, by the number of
    response tokens the LM reads of the target (all splits' targets)."""
    bins = ((1, 5), (5, 12), (12, 40), (40, None))
    names = [f"{lo}–{hi - 1}" if hi else f"{lo}+" for lo, hi in bins]
    print("\nGain over bm25_response by the target's response tokens (LDS ×100, all splits)\n")
    print("| row | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(bins))
    counts = [int(((lengths >= lo) & (lengths < (hi or 10**9))).sum()) for lo, hi in bins]
    print("| targets | " + " | ".join(str(c) for c in counts) + " |")
    for name, per_split in gains.items():
        gain = np.concatenate(per_split)
        cells = [
            f"{100 * gain[(lengths >= lo) & (lengths < (hi or 10**9))].mean():+.1f}"
            for lo, hi in bins
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def print_choice_grid(
    title: str,
    columns: Sequence[str],
    grid: dict[tuple[str, ...], list[np.ndarray]],
    n_validation: int,
    recipe: tuple[str, ...],
) -> None:
    """LDS ×100 per grid cell (per-split per-target arrays): the mean over the training splits
    and the held-out split's first ``n_validation`` targets (what chooses), and over its other
    targets (the test half, which only confirms); best choosing cells first, the ``recipe`` cell
    marked."""
    rows = []
    for cell, per_split in grid.items():
        *train, held_out = per_split
        choose = np.mean([t.mean() for t in train] + [held_out[:n_validation].mean()])
        rows.append((choose, held_out[n_validation:].mean(), cell))
    rows.sort(key=lambda row: -row[0])
    print(f"\n{title}: chosen on the training splits + validation\n")
    print("| " + " | ".join(columns) + " | training + validation | held-out test half |")
    print("|---" * (len(columns) + 2) + "|")
    for choose, test, cell in rows:
        mark = " (recipe)" if cell == recipe else ""
        print(f"| {' | '.join(cell)}{mark} | {100 * choose:.2f} | {100 * test:.2f} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini", choices=("tiny", "mini"))
    parser.add_argument("--root", default=None, help="storage root (default $AIRREP_STORAGE_ROOT)")
    parser.add_argument("--logra", action="store_true", help="add LoGra on θ₀ and its fusion")
    parser.add_argument("--base-steps", type=int, default=None, help="base LM warm-up budget")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    started = time.perf_counter()
    store = ArtifactStore(args.root or default_root_uri())
    p3_train, _ = import_p3_holdout(store)
    labels_config = LabelsConfig.preset(args.preset, **base_steps_override(args.base_steps))
    result = labels.generate_labels(store, p3_train, labels_config)
    splits = labels.load_split_labels(store, result.labels_key)
    examples = load_corpus(store, p3_train).examples
    model, tokenizer = load_causal_lm(
        store.local_dir(store.get(labels.BASE_STAGE, result.base_key)), "cpu"
    )
    config = EncoderTrainConfig.preset(args.preset)
    response = Bm25ResponseConfig.preset(args.preset)
    read, cut_off = response.lm_max_length, config.token_bag_max_query_tokens
    lexical = "bm25_response: the response tokens the LM reads"
    rows: dict[str, Scorer] = {
        "bm25, question+answer words (paper baseline)": bm25_scorer(Bm25Config()),
        "bm25, response words": bm25_scorer(Bm25Config(view="response")),
        "bm25, response words, stop-words kept": bm25_scorer(
            Bm25Config(view="response", stopwords="")
        ),
        "bm25, the whole response in target-LM tokens": bm25_scorer(
            response.replace(lm_max_length=0), tokenizer
        ),
        lexical: bm25_scorer(response, tokenizer),
        BIGRAMS: bm25_scorer(response.replace(ngram_weights=(0.0, 1.0)), tokenizer),
        TRIGRAMS: bm25_scorer(response.replace(ngram_weights=(0.0, 0.0, 1.0)), tokenizer),
        NGRAMS: bm25_scorer(config.lexical, tokenizer),
        "MiniLM cosine, question+answer": encoder_scorer("question_answer", config),
        "MiniLM cosine, response": encoder_scorer("response", config),
        BAG_PLAIN: token_bag_scorer(model, tokenizer, read, idf_weighted=False),
        BAG_IDF: token_bag_scorer(model, tokenizer, read),
    }
    if args.logra:
        rows["logra on θ₀"] = method_scorer("logra", model, tokenizer, args.preset)
    table: dict[str, list[float]] = {name: [] for name in [*rows, BAG]}  # BAG: cut BAG_IDF
    fusions = {  # name -> (lexical row, added row, its weight relative to the lexical row)
        "bm25_response + plain-mean bag: z(bag) + 8 · z(bm25)": (lexical, BAG_PLAIN, 1 / 8),
        "n-gram term + plain-mean bag: z(bag) + 8 · z(n-grams)": (NGRAMS, BAG_PLAIN, 1 / 8),
        "n-gram term + idf bag": (NGRAMS, BAG_IDF, 1 / 8),
        f"n-gram term + the recipe's bag (none past {cut_off} tokens)": (NGRAMS, BAG, 1 / 8),
    }
    if args.logra:
        fusions["bm25_response + 0.5 · logra (z-scored)"] = (lexical, "logra on θ₀", 0.5)
        fusions["n-gram term + 0.5 · logra (z-scored)"] = (NGRAMS, "logra on θ₀", 0.5)
    extra: dict[str, list[float]] = {name: [] for name in fusions}
    extra |= {"target-independent (other targets' mean label)": [], "mean pairwise ρ": []}
    gains: dict[str, list[np.ndarray]] = {name: [] for name in (NGRAMS, *fusions)}
    grid: dict[tuple[float, float], list[np.ndarray]] = {cell: [] for cell in NGRAM_GRID}
    cut_offs: dict[int, list[np.ndarray]] = {cell: [] for cell in CUT_OFF_GRID}
    read_lengths: list[int] = []
    for split in splits:
        pool_ids, membership = split_pool(split)
        pool = [examples[i] for i in pool_ids]
        targets = [examples[i] for i in split.target_ids]
        lengths = np.asarray(
            [len(read_token_ids(tokenizer, t.prompt, t.response, read, True)) for t in targets]
        )
        scores = {name: scorer(targets, pool) for name, scorer in rows.items()}
        scores[BAG] = bag_cut_off(scores[BAG_IDF], lengths, cut_off)
        for name in table:
            table[name].append(
                lds_of(sum_group_scores(scores[name], membership), split.losses).mean
            )
        alone = lds_of(sum_group_scores(scores[lexical], membership), split.losses)
        ngrams = lds_of(sum_group_scores(scores[NGRAMS], membership), split.losses)
        gains[NGRAMS].append(ngrams.per_target - alone.per_target)
        for name, (base, row, weight) in fusions.items():
            h = zscore_rows(scores[base]) + weight * zscore_rows(scores[row])
            fused = lds_of(sum_group_scores(h, membership), split.losses)
            extra[name].append(fused.mean)
            gains[name].append(fused.per_target - alone.per_target)
        for a2, a3 in NGRAM_GRID:
            h = zscore_rows(scores[lexical]) + a2 * zscore_rows(scores[BIGRAMS])
            h += a3 * zscore_rows(scores[TRIGRAMS])
            grid[a2, a3].append(lds_of(sum_group_scores(h, membership), split.losses).per_target)
        for cell in CUT_OFF_GRID:
            bag_scores = bag_cut_off(scores[BAG_IDF], lengths, cell)
            h = zscore_rows(scores[NGRAMS]) + zscore_rows(bag_scores) / 8
            cut_offs[cell].append(lds_of(sum_group_scores(h, membership), split.losses).per_target)
        read_lengths += lengths.tolist()
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
    print_gains_by_length(gains, np.asarray(read_lengths))
    print_choice_grid(
        "N-gram weights (unigram weight 1)",
        ["a_2 (bigrams)", "a_3 (trigrams)"],
        {(f"{a2:g}", f"{a3:g}"): v for (a2, a3), v in grid.items()},
        config.validation_max_targets,
        tuple(f"{a:g}" for a in LEXICAL_NGRAM_WEIGHTS[1:]),
    )
    print_choice_grid(
        "Token bag query cut-off: z(n-grams) + z(idf bag) / 8, no bag past the cut-off",
        ["cut-off (tokens; 0 = none)"],
        {(str(cell),): v for cell, v in cut_offs.items()},
        config.validation_max_targets,
        (str(cut_off),),
    )
    command = shlex.join([".venv/bin/python", "-m", "benchmarks.label_signal", *sys.argv[1:]])
    print(f"\nReproduce: `{command}` ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
