"""Does training help? AirRep trained on P3 labels against the untrained encoder, by LDS on
held-out label splits (issue: "AirRep encoder", done-when).

Generates (or reuses) a label set from the P3 sample corpus with the label-generation code, trains
the encoder on all splits but the last ``--validation-splits`` (stored as an ``encoder``
artifact; resumable), then scores the held-out splits with:

- AirRep trained (attention pooling) and its mean-pooling ablation,
- the same backbone with a fresh random projection (untrained AirRep),
- the plain mean-pooled backbone (the off-the-shelf encoder row of the paper),

and prints LDS ×100, ranking accuracy and the training curve.

    .venv/bin/python -m benchmarks.encoder_lds            # the defaults below (about an hour)
    .venv/bin/python -m benchmarks.encoder_lds --preset mini

``--preset mini`` uses exactly the ``mini`` labels and encoder of the pipeline and of
``airrep bench lds --preset mini`` (labels on ``flan_p3_train``; reused from the store when that
run made them), so that only the held-out scoring runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time

from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.training import evaluate_encoder
from storage.artifacts import ArtifactStore
from storage.datasets import import_dataset
from storage.root import default_root_uri
from storage.sample_data import sample_dataset
from tasks.corpus import load_corpus
from tasks.encoder import HISTORY_FILE, load_encoder, train_encoder_artifact
from tasks.ground_truth import import_p3_holdout
from tasks.labels import generate_labels, load_split_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="storage root (default ./artifacts)")
    parser.add_argument(
        "--preset",
        choices=("custom", "mini"),
        default="custom",
        help="mini: the pipeline's mini labels and encoder (ignores the size options below)",
    )
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--subsets", type=int, default=24)
    parser.add_argument("--subset-size", type=int, default=50)
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--warmup-steps", type=int, default=150, help="base LM warm-up budget")
    parser.add_argument("--encoder-steps", type=int, default=30)
    parser.add_argument("--validation-splits", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    store = ArtifactStore(args.root or default_root_uri())
    if args.preset == "mini":
        p3, _ = import_p3_holdout(store)
        labels_config = LabelsConfig.preset("mini")
        stage = EncoderStageConfig.preset("mini", train={"recipe": "paper"})
    else:
        sample = sample_dataset("flan_p3")
        p3 = import_dataset(store, sample.paths(), sample.name, skip_invalid=sample.skip_invalid)
        labels_config = LabelsConfig.preset(
            "mini",
            sampling={
                "n_splits": args.splits,
                "n_subsets": args.subsets,
                "subset_size": args.subset_size,
                "n_targets": args.targets,
                "pool_size": args.pool,
            },
            base={"max_steps": args.warmup_steps},
        )
        train = EncoderTrainConfig.preset("mini", recipe="paper", steps=args.encoder_steps)
        stage = EncoderStageConfig(train=train, validation_splits=args.validation_splits)
    train_config = stage.train
    started = time.perf_counter()
    labels_ref = generate_labels(
        store,
        p3,
        labels_config,
        progress=lambda done, total, o: print(f"unit {done}/{total}", flush=True),
    )
    labels_seconds = time.perf_counter() - started
    started = time.perf_counter()
    labels_artifact = store.get("labels", labels_ref.labels_key)
    encoder_ref = train_encoder_artifact(store, p3.ref, labels_artifact, stage)
    train_seconds = time.perf_counter() - started

    split_labels = load_split_labels(store, labels_ref)
    held_out = split_labels[len(split_labels) - stage.validation_splits :]
    examples = load_corpus(store, p3).examples
    trained = load_encoder(store, encoder_ref)
    candidates = {
        "AirRep trained (attention)": (trained, "attention"),
        "AirRep trained (mean pooling)": (trained, "mean"),
        "untrained: random projection": (
            AirRepEncoder.from_backbone(train_config.encoder, max_length=train_config.max_length),
            "attention",
        ),
        "untrained: plain backbone": (
            AirRepEncoder.from_backbone(
                train_config.encoder, projection=False, max_length=train_config.max_length
            ),
            "attention",
        ),
    }
    rows = []
    for name, (encoder, pooling) in candidates.items():
        metrics = evaluate_encoder(
            encoder, held_out, examples, dataclasses.replace(train_config, pooling=pooling)
        )
        rows.append((name, metrics))

    history = json.loads(store.read_bytes(encoder_ref, HISTORY_FILE))
    print(
        f"\nlabels {labels_ref.labels_key[:12]}: {labels_ref.n_units} units "
        f"({labels_ref.units_computed} computed) in {labels_seconds:.0f}s; "
        f"encoder {encoder_ref.key[:12]} trained in {train_seconds:.0f}s"
    )
    print(
        f"held-out: {len(held_out)} split(s) x {len(held_out[0].subset_ids)} subsets x "
        f"{len(held_out[0].target_ids)} targets\n"
    )
    print("| encoder | LDS x100 | ranking accuracy | ranking loss |")
    print("|---|---|---|---|")
    for name, m in rows:
        print(
            f"| {name} | {100 * m['lds']:.1f} | {m['ranking_accuracy']:.3f} | {m['ranking_loss']:.3f} |"
        )
    print("\ntraining curve (validation on the held-out splits):")
    print("| step | train loss | val LDS x100 | val ranking accuracy |")
    print("|---|---|---|---|")
    for r in history:
        if "validation" in r:
            v = r["validation"]
            print(
                f"| {r['step']} | {r['loss']:.4f} | {100 * v['lds']:.1f} | {v['ranking_accuracy']:.3f} |"
            )
    options = {"preset": "mini"} if args.preset == "mini" else vars(args)
    print(
        "\nreproduce: .venv/bin/python -m benchmarks.encoder_lds "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None)
    )


if __name__ == "__main__":
    main()
