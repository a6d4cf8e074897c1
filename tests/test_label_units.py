"""Label generation over the store: per-unit artifacts, resume after SIGKILL, gathered labels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from airrep_core.config.labels import EvaluationSamplingConfig, LabelsConfig
from storage.artifacts import ArtifactStore
from storage.dataset_heads import DatasetVersion
from storage.datasets import import_dataset
from storage.sample_data import sample_data_dir
from storage.tables import read_table
from tasks.corpus import load_corpus
from tasks.labels import (
    LABELS_STAGE,
    LOSSES_FILE,
    UNIT_STAGE,
    generate_ground_truth,
    generate_labels,
    load_split_labels,
)
from tasks.splits import build_evaluation_splits, read_splits

REPO = Path(__file__).resolve().parents[1]
P3_FILE_STRIDE = 40  # 8 P3 templates of different tasks, ~1,600 examples
CONFIG = LabelsConfig.preset("tiny", sampling={"n_subsets": 6})
N_UNITS = CONFIG.sampling.n_splits * CONFIG.sampling.n_subsets
KILL_AFTER_UNITS = 3

RUN_SCRIPT = """
import sys
from airrep_core.config.labels import LabelsConfig
from storage.artifacts import ArtifactStore
from storage.dataset_heads import latest_version
from tasks.labels import generate_labels

store = ArtifactStore(sys.argv[1])
config = LabelsConfig.from_dict({config!r})
generate_labels(store, latest_version(store, "p3"), config)
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def p3_files() -> list[Path]:
    return sorted((sample_data_dir() / "flan_p3").glob("*.jsonl"))[::P3_FILE_STRIDE]


def new_store(root: Path) -> tuple[ArtifactStore, DatasetVersion]:
    store = ArtifactStore(f"file://{root}")
    return store, import_dataset(store, p3_files(), "p3", skip_invalid=True)


def published_units(root: Path) -> int:
    return len(list((root / UNIT_STAGE).glob("*/_manifest.json")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory):
    store, dataset = new_store(tmp_path_factory.mktemp("uninterrupted"))
    return store, dataset, generate_labels(store, dataset, CONFIG)


def test_labels_have_one_loss_per_split_subset_and_target(uninterrupted) -> None:
    store, dataset, ref = uninterrupted
    assert (ref.n_units, ref.units_computed, ref.units_skipped) == (N_UNITS, N_UNITS, 0)
    sampling = CONFIG.sampling
    assert ref.rows == N_UNITS * sampling.n_targets
    labels = load_split_labels(store, ref)
    assert [s.split_id for s in labels] == list(range(sampling.n_splits))
    table = pl.from_arrow(
        read_table(store, store.get(LABELS_STAGE, ref.labels_key), LOSSES_FILE, "subset_losses")
    )
    for split in labels:
        assert split.losses.shape == (sampling.n_subsets, sampling.n_targets)
        assert np.isfinite(split.losses).all()
        # The matrix is the table, cell by cell.
        for row in table.filter(pl.col("split_id") == str(split.split_id)).iter_rows(named=True):
            column = split.target_ids.index(row["target_id"])
            assert split.losses[row["subset_id"], column] == np.float32(row["loss"])
        # Subsets move target losses (the labels carry signal), and r̂ is normalised per target.
        assert split.losses.std(axis=0).mean() > 1e-3
        np.testing.assert_allclose(split.normalised().mean(axis=0), 0, atol=1e-5)
    # The targets are never training examples of their split, nor warm-up examples.
    corpus = load_corpus(store, dataset)
    for split in read_splits(store, store.get(LABELS_STAGE, ref.labels_key)):
        assert not set(split.target_ids) & set(split.pool_ids)
        assert all(cid in corpus.examples for cid in split.pool_ids)


def test_a_second_run_computes_nothing(uninterrupted) -> None:
    store, dataset, ref = uninterrupted
    again = generate_labels(store, dataset, CONFIG)
    assert (again.units_computed, again.units_skipped) == (0, N_UNITS)
    assert again.labels_key == ref.labels_key


def test_a_run_killed_with_sigkill_resumes_with_the_missing_units_only(
    uninterrupted, tmp_path: Path
) -> None:
    reference_store, _, reference = uninterrupted
    store, dataset = new_store(tmp_path)
    script = textwrap.dedent(RUN_SCRIPT.format(config=CONFIG.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", script, store.root.uri],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while published_units(tmp_path) < KILL_AFTER_UNITS:
            if process.poll() is not None:
                pytest.fail(
                    f"the run ended before the kill: {process.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no units appeared within 240 s")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    done_at_kill = published_units(tmp_path)
    assert KILL_AFTER_UNITS <= done_at_kill < N_UNITS, "kill landed after the last unit"
    assert not (tmp_path / LABELS_STAGE).exists()

    resumed = generate_labels(store, dataset, CONFIG)
    assert resumed.units_computed == N_UNITS - done_at_kill
    assert resumed.units_skipped == done_at_kill
    assert resumed.labels_key == reference.labels_key
    for ours, theirs in zip(
        load_split_labels(store, resumed),
        load_split_labels(reference_store, reference),
        strict=True,
    ):
        assert ours.target_ids == theirs.target_ids and ours.subset_members == theirs.subset_members
        np.testing.assert_array_equal(ours.losses, theirs.losses)


def test_ground_truth_subsets_of_an_evaluation_set(uninterrupted) -> None:
    store, _, ref = uninterrupted
    dolly = import_dataset(store, sample_data_dir() / "dolly" / "dolly_6400.jsonl", "dolly")
    corpus = load_corpus(store, dolly)
    config = EvaluationSamplingConfig.preset("tiny", n_subsets=3, n_test=4)
    base_ref = store.get("label-base", ref.base_key)
    truth = generate_ground_truth(store, dolly, base_ref, config, CONFIG.finetune)
    assert (truth.n_splits, truth.n_units, truth.rows) == (1, 3, 12)
    (labels,) = load_split_labels(store, truth)
    (split,) = read_splits(store, store.get("label-splits", truth.splits_key))
    assert len(labels.target_ids) == 4 and labels.losses.shape == (3, 4)
    assert set(labels.target_ids).isdisjoint(split.pool_ids)
    # Given pool and test ids are used as they are.
    pool, test = split.pool_ids[:10], split.target_ids
    given = read_splits(
        store, build_evaluation_splits(store, corpus, config.replace(subset_size=5), pool, test)
    )
    assert given[0].target_ids == test and set(given[0].pool_ids) <= set(pool)
