"""The evaluation harness over the store: ``airrep bench lds --preset tiny`` end to end on real
data (P3 labels -> a trained tiny AirRep encoder; Dolly ground truth with K=6 subsets of 16 from a
pool of 64, 8 test examples, the tiny base LM; every method), its cached rerun through the CLI,
the report files, and the classification test on HH-RLHF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

import airrep_core.lm.finetune
import airrep_core.methods.interface
import tasks.encoder
from airrep_core.attribution.index import AttributionIndex
from airrep_core.config.embedding import SearchConfig
from airrep_core.config.evaluation import ALL_METHODS, EvaluationConfig
from airrep_core.evaluation import NOISE_CEILING, top1_accuracy
from airrep_core.methods import TfidfAttributor
from airrep_core.methods.lexical import Bm25Attributor
from flows.bench import BenchResult, run_bench
from flows.cli_bench import bench_app
from flows.evaluation_flow import evaluate
from storage.artifacts import ArtifactStore
from tasks import data_selection, ground_truth, labels, method_scores
from tasks.corpus import load_corpus
from tasks.encoder import load_encoder

PRESET = "tiny"


@dataclass(frozen=True)
class Bench:
    root: str
    store: ArtifactStore
    result: BenchResult


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """``run_bench`` at the tiny preset in a fresh store (the module's one expensive step)."""
    root = (tmp_path_factory.mktemp("bench") / "store").as_uri()
    store = ArtifactStore(root)
    return Bench(root, store, run_bench(store, PRESET, root=root))


def all_artifacts(store: ArtifactStore) -> set[tuple[str, str]]:
    base = Path(store.root.local_path)
    return {(p.parent.parent.name, p.parent.name) for p in base.glob("*/*/_manifest.json")}


def test_bench_tiny_scores_every_method_with_a_noise_ceiling(bench):
    result = bench.result
    rows = result.evaluation.tables.lds
    assert [r["method"] for r in rows] == [*ALL_METHODS, NOISE_CEILING]
    assert {r["eval_set"] for r in rows} == {"dolly"}
    for row in rows:
        assert -1.0 <= row["lds"] <= 1.0 and row["stderr"] >= 0
        assert row["n_targets"] == 8
    ceiling = rows[-1]
    assert ceiling["n_subsets"] == 4
    by_method = {r["method"]: r for r in rows}
    # The tiny preset's recipe may pick the hybrid score on its held-out labels: then AirRep
    # also stores the BM25 of its lexical term (the recipe's: bm25_response's settings with
    # n-grams) over the ground truth's pool and sums hybrid scores over a subset; with a token
    # bag its embedding is 384 + the LM's width wide.
    encoder = load_encoder(bench.store, result.encoder_ref)
    weight = encoder.lexical_weight
    lexical_floats = 0.0
    if weight:
        (truth_ref,) = bench.store.list(ground_truth.GROUND_TRUTH_STAGE)
        lexical = Bm25Attributor(encoder.lexical, tokenizer=encoder.lexical_tokenizer)
        lexical.fit(list(ground_truth.load_ground_truth(bench.store, truth_ref).pool))
        lexical_floats = lexical.storage_floats_per_example
    assert encoder.dim == 384 + (encoder.token_bag.dim if encoder.token_bag else 0)
    assert by_method["airrep"]["storage_floats_per_example"] == pytest.approx(
        encoder.dim + lexical_floats
    )
    assert by_method["airrep"]["group_rule"].startswith("sum of hybrid" if weight else "attention")
    assert by_method["airrep_mean"]["storage_floats_per_example"] == encoder.dim
    assert by_method["tfidf"]["group_rule"] == "sum of per-example scores"
    assert by_method["tfidf"]["n_train"] <= 64


def test_stored_group_scores_reproduce_the_lds_with_scipy(bench):
    store = bench.store
    truth_ref = store.list(ground_truth.GROUND_TRUTH_STAGE)[0]
    truth = ground_truth.load_ground_truth(store, truth_ref)
    losses = truth.labels.losses  # (K, n_test)
    for ref in store.list(method_scores.SCORES_STAGE):
        if ref.inputs[0] != truth_ref.key:
            continue
        frame = pl.read_parquet(store.local_dir(ref) / "group_scores.parquet")
        column = {t: i for i, t in enumerate(truth.labels.target_ids)}
        scores = np.zeros((losses.shape[1], losses.shape[0]))
        for target, subset, score in frame.iter_rows():
            scores[column[target], subset] = score
        expected = []
        for t in range(scores.shape[0]):
            rho = spearmanr(scores[t], -losses[:, t]).statistic
            expected.append(0.0 if np.isnan(rho) else rho)
        assert ref.metadata["lds"] == pytest.approx(np.mean(expected), abs=1e-9)


def test_ground_truth_is_dolly_with_disjoint_prompts_and_retrained_subsets(bench):
    store = bench.store
    (truth_ref,) = store.list(ground_truth.GROUND_TRUTH_STAGE)
    truth = ground_truth.load_ground_truth(store, truth_ref)
    assert truth.name == "dolly" and truth.labels.losses.shape == (6, 8)
    assert all(len(members) == 16 for members in truth.labels.subset_members)
    assert len(truth.pool) <= 64 and truth_ref.metadata["pool_size"] == 64
    assert not {e.prompt for e in truth.pool} & {e.prompt for e in truth.targets}
    assert truth.noise_losses.shape == (4, 8) and np.isfinite(truth.noise_losses).all()
    assert not np.array_equal(truth.noise_losses, truth.labels.losses[:4])  # another seed
    assert all(e.source == "dolly" for e in truth.targets)


def test_report_files_exist_and_parse(bench):
    store, result = bench.store, bench.result
    report = result.evaluation.report
    directory = store.local_dir(report)
    assert set(report.metadata["files"]) == {
        "report.md",
        "lds.parquet",
        "classification.parquet",
        "selection.parquet",
        "lds.png",
    }
    lds = pl.read_parquet(directory / "lds.parquet")
    assert lds.shape[0] == len(ALL_METHODS) + 1
    classification = pq.read_table(directory / "classification.parquet").to_pylist()
    assert {r["method"] for r in classification} == {"airrep", "tfidf", "bm25"}
    assert all(0 <= r["accuracy"] <= 1 for r in classification)
    selection = pl.read_parquet(directory / "selection.parquet")
    assert selection["selection"].to_list() == ["random", "airrep", "tfidf"]
    assert (selection["target_loss"] < selection["base_loss"]).all()  # fine-tuning helped
    assert (directory / "lds.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (directory / "report.md").read_text()
    assert markdown == result.evaluation.markdown
    assert "| airrep |" in markdown and NOISE_CEILING in markdown
    assert "airrep bench lds --preset tiny --root" in markdown


def test_the_evaluated_selection_is_the_one_airrep_select_ships(bench):
    """The report's AirRep selection equals ``AttributionIndex.select`` (what ``airrep select``
    runs) over the same candidates and target examples with the same encoder."""
    store, result = bench.store, bench.result
    config = EvaluationConfig.preset(PRESET)
    corpus, candidate_ids, target_ids = data_selection.selection_candidates(store, config)
    candidates = [corpus.examples[i] for i in candidate_ids]
    encoder = load_encoder(store, result.encoder_ref)
    lexical = None
    if encoder.lexical_weight > 0:
        lexical = Bm25Attributor(encoder.lexical, tokenizer=encoder.lexical_tokenizer)
        lexical.fit(candidates)
    index = AttributionIndex(
        encoder,
        encoder.encode_examples(candidates, precision=config.airrep_precision),
        candidate_ids,
        SearchConfig(precision=config.airrep_precision),
        lexical=lexical,
    )
    shipped = index.select([corpus.examples[i] for i in target_ids], config.selection_size)
    (evaluated,) = [
        ref
        for ref in store.list(data_selection.SELECTION_STAGE)
        if ref.metadata["selection"] == "airrep"
    ]
    selected = pq.read_table(store.local_dir(evaluated) / "selected.parquet")
    assert sorted(selected.column("example_id").to_pylist()) == sorted(
        s.example_id for s in shipped
    )


def test_cli_rerun_recomputes_nothing(bench, monkeypatch):
    root, store = bench.root, bench.store
    before = all_artifacts(store)

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached step was recomputed")

    monkeypatch.setattr(airrep_core.methods.interface.Attributor, "fit", forbidden)
    monkeypatch.setattr(airrep_core.lm.finetune.SubsetFinetuner, "__init__", forbidden)
    monkeypatch.setattr(tasks.encoder, "train_encoder", forbidden)
    monkeypatch.setattr(labels, "build_base_model", forbidden)
    outcome = CliRunner().invoke(bench_app, ["lds", "--preset", "tiny", "--root", root])
    assert outcome.exit_code == 0, outcome.output
    assert all_artifacts(store) == before
    assert "| airrep |" in outcome.output
    assert f"Reproduce: airrep bench lds --preset tiny --root {root}" in outcome.output
    # --base-steps at the preset's own budget (tiny: 12) names the same base: nothing to redo
    # but the report, which records the command that reproduces it.
    outcome = CliRunner().invoke(
        bench_app, ["lds", "--preset", "tiny", "--base-steps", "12", "--root", root]
    )
    assert outcome.exit_code == 0, outcome.output
    assert {stage for stage, _ in all_artifacts(store) - before} == {"evaluation-report"}
    assert f"airrep bench lds --preset tiny --base-steps 12 --root {root}" in outcome.output


def test_classification_on_hh_rlhf_chosen_rejected_with_tfidf_is_sane(bench):
    store = bench.store
    config = EvaluationConfig.preset(
        "tiny", classification_pool_per_class=60, classification_queries=60
    )
    task, _ = method_scores.classification_task(store, "hh_chosen_rejected", config)
    assert set(task.classes) == {"chosen", "rejected"} and len(task.queries) == 60
    assert not {e.prompt for e in task.pool} & {e.prompt for e in task.queries}
    tfidf = TfidfAttributor()
    tfidf.fit(list(task.pool))
    accuracy = top1_accuracy(tfidf.score(list(task.queries)), task.query_labels, task.pool_labels)
    # Chosen vs rejected is a hard, content-level distinction: near chance, never degenerate.
    assert task.chance_accuracy() == pytest.approx(0.5)
    assert 0.3 <= accuracy <= 0.8


def test_an_encoder_trained_on_an_evaluation_set_is_refused(bench):
    store = bench.store
    dolly = ground_truth.resolve_eval_dataset(store, "dolly")
    corpus = load_corpus(store, dolly)
    with pytest.raises(ValueError, match=f"shares {len(corpus.examples)} example"):
        ground_truth.check_held_out(store, dolly.version, {"dolly": corpus})


@pytest.mark.slow
def test_transfer_scores_airrep_against_another_base_lm(bench):
    """Cross-model transfer: the same encoder against Dolly ground truth from a Llama base."""
    store, result = bench.store, bench.result
    config = EvaluationConfig.preset(
        "tiny",
        transfer_eval_sets=("dolly",),
        transfer_methods=("airrep", "tfidf", "grad_dot"),
        classification_tasks=(),
        selection_methods=(),
    )
    p3_train = store.get("datasets", result.encoder_ref.inputs[1])
    transfer_base = labels.build_base(store, load_corpus(store, p3_train), config.transfer_base)
    assert transfer_base.metadata["model"] == "scratch-llama"
    outcome = evaluate(store, config, result.encoder_ref, result.base_ref, transfer_base)
    rows = outcome.tables.transfer
    assert [r["method"] for r in rows] == ["airrep", "tfidf", "grad_dot", NOISE_CEILING]
    assert {r["base"] for r in rows} == {"scratch-llama"}
    same_data = {r["method"]: r for r in outcome.tables.lds}
    transfer = {r["method"]: r for r in rows}
    # Another base LM: other losses, so other LDS, from the same (cached) AirRep encoder.
    assert transfer["airrep"]["lds"] != same_data["airrep"]["lds"]
    assert "Cross-model transfer" in outcome.markdown
    assert "| grad_dot | " in outcome.markdown.split("## Method settings")[1]
    directory = store.local_dir(outcome.report)
    assert pl.read_parquet(directory / "transfer.parquet").shape[0] == 4
