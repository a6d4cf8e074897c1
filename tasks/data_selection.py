"""Data selection over the artifact store (DESIGN.md §3): does a method's choice of training
data lower the target task's loss more than a random choice?

Stage and key (``content_key(stage, config, inputs)``):

- ``data-selection``: one selection (a method's N, taken round-robin over the target examples' rankings
  as ``airrep select`` ships them, or N random) for the target task, its
  fine-tune (a label unit) and the target loss. The candidates are a seeded draw from the pool
  sets' train pools (never a test example); inputs: the merged corpus, the base LM and what the
  method reads.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.data.examples import Example
from airrep_core.data.sampling import Split
from airrep_core.evaluation.selection import random_selection, shipped_selection
from airrep_core.runtime import resolved
from storage.artifacts import ArtifactRef, ArtifactStore, content_key
from storage.tables import read_table
from tasks import labels
from tasks.caching import store_task
from tasks.corpus import Corpus, load_corpus
from tasks.ground_truth import (
    pool_and_test,
    resolve_eval_dataset,
)
from tasks.method_scores import (
    MethodFactory,
    factory_step,
)
from tasks.references import StepRef

SELECTION_STAGE = "data-selection"

log = logging.getLogger("airrep.evaluation")


def merged_corpus(corpora: Sequence[Corpus]) -> Corpus:
    """One corpus over several datasets; ``ValueError`` when an id names different content."""
    examples: dict[str, Example] = {}
    hashes: dict[str, str] = {}
    for corpus in corpora:
        for example_id, example in corpus.examples.items():
            digest = corpus.content_hashes[example_id]
            if hashes.setdefault(example_id, digest) != digest:
                raise ValueError(f"example id {example_id!r} names different content in two sets")
            examples[example_id] = example
    key = hashlib.sha256("+".join(c.key for c in corpora).encode()).hexdigest()
    return Corpus(key, examples, hashes)


def selection_candidates(
    store: ArtifactStore, config: EvaluationConfig
) -> tuple[Corpus, list[str], list[str]]:
    """``(corpus, candidate_ids, target_ids)``: the target set's test examples and a seeded
    draw of ``selection_pool_per_set`` from each pool set's train pool (never a test example)."""
    corpora, candidates = [], []
    target_ids: list[str] = []
    for name in dict.fromkeys([config.selection_target, *config.selection_pool_sets]):
        corpus = load_corpus(store, resolve_eval_dataset(store, name))
        pool_ids, test_ids = pool_and_test(corpus, config)
        if name == config.selection_target:
            target_ids = list(test_ids)
        if name in config.selection_pool_sets:
            n = min(config.selection_pool_per_set, len(pool_ids))
            picked = random_selection(len(pool_ids), n, config.sampling.seed)
            candidates += [pool_ids[i] for i in picked]
        corpora.append(corpus)
    return merged_corpus(corpora), sorted(set(candidates)), target_ids


def select_and_finetune(
    store: ArtifactStore,
    selection: str,
    config: EvaluationConfig,
    factory: MethodFactory,
    base_ref: ArtifactRef,
    drawn: tuple[Corpus, list[str], list[str]],
) -> ArtifactRef:
    """The ``data-selection`` artifact of ``selection`` (a method, or ``"random"``): the N chosen
    candidates (``selected.parquet``), fine-tuned on as one label unit; metadata: the target
    task's mean loss (for ``random``: the mean over ``selection_random_draws`` draws, and the base
    LM's loss before any fine-tune). ``drawn``: ``selection_candidates(store, config)``,
    drawn once for every selection."""
    config = resolved(config)
    stage_config = {
        "selection": selection,
        "rule": "random" if selection == "random" else "round_robin",
        "settings": {} if selection == "random" else factory.settings(selection),
        "target": config.selection_target,
        "pool_sets": list(config.selection_pool_sets),
        "per_set": config.selection_pool_per_set,
        "n": config.selection_size,
        "draws": config.selection_random_draws if selection == "random" else 1,
        "sampling": config.sampling.to_dict(),
        "finetune": config.finetune.to_dict(),
    }
    corpus, candidate_ids, target_ids = drawn
    method_inputs = [] if selection == "random" else factory.inputs(selection, base_ref.key)
    inputs = [corpus.key, base_ref.key, *method_inputs]
    key = content_key(SELECTION_STAGE, stage_config, inputs)

    def writer(staging: Path) -> dict[str, Any]:
        log.info("data selection for %s: %s", config.selection_target, selection)
        candidates = [corpus.examples[i] for i in candidate_ids]
        targets = [corpus.examples[i] for i in target_ids]
        if selection == "random":
            chosen = [
                random_selection(len(candidates), config.selection_size, seed)
                for seed in range(config.selection_random_draws)
            ]
        else:
            attributor = factory.build(selection, base_ref.key)
            attributor.fit(candidates)
            chosen = [shipped_selection(attributor.score(targets), config.selection_size)]
        losses = []
        for draw, indices in enumerate(chosen):
            members = tuple(sorted(candidate_ids[i] for i in indices))
            split = Split(draw, tuple(sorted(target_ids)), tuple(candidate_ids), (members,))
            (outcome,) = labels.run_label_units(store, corpus, base_ref, [split], config.finetune)
            unit = read_table(store, outcome.ref, labels.UNIT_FILE, "subset_losses")
            losses.append(float(np.mean(unit.column("loss").to_numpy())))
        pq.write_table(
            pa.table(
                {
                    "draw": np.repeat(
                        np.arange(len(chosen), dtype=np.int64), config.selection_size
                    ),
                    "example_id": [candidate_ids[i] for indices in chosen for i in indices],
                }
            ),
            staging / "selected.parquet",
        )
        metadata = {
            "target": config.selection_target,
            "selection": selection,
            "n": config.selection_size,
            "target_loss": float(np.mean(losses)),
            "draws": len(chosen),
        }
        if selection == "random":
            from airrep_core.lm.finetune import SubsetFinetuner

            finetuner = SubsetFinetuner(store.local_dir(base_ref), config.finetune)
            metadata["base_loss"] = float(np.mean(finetuner.target_losses(targets)))
        return metadata

    return store.build(SELECTION_STAGE, key, config=stage_config, inputs=inputs, writer=writer)


def selections(
    store: ArtifactStore, config: EvaluationConfig, factory: MethodFactory, base_ref: ArtifactRef
) -> list[ArtifactRef]:
    """The ``data-selection`` artifacts of ``random`` and every selection method (none when
    ``config.selection_methods`` is empty)."""
    if not config.selection_methods:
        return []
    drawn = selection_candidates(store, config)  # the sets are read once, not per selection
    return [
        select_and_finetune(store, selection, config, factory, base_ref, drawn)
        for selection in ["random", *config.method_list(config.selection_methods)]
    ]


@store_task("data-selection", "select-for-{config.selection_target}", gpu=True, timeout_h=12)
def select_task(
    root: str, encoder: StepRef, base: StepRef, config: EvaluationConfig
) -> list[StepRef]:
    """The data-selection test: random and each method's selection (round-robin, as ``airrep
    select`` ships it), each fine-tuned on, with the target task's loss."""
    return factory_step(root, encoder, base, config, selections)
