"""What each lever of the label-efficient recipe buys (DESIGN.md §2), and a label-budget curve.

Everything is measured on the ``mini`` labels (P3 without its held-out templates; the last split
is held out) and, for the report, on the ``mini`` LDS ground truths of the evaluation sets:

- **validation**: the held-out split's first ``validation_max_targets`` targets. It picks every
  setting: the best step of each run and the weight of the lexical term of the hybrid score;
- **held-out test**: the same split's other targets, which selected nothing;
- **evaluation sets** (p3, dolly, gsm8k, hh_rlhf_harmless): read for the report only.

The backbone is frozen in every row (the ``efficient`` recipe), so each example is encoded once
per text view (features cached in the work folder) and a row trains in seconds. Rows:

- ablation: the untrained backbone (identity start, step 0) on the paper's question-and-answer
  text and on the response view, a random start (the paper's initialisation), the identity start
  trained on labels, then teacher pre-training (BM25 over target-LM response tokens, LoGra on θ₀,
  or both fused) before the labels, teacher pre-training alone, and the default recipe with the
  paper's text view, with the token bag on long queries too (no cut-off) or as a plain mean (no
  idf), with unigram BM25 instead of the n-gram term, without the token bag (also
  with unigrams), then also with BM25 over the whole response instead of the tokens the LM
  reads, or with the paper's BM25 (words of the question-and-answer text) as the hybrid's
  lexical term;
- label budget: the identity start and the teacher start trained on 8, 16 or 32 subsets of each
  training split (24 / 48 / 96 fine-tuned subsets), and on none;
- every row's **hybrid** column adds λ · BM25 (the row's ``lexical`` settings) to the encoder's
  score (both z-scored per query over the pool, then summed over the subset), and the token bag
  with weight w to the embedding (rows whose ``token_bag_weights`` is not empty), with λ and w
  chosen on validation; the BM25 variants alone are reference rows.

    .venv/bin/python -m benchmarks.label_efficiency --preset mini
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from airrep_core.attribution.hybrid import hybrid_group_scores
from airrep_core.config.baselines import Bm25Config, Bm25ResponseConfig
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.data.examples import TEXT_VIEWS, Example
from airrep_core.data.labels import SplitLabels
from airrep_core.encoder.head_training import (
    FeatureSplit,
    TeacherBatches,
    choose_hybrid_weights,
    feature_splits,
    pooled_features,
    split_example_ids,
    split_pool,
    train_projection,
)
from airrep_core.encoder.model import AirRepEncoder, init_projection
from airrep_core.encoder.scoring import group_scores
from airrep_core.encoder.teacher import TeacherScores, fuse_scores, teacher_ids
from airrep_core.encoder.token_bag import TokenBag
from airrep_core.evaluation.lds_eval import lds_of
from airrep_core.lm.loading import load_causal_lm
from airrep_core.methods.interface import sum_group_scores
from airrep_core.methods.lexical import Bm25Attributor
from storage.artifacts import ArtifactStore
from tasks import labels
from tasks.corpus import load_corpus
from tasks.encoder import work_dir
from tasks.ground_truth import (
    build_ground_truth,
    import_p3_holdout,
    load_ground_truth,
    resolve_eval_dataset,
)
from tasks.teacher import build_teacher, load_teacher

log = logging.getLogger("benchmarks.label_efficiency")


@dataclass(frozen=True)
class Scored:
    """A set's targets scored against its subsets (``SplitLabels`` layout) with BM25 ready."""

    name: str
    split: FeatureSplit
    pool_rows: np.ndarray  # (n_pool,) feature rows of the set's pool
    membership: list[np.ndarray]  # each subset's indices into the pool
    terms: dict[str, Bm25Config]  # name -> settings (``lexical_terms``)
    lexical: dict[str, np.ndarray]  # name -> (n_targets, n_pool) BM25 scores
    losses: np.ndarray
    lexical_lds: dict[str, tuple[float, float]]  # name -> BM25 alone (mean, stderr)

    def hybrid(
        self, queries: np.ndarray, documents: np.ndarray, lexical: Bm25Config, weight: float
    ) -> np.ndarray:
        """``(n_targets, n_subsets)`` hybrid group scores with the ``lexical`` BM25 term; targets
        read ``queries`` rows, the pool ``documents`` rows."""
        dots = queries[self.split.targets] @ documents[self.pool_rows].T
        names = [n for n, known in self.terms.items() if known.to_dict() == lexical.to_dict()]
        if not names:
            raise ValueError(f"BM25 settings {lexical} are none of {list(self.terms)}")
        return hybrid_group_scores(dots, self.lexical[names[0]], self.membership, weight)


def lexical_terms(preset: str) -> dict[str, Bm25Config]:
    """The hybrid's lexical terms compared: the paper's BM25 baseline, BM25 over the response
    tokens the target LM reads (``bm25_response``), over the whole response in target-LM tokens,
    and the recipe's default at ``preset``: unigrams, bigrams and trigrams of the tokens the LM
    reads; each also a reference row (the lexical term alone)."""
    response = Bm25ResponseConfig.preset(preset)
    return {
        "bm25 (paper)": Bm25Config(),
        "bm25_response": response,
        "bm25_response, whole response": response.replace(lm_max_length=0),
        "n-gram term (the recipe's)": EncoderTrainConfig.preset(preset).lexical,
    }


@dataclass(frozen=True)
class Row:
    """One encoder variant: config overrides, teacher methods, subsets per training split."""

    name: str
    lever: str
    overrides: Mapping[str, Any]
    teacher: tuple[str, ...] = ()
    subsets: int | None = None
    bag: str = "recipe"  # a key of BAG_VARIANTS


BAG_VARIANTS = {
    "recipe": {},
    "no query cut-off": {"max_query_tokens": 0},
    "plain mean": {"idf_weighted": False},
}
"""Token bags compared (``TokenBag`` settings over the recipe's: idf-weighted, queries past
``token_bag_max_query_tokens`` without a bag)."""

PAPER_TEXT = {"text_view": "question_answer"}
PAPER_BM25 = {"lexical": Bm25Config()}
TEACHER = ("bm25_response", "logra")


def ablation_rows(preset: str) -> list[Row]:
    """Each lever on and off (the default recipe is the 'identity + teacher + labels' row, with
    the idf-weighted token bag and BM25 over the n-grams of the response tokens the LM reads)."""
    no_bag = {"token_bag_weights": ()}
    terms = lexical_terms(preset)
    whole, unigrams = terms["bm25_response, whole response"], terms["bm25_response"]
    return [
        Row(
            "backbone, paper text (identity start, step 0)", "view off", {"steps": 0, **PAPER_TEXT}
        ),
        Row("backbone, response view (step 0)", "view", {"steps": 0}),
        Row(
            "random start + labels (paper init)",
            "1 off",
            {"projection_init": "random", "normalize": False},
        ),
        Row("identity start + labels", "1", {}),
        Row("teacher bm25_response+logra, no labels", "2 alone", {"steps": 0}, TEACHER),
        Row("identity + teacher bm25_response + labels", "2 (bm25r)", {}, ("bm25_response",)),
        Row("identity + teacher logra + labels", "2 (logra)", {}, ("logra",)),
        Row("identity + teacher bm25_response+logra + labels", "1+2", {}, TEACHER),
        Row("1+2, paper text view", "view off", PAPER_TEXT, TEACHER),
        Row(
            "1+2, unigram BM25 in the hybrid (no n-grams)",
            "n-grams off",
            {"lexical": unigrams},
            TEACHER,
        ),
        Row(
            "1+2, token bag on long queries too",
            "bag cut-off off",
            {},
            TEACHER,
            bag="no query cut-off",
        ),
        Row("1+2, plain-mean token bag (no idf)", "bag idf off", {}, TEACHER, bag="plain mean"),
        Row("1+2, no token bag", "bag off", no_bag, TEACHER),
        Row(
            "1+2, no token bag, unigram BM25",
            "bag, n-grams off",
            {**no_bag, "lexical": unigrams},
            TEACHER,
        ),
        Row(
            "1+2, no token bag, BM25 over the whole response",
            "read tokens off",
            {**no_bag, "lexical": whole},
            TEACHER,
        ),
        Row("1+2, paper BM25 in the hybrid", "lexical off", {**no_bag, **PAPER_BM25}, TEACHER),
    ]


def budget_rows(budgets: Sequence[int]) -> list[Row]:
    """The label-budget curve: subsets per training split, with and without the teacher."""
    rows = []
    for teacher in ((), TEACHER):
        tag = "teacher" if teacher else "no teacher"
        rows.append(Row(f"budget 0 ({tag})", "budget", {"steps": 0}, teacher, 0))
        rows += [Row(f"budget {b} ({tag})", "budget", {}, teacher, b) for b in budgets]
    return rows


def cached_features(
    encoder: AirRepEncoder, examples: Mapping[str, Example], ids: list[str], config
) -> np.ndarray:
    """``pooled_features`` of ``ids``, cached in the work folder by ids and encoder settings."""
    digest = hashlib.sha256(
        json.dumps(
            [
                ids,
                config.encoder,
                config.max_length,
                config.max_prompt_words,
                config.normalize,
                config.text_view,
            ]
        ).encode()
    ).hexdigest()
    path = work_dir("benchmark-features", digest[:24]) / "features.npy"
    if path.is_file():
        return np.load(path)
    features = pooled_features(encoder, examples, ids, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return features


@dataclass
class Context:
    """Everything the rows share: cached features, the label and evaluation sets, the teacher."""

    config: EncoderTrainConfig
    features: dict[str, np.ndarray]  # text view -> (n_rows, d) frozen backbone features
    row_of: dict[str, int]
    train_splits: list[FeatureSplit]
    validation: FeatureSplit
    sets: dict[str, Scored]
    teacher: dict[str, TeacherScores]
    held: SplitLabels
    examples: dict[str, Example]
    tokenizer: Any  # the target LM's, for BM25 over its tokens
    bags: dict[str, tuple[np.ndarray, np.ndarray]]  # BAG_VARIANTS key -> (documents, queries)


def prepare(args: argparse.Namespace) -> Context:
    """Labels, teacher, ground truths (all cached artifacts) and the frozen backbone features."""
    store = ArtifactStore(args.root)
    torch.manual_seed(0)
    p3_train, _ = import_p3_holdout(store)
    labels_result = labels.generate_labels(store, p3_train, LabelsConfig.preset(args.preset))
    labels_ref = store.get(labels.LABELS_STAGE, labels_result.labels_key)
    base_ref = store.get(labels.BASE_STAGE, labels_result.base_key)
    stage = EncoderStageConfig.preset(args.preset)
    config: EncoderTrainConfig = stage.train.replace(
        recipe="efficient", projection_init="identity", normalize=True
    )
    teacher_ref = build_teacher(
        store,
        p3_train.ref,
        labels_ref,
        base_ref,
        stage.teacher.replace(methods=("bm25", *TEACHER)),
        stage.validation_splits,
    )
    per_method = {m: load_teacher(store, teacher_ref, m) for m in ("bm25", *TEACHER)}
    base_model, tokenizer = load_causal_lm(store.local_dir(base_ref), "cpu")
    corpus = load_corpus(store, p3_train)
    splits = labels.load_split_labels(store, labels_ref)
    train_splits, held = splits[: -stage.validation_splits], splits[-1]

    eval_config = EvaluationConfig.preset(args.preset)
    truths = {}
    for name in args.eval_sets:
        ref = build_ground_truth(
            store, name, resolve_eval_dataset(store, name), base_ref, eval_config
        )
        truths[name] = load_ground_truth(store, ref)

    examples: dict[str, Example] = dict(corpus.examples)
    for truth in truths.values():
        examples.update(truth.corpus.examples)
    ids = split_example_ids([*splits, *(t.labels for t in truths.values())])
    ids = list(dict.fromkeys([*ids, *teacher_ids(per_method["bm25"])]))
    features = {}
    for view in TEXT_VIEWS:
        view_config = config.replace(text_view=view)
        encoder = AirRepEncoder.from_backbone(
            config.encoder,
            max_length=config.max_length,
            projection_init="identity",
            normalize=True,
            max_prompt_words=config.max_prompt_words,
            text_view=view,
        )
        started = time.perf_counter()
        features[view] = cached_features(encoder, examples, ids, view_config)
        log.info(
            "%s features of %d examples: %.0f s", view, len(ids), time.perf_counter() - started
        )
    row_of = {i: k for k, i in enumerate(ids)}
    terms = lexical_terms(args.preset)

    n_val = config.validation_max_targets
    (held_fs,) = feature_splits([held], row_of)
    validation = _targets(held_fs, slice(0, n_val))

    def scored(name: str, fs: FeatureSplit, split: SplitLabels, which: slice) -> Scored:
        return _scored(name, fs, split, which, examples, row_of, tokenizer, terms)

    sets = {
        "validation": scored("validation", validation, held, slice(0, n_val)),
        "held-out test": scored(
            "held-out test", _targets(held_fs, slice(n_val, None)), held, slice(n_val, None)
        ),
    }
    for name, truth in truths.items():
        (fs,) = feature_splits([truth.labels], row_of)
        sets[name] = scored(name, fs, truth.labels, slice(None))

    train_fs = feature_splits(train_splits, row_of)
    bags = {}  # (n_rows, d_lm) float32 at weight 1, every row: label corpus and evaluation sets
    reader = TokenBag.from_model(base_model, tokenizer, config.lexical.lm_max_length)
    corpus_tokens = reader.read_tokens([examples[i] for i in split_example_ids(splits)])
    row_tokens = reader.read_tokens([examples[i] for i in ids])
    for variant, settings in BAG_VARIANTS.items():
        bag = TokenBag(
            tokenizer,
            reader.table,
            reader.max_length,
            **{"max_query_tokens": config.token_bag_max_query_tokens, **settings},
        )
        bag.fit_tokens(corpus_tokens)  # the label corpus, as training
        bags[variant] = (bag.encode_tokens(row_tokens), bag.encode_tokens(row_tokens, queries=True))
    return Context(
        config,
        features,
        row_of,
        train_fs,
        validation,
        sets,
        per_method,
        held,
        examples,
        tokenizer,
        bags,
    )


def run(args: argparse.Namespace) -> None:
    ctx = prepare(args)
    rows = ablation_rows(args.preset) + budget_rows(args.budgets)
    results = []
    for row in rows:
        overrides = {"teacher_steps": args.teacher_steps if row.teacher else 0, **row.overrides}
        results.append(evaluate_row(ctx, row, overrides))
        print(json.dumps(results[-1]), flush=True)
    command = shlex.join([".venv/bin/python", "-m", "benchmarks.label_efficiency", *sys.argv[1:]])
    markdown = render_tables(results, ctx.sets, command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_efficiency.md").write_text(markdown)
    (out / "label_efficiency.json").write_text(json.dumps(results, indent=1))
    plot_budget(results, out / "label_budget.png")
    print(markdown)
    print(f"Written: {out}/label_efficiency.md, label_efficiency.json, label_budget.png")


def evaluate_row(ctx: Context, row: Row, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Train one row's projection (best step on validation), choose its lexical weight on
    validation, and score every set: LDS (mean, standard error) plain and hybrid."""
    run_config = ctx.config.replace(**overrides)
    features, row_of, train_fs, validation = (
        ctx.features[run_config.text_view], ctx.row_of, ctx.train_splits, ctx.validation
    )  # fmt: skip
    x = torch.from_numpy(features)
    fused = (
        TeacherScores(
            ctx.teacher[row.teacher[0]].target_ids,
            ctx.teacher[row.teacher[0]].candidate_ids,
            fuse_scores({m: ctx.teacher[m].scores for m in row.teacher}),
        )
        if row.teacher and run_config.teacher_steps
        else None
    )
    subsets = (
        train_fs if row.subsets is None else [_first_subsets(s, row.subsets) for s in train_fs]
    )
    if row.subsets == 0:
        run_config = run_config.replace(steps=0)
    projection = torch.nn.Linear(features.shape[1], features.shape[1])
    init_projection(projection, run_config.projection_init, run_config.seed)
    t0 = time.perf_counter()
    result = train_projection(
        projection,
        features,
        subsets,
        run_config,
        validation_splits=[validation],
        teacher=TeacherBatches(fused, row_of) if fused is not None else None,
    )
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        embeddings = projection(x).numpy()
    record = {
        "row": row.name,
        "lever": row.lever,
        "fine_tuned_subsets": sum(len(s.membership) for s in subsets) if run_config.steps else 0,
        "best_step": result.best_step,
        "train_seconds": round(seconds, 1),
    }
    bags = ctx.bags[row.bag] if run_config.token_bag_weights else None
    choice = choose_hybrid_weights(
        embeddings, bags, list(row_of), [ctx.held], ctx.examples, run_config, ctx.tokenizer
    )
    weight = choice["lexical_weight"]
    record["lexical_weight"] = weight
    record["token_bag_weight"] = choice["token_bag_weight"]
    queries = documents = embeddings
    if bags is not None and choice["token_bag_weight"] > 0:
        scale = np.float32(np.sqrt(choice["token_bag_weight"]))
        documents = np.concatenate([embeddings, scale * bags[0]], axis=1)
        queries = np.concatenate([embeddings, scale * bags[1]], axis=1)
    for name, scored in ctx.sets.items():
        plain = group_scores(
            queries[scored.split.targets],
            documents,
            scored.split.membership,
            scored.split.mask,
            run_config.pooling,
        )
        res = lds_of(plain, scored.losses)
        record[name] = (res.mean, res.stderr)
        if weight > 0:
            res = lds_of(
                scored.hybrid(queries, documents, run_config.lexical, weight), scored.losses
            )
        record[f"{name} hybrid"] = (res.mean, res.stderr)
    return record


def _targets(split: FeatureSplit, which: slice) -> FeatureSplit:
    return FeatureSplit(
        split.split_id, split.targets[which], split.membership, split.mask, split.losses[:, which]
    )


def _first_subsets(split: FeatureSplit, n: int) -> FeatureSplit:
    return FeatureSplit(
        split.split_id, split.targets, split.membership[:n], split.mask[:n], split.losses[:n]
    )


def _scored(
    name: str,
    fs: FeatureSplit,
    labels_split: SplitLabels,
    which: slice,
    examples: Mapping[str, Example],
    row_of: Mapping[str, int],
    tokenizer: Any,
    terms: Mapping[str, Bm25Config],
) -> Scored:
    """A set's features and losses, and each of the lexical ``terms`` fitted on the split's
    pool (as the encoder's hybrid uses it) with its LDS alone."""
    pool, membership = split_pool(labels_split)
    lexical, alone = {}, {}
    for term, settings in terms.items():
        bm25 = Bm25Attributor(settings, tokenizer=tokenizer)
        bm25.fit([examples[i] for i in pool])
        lexical[term] = bm25.score([examples[i] for i in labels_split.target_ids])[which]
        result = lds_of(sum_group_scores(lexical[term], membership), fs.losses)
        alone[term] = (result.mean, result.stderr)
    pool_rows = np.asarray([row_of[m] for m in pool], dtype=np.int64)
    return Scored(name, fs, pool_rows, membership, dict(terms), lexical, fs.losses, alone)


def render_tables(results: list[dict], sets: Mapping[str, Scored], command: str) -> str:
    """The report's Markdown: the ablation and the budget curve, plain and hybrid scores, with
    both BM25 terms alone on the same targets for reference."""
    names = list(sets)
    eval_names = [n for n in names if n not in ("validation", "held-out test")]

    def cell(value) -> str:
        return f"{100 * value[0]:.1f} ± {100 * value[1]:.1f}"

    def average(values) -> str:
        if not values:
            return "—"
        mean = np.mean([v[0] for v in values])
        se = np.sqrt(np.sum([v[1] ** 2 for v in values])) / len(values)
        return f"{100 * mean:.1f} ± {100 * se:.1f}"

    lines = [
        "# AirRep's label-efficient recipe: levers and label budget",
        "",
        "LDS x100 (mean ± standard error over targets). Validation picked every row's best step "
        "and its hybrid weight λ; the held-out test and the evaluation sets selected nothing.",
        "Eval average: mean over the evaluation sets ± √Σse²/n.",
    ]
    for suffix, title in (
        ("", "encoder score"),
        (" hybrid", "hybrid score (encoder ⊕ √w·bag, + λ·BM25)"),
    ):
        lines += ["", f"## LDS x100, {title}", ""]
        header = [
            "row",
            "lever",
            "best step",
            *(["λ / w"] if suffix else []),
            *names,
            "eval average",
        ]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in results:
            extra = [f"{r['lexical_weight']:g} / {r['token_bag_weight']:g}"] if suffix else []
            cells = [cell(r[f"{n}{suffix}"]) for n in names]
            avg = average([r[f"{n}{suffix}"] for n in eval_names])
            lines.append(
                "| "
                + " | ".join([r["row"], r["lever"], str(r["best_step"]), *extra, *cells, avg])
                + " |"
            )
        extra = ["—"] if suffix else []
        for term in next(iter(sets.values())).terms:
            alone = [sets[n].lexical_lds[term] for n in names]
            evals = [sets[n].lexical_lds[term] for n in eval_names]
            lines.append(
                "| " + " | ".join([f"{term} alone (reference)", "—", "—", *extra,
                                   *(cell(v) for v in alone), average(evals)]) + " |"
            )  # fmt: skip
    lines += ["", f"Reproduce: `{command}`", ""]
    return "\n".join(lines)


def plot_budget(results: list[dict], path: Path, set_name: str = "held-out test") -> None:
    """The label-budget curve (LDS against fine-tuned subsets), with and without the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for tag, marker in (("no teacher", "o"), ("teacher", "s")):
        rows = [r for r in results if r["lever"] == "budget" and r["row"].endswith(f"({tag})")]
        for suffix, style in (("", "-"), (" hybrid", "--")):
            x = [r["fine_tuned_subsets"] for r in rows]
            y = [100 * r[f"{set_name}{suffix}"][0] for r in rows]
            e = [100 * r[f"{set_name}{suffix}"][1] for r in rows]
            label = f"{tag}{', hybrid' if suffix else ''}"
            axis.errorbar(x, y, yerr=e, marker=marker, linestyle=style, capsize=3, label=label)
    axis.set_xlabel("fine-tuned subsets the encoder trains on")
    axis.set_ylabel(f"LDS x100 ({set_name})")
    axis.set_title("AirRep: label budget")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini", choices=("tiny", "mini"))
    parser.add_argument("--root", default=None, help="storage root (default $AIRREP_STORAGE_ROOT)")
    parser.add_argument(
        "--eval-sets", nargs="*", default=["p3", "dolly", "gsm8k", "hh_rlhf_harmless"]
    )
    parser.add_argument("--budgets", nargs="*", type=int, default=[8, 16, 32])
    parser.add_argument("--teacher-steps", type=int, default=None)
    parser.add_argument(
        "--out", default="artifacts/label-efficiency", help="folder of the Markdown, JSON and PNG"
    )
    args = parser.parse_args(argv)
    if args.teacher_steps is None:
        args.teacher_steps = EncoderStageConfig.preset(args.preset).train.teacher_steps or 200
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run(args)


if __name__ == "__main__":
    main()
