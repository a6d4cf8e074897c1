"""How AirRep's quality grows with its training labels and its training recipe.

Each variant is a label set ``SPLITSxSUBSETS`` of the ``mini`` label config (labels on
``flan_p3_train``; units are keyed by content, so a larger set reuses the units of a smaller one
with the same first splits) and an encoder trained on all its splits but the last with the
``mini`` recipe (``--recipe`` overrides it, e.g. ``steps=16,targets_per_step=100``). It prints:

- **held-out test LDS**: the last split of the largest variant, which no variant trains on, and
  only its targets after the first ``validation_max_targets`` (the ones a variant with that many
  splits uses for best-checkpoint selection), so no number here was used to select anything;
- **evaluation-set LDS** (``--eval-sets``): the ``mini`` LDS ground truth of ``airrep bench lds
  --preset mini`` (built when absent, which costs its fine-tunes), scored with AirRep's rule and the
  evaluation's AirRep settings (the held-out test uses the same).

Every label set, encoder and score is a cached artifact, so a rerun only prints.

    .venv/bin/python -m benchmarks.label_volume --variants 4x32 8x16 8x32
    .venv/bin/python -m benchmarks.label_volume --variants 4x32 --recipe steps=16,targets_per_step=100,subsets_per_step=32,validate_every=4,checkpoint_every=4,warmup_steps=2
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from typing import Any

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.config.labels import LabelsConfig
from airrep_core.config.pipeline import EncoderStageConfig
from airrep_core.data.labels import SplitLabels
from airrep_core.evaluation.lds_eval import LdsResult, lds_of, score_subsets
from airrep_core.methods import Attributor
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.root import default_root_uri
from tasks import labels
from tasks.corpus import load_corpus
from tasks.encoder import HISTORY_FILE, train_encoder_artifact
from tasks.ground_truth import build_ground_truth, import_p3_holdout, resolve_eval_dataset
from tasks.method_scores import MethodFactory, score_method


@dataclass(frozen=True)
class Variant:
    """One row: a label set's shape and the encoder trained on it."""

    n_splits: int
    n_subsets: int

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``"8x32"`` → 8 splits of 32 subsets."""
        try:
            splits, subsets = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"variant {text!r}: expected SPLITSxSUBSETS") from None
        if splits < 2 or subsets < 2:
            raise argparse.ArgumentTypeError(f"variant {text!r}: need >= 2 splits and subsets")
        return cls(splits, subsets)

    @property
    def name(self) -> str:
        """``"8x32"``."""
        return f"{self.n_splits}x{self.n_subsets}"


def parse_recipe(text: str) -> dict[str, Any]:
    """``"steps=16,learning_rate=1e-4"`` → overrides of ``EncoderTrainConfig`` (JSON values)."""
    overrides: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"recipe item {item!r}: expected NAME=VALUE")
        try:
            overrides[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name.strip()] = value
    return overrides


def held_out_test_lds(
    airrep: Attributor, split: SplitLabels, examples: dict, first_target: int
) -> LdsResult:
    """LDS of ``airrep`` on ``split``'s targets from ``first_target`` on."""
    pool_ids = sorted({member for subset in split.subset_members for member in subset})
    result = score_subsets(
        airrep,
        [examples[i] for i in pool_ids],
        [examples[i] for i in split.target_ids[first_target:]],
        split.subset_members,
    )
    return lds_of(result.group_scores, split.losses[:, first_target:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="storage root (default ./artifacts)")
    parser.add_argument(
        "--variants", nargs="+", type=Variant.parse, default=[Variant(4, 32), Variant(8, 32)]
    )
    parser.add_argument("--recipe", type=parse_recipe, default={}, help="encoder overrides")
    parser.add_argument(
        "--eval-sets", nargs="*", default=None, help="default: the mini benchmark's sets"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    store = ArtifactStore(args.root or default_root_uri())
    p3_train, _ = import_p3_holdout(store)
    # The paper recipe (the study that led to the label-efficient one, benchmarks.label_efficiency).
    stage = EncoderStageConfig.preset("mini", train={"recipe": "paper", **args.recipe})
    evaluation = EvaluationConfig.preset("mini")
    trained: dict[Variant, tuple[labels.LabelsRef, ArtifactRef]] = {}
    for variant in args.variants:
        config = LabelsConfig.preset(
            "mini", sampling={"n_splits": variant.n_splits, "n_subsets": variant.n_subsets}
        )
        labels_ref = labels.generate_labels(store, p3_train, config)
        encoder_ref = train_encoder_artifact(
            store, p3_train.ref, store.get(labels.LABELS_STAGE, labels_ref.labels_key), stage
        )
        trained[variant] = (labels_ref, encoder_ref)

    largest = max(args.variants, key=lambda v: (v.n_splits, v.n_subsets))
    test_split = labels.load_split_labels(store, trained[largest][0].labels_key)[-1]
    first_target = stage.train.validation_max_targets
    examples = load_corpus(store, p3_train).examples
    base_ref = store.get(labels.BASE_STAGE, trained[largest][0].base_key)
    truths = {
        name: build_ground_truth(
            store, name, resolve_eval_dataset(store, name), base_ref, evaluation
        )
        for name in (evaluation.eval_sets if args.eval_sets is None else args.eval_sets)
    }

    header = ["variant", "label units", "encoder", "best step", "held-out test", *truths, "avg"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for variant, (labels_ref, encoder_ref) in trained.items():
        factory = MethodFactory(store, evaluation, encoder_ref)
        airrep = factory.build("airrep", base_ref.key)
        test = held_out_test_lds(airrep, test_split, examples, first_target)
        sets = [
            score_method(store, "airrep", ref, factory).metadata["lds"] for ref in truths.values()
        ]
        cells = [
            variant.name,
            str(labels_ref.n_units),
            encoder_ref.key[:12],
            str(encoder_ref.metadata["best_step"]),
            f"{100 * test.mean:.1f} ± {100 * test.stderr:.1f}",
            *(f"{100 * value:.1f}" for value in sets),
            f"{100 * sum(sets) / len(sets):.1f}" if sets else "",
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\nheld-out test: split {test_split.split_id} of {largest.name}, targets "
        f"{first_target}..{len(test_split.target_ids) - 1}, {len(test_split.subset_ids)} subsets; "
        f"recipe: {json.dumps(args.recipe) if args.recipe else 'mini'}"
    )
    print("\ntraining curves (validation LDS x100 by step):")
    for variant, (_, encoder_ref) in trained.items():
        history = json.loads(store.read_bytes(encoder_ref, HISTORY_FILE))
        curve = [
            f"{r['step']}: {100 * r['validation']['lds']:.1f}" for r in history if "validation" in r
        ]
        print(f"- {variant.name}: " + ", ".join(curve))
    print("\nreproduce: .venv/bin/python -m benchmarks.label_volume " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
