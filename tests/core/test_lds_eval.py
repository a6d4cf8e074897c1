"""The evaluation harness's pure parts: LDS and the noise ceiling against scipy, AirRep's group
scores against ``airrep_core.encoder.scoring``, the classification and selection rules, the hold-out
rules and the report files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest
from encoder_fixtures import PER_TEMPLATE
from p3_fixtures import p3_examples
from scipy.stats import spearmanr

from airrep_core.config.evaluation import EvaluationConfig
from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.scoring import group_scores
from airrep_core.errors import ConfigError
from airrep_core.evaluation import (
    NOISE_CEILING,
    ReportTables,
    balanced_task,
    lds_of,
    noise_ceiling,
    random_selection,
    score_subsets,
    shipped_selection,
    subset_indices,
    top1_accuracy,
    write_report,
)
from airrep_core.evaluation.classification import classes_with_enough_examples
from airrep_core.evaluation.eval_sets import (
    draw_pool_and_test_by_prompt,
    is_heldout_template,
    p3_task,
    split_templates,
)
from airrep_core.methods import TfidfAttributor
from airrep_core.methods.airrep import AirRepAttributor
from storage.sample_data import sample_data_dir


def scipy_lds(group: np.ndarray, losses: np.ndarray) -> float:
    """Mean over targets of scipy's Spearman ρ(g(x, ·), −ℓ(x, ·)), NaN → 0."""
    values = []
    for t in range(group.shape[0]):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on constant input (NaN, counted as 0)
            rho = spearmanr(group[t], -losses[:, t]).statistic
        values.append(0.0 if np.isnan(rho) else rho)
    return float(np.mean(values))


def test_lds_equals_scipy_spearman_mean_with_nan_as_zero():
    rng = np.random.default_rng(0)
    n_targets, n_subsets = 12, 9
    losses = rng.normal(size=(n_subsets, n_targets)).astype(np.float32)
    group = rng.normal(size=(n_targets, n_subsets)).astype(np.float32)
    group[3] = 1.0  # constant scores: NaN -> 0
    losses[:, 5] = 2.0  # constant losses: NaN -> 0
    group[7] = np.round(group[7])  # ties
    result = lds_of(group, losses)
    assert result.per_target[3] == 0.0 and result.per_target[5] == 0.0
    assert result.mean == pytest.approx(scipy_lds(group, losses), abs=1e-12)
    assert result.n_subsets == n_subsets


def test_lds_sign_convention_lower_loss_is_higher_score():
    losses = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 4), dtype=np.float32)
    assert lds_of(-losses.T, losses).mean == pytest.approx(1.0)
    assert lds_of(losses.T, losses).mean == pytest.approx(-1.0)


def test_noise_ceiling_is_the_lds_of_the_second_seed_against_the_first():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 10))
    b = a + 0.5 * rng.normal(size=a.shape)
    ceiling = noise_ceiling(a, b)
    assert ceiling.mean == pytest.approx(scipy_lds(-b.T, a), abs=1e-12)
    assert noise_ceiling(a, a).mean == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same"):
        noise_ceiling(a, b[:4])


def test_stderr_is_the_standard_error_over_targets():
    rng = np.random.default_rng(2)
    result = lds_of(rng.normal(size=(20, 7)), rng.normal(size=(7, 20)))
    expected = result.per_target.std(ddof=1) / np.sqrt(20)
    assert result.stderr == pytest.approx(expected)


@pytest.fixture(scope="module")
def encoder() -> AirRepEncoder:
    return AirRepEncoder.from_backbone(max_length=64, projection_seed=3)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_airrep_group_score_equals_scoring_group_scores(encoder, pooling):
    examples = list(p3_examples(PER_TEMPLATE))[::20][:18]
    train, queries = examples[:14], examples[14:]
    subsets = [[0, 3, 5], [1, 2, 4, 8, 9, 13], [7], [10, 11, 12, 6]]
    attributor = AirRepAttributor(encoder, pooling=pooling, batch_size=8)
    attributor.fit(train)
    scores = attributor.score(queries)
    grouped = attributor.group_score(scores, [np.array(s) for s in subsets])
    expected = group_scores(
        encoder.encode_examples(queries, 8).astype(np.float64),
        encoder.encode_examples(train, 8).astype(np.float64),
        subsets,
        pooling=pooling,
    )
    assert grouped.shape == (len(queries), len(subsets))
    np.testing.assert_allclose(grouped, expected, rtol=1e-5, atol=1e-4)
    assert attributor.name == ("airrep" if pooling == "attention" else "airrep_mean")
    assert attributor.storage_floats_per_example == encoder.dim
    if pooling == "mean":
        np.testing.assert_allclose(grouped[:, 1], scores[:, subsets[1]].mean(axis=1), rtol=1e-5)


def test_score_subsets_uses_the_method_group_rule_and_ids():
    examples = list(p3_examples(PER_TEMPLATE))[::10][:26]
    pool, targets = examples[:20], examples[20:]
    subsets = [[pool[i].example_id for i in s] for s in ([0, 1, 2], [5, 9], [19, 4, 7, 8])]
    result = score_subsets(TfidfAttributor(), pool, targets, subsets)
    reference = TfidfAttributor()
    reference.fit(pool)
    scores = reference.score(targets)
    index = subset_indices([e.example_id for e in pool], subsets)
    expected = np.stack([scores[:, i].sum(axis=1) for i in index], axis=1)
    np.testing.assert_allclose(result.group_scores, expected, rtol=1e-5)
    assert result.method == "tfidf" and result.n_train == 20
    with pytest.raises(ValueError, match="not in the pool"):
        subset_indices(["a", "b"], [["a", "zz"]])


def test_top1_accuracy_equals_a_loop():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(15, 11))
    pool_labels = [str(i % 3) for i in range(11)]
    query_labels = [str(rng.integers(3)) for _ in range(15)]
    loop = np.mean(
        [pool_labels[int(np.argmax(row))] == q for row, q in zip(scores, query_labels, strict=True)]
    )
    assert top1_accuracy(scores, query_labels, pool_labels) == pytest.approx(loop)


def test_top1_accuracy_names_the_scores_shape_it_expected():
    with pytest.raises(
        ValueError, match=r"scores have shape \(2, 3\), expected \(n_query, n_pool\)"
    ):
        top1_accuracy(np.zeros((2, 3)), ["a", "b"], ["a", "b"])


def test_balanced_task_keeps_prompts_apart_and_classes_balanced():
    examples, labels = [], []
    for k in range(40):  # 40 dialogues, each with a "chosen" and a "rejected" response
        for label in ("chosen", "rejected"):
            examples.append(Example(f"{k}-{label}", f"prompt {k}", f"{label} {k}", "hh", label))
            labels.append(label)
    task = balanced_task("hh", examples, labels, per_class=10, n_queries=8, seed=0)
    assert len(task.queries) == 8 and sorted(task.query_labels).count("chosen") == 4
    assert sorted(task.pool_labels).count("chosen") == 10 == len(task.pool) - 10
    assert not {e.prompt for e in task.pool} & {e.prompt for e in task.queries}
    assert task.chance_accuracy() == pytest.approx(0.5)
    again = balanced_task("hh", examples[::-1], labels[::-1], per_class=10, n_queries=8, seed=0)
    assert again.queries == task.queries and again.pool == task.pool
    with pytest.raises(ValueError, match="not enough"):
        balanced_task("hh", examples, labels, per_class=50, n_queries=8, seed=0)


def test_classes_with_too_few_examples_are_dropped_until_stable():
    labels = ["a"] * 30 + ["b"] * 30 + ["c"] * 13 + ["d"] * 4
    # 4 classes: need 10 + 3 = 13 -> d dropped; 3 classes: need 10 + 4 = 14 -> c dropped too.
    assert classes_with_enough_examples(labels, per_class=10, n_queries=12) == ["a", "b"]
    assert classes_with_enough_examples(labels, per_class=1, n_queries=4) == ["a", "b", "c", "d"]


def test_selection_rules():
    scores = np.array([[1.0, 5.0, 2.0, 5.0], [3.0, 1.0, 2.0, 1.0]])
    # round-robin: target 0's best (1, ties to the lower index), target 1's best (0), then
    # target 0's second (3): the rule of `airrep select`, not the mean score (which picks 1, 3).
    np.testing.assert_array_equal(shipped_selection(scores, 2), [0, 1])
    np.testing.assert_array_equal(shipped_selection(scores, 3), [0, 1, 3])
    draw = random_selection(50, 10, seed=4)
    assert len(set(draw.tolist())) == 10 and np.array_equal(draw, random_selection(50, 10, 4))
    assert not np.array_equal(draw, random_selection(50, 10, 5))
    with pytest.raises(ValueError, match="allowed"):
        shipped_selection(scores, 5)


def test_every_p3_template_has_a_task_and_the_hold_out_is_stable():
    templates = sorted(p.stem for p in (sample_data_dir() / "flan_p3").glob("*.jsonl"))
    tasks = {p3_task(t) for t in templates}
    assert len(tasks) >= 30 and "commonsense_qa" in tasks and "common_gen" in tasks
    assert p3_task("common_gen_Put_together") == "common_gen"
    train, heldout = split_templates(templates)
    assert set(train).isdisjoint(heldout) and len(train) + len(heldout) == len(templates)
    assert 0.04 < len(heldout) / len(templates) < 0.2
    assert split_templates(templates[::-1]) == (train, heldout)
    assert all(is_heldout_template(t) for t in heldout)
    with pytest.raises(ValueError, match="no known task"):
        p3_task("unknown_template")


def test_pool_and_test_share_no_prompt_and_ignore_input_order():
    examples = {}
    for k in range(60):
        for suffix in ("a", "b"):
            examples[f"{k}{suffix}"] = Example(f"{k}{suffix}", f"prompt {k % 45}", f"r {k}{suffix}")
    pool, test = draw_pool_and_test_by_prompt(examples, pool_size=50, n_test=10, seed=0)
    assert len(pool) == 50 and len(test) == 10 and not set(pool) & set(test)
    assert not {examples[i].prompt for i in pool} & {examples[i].prompt for i in test}
    shuffled = dict(reversed(list(examples.items())))
    assert draw_pool_and_test_by_prompt(shuffled, 50, 10, 0) == (pool, test)
    assert draw_pool_and_test_by_prompt(examples, 50, 10, 1) != (pool, test)
    with pytest.raises(ValueError, match="pool_size"):
        draw_pool_and_test_by_prompt(examples, 200, 10, 0)


def test_report_files_are_written_and_parse(tmp_path):
    lds = [
        {
            "eval_set": s,
            "method": m,
            "lds": v,
            "stderr": 0.01,
            "n_targets": 8,
            "n_subsets": 6,
            "group_rule": "sum of per-example scores",
            "fit_seconds": 1.0,
            "score_seconds": 0.5,
            "n_train": 64,
            "storage_floats_per_example": 384.0,
        }
        for s in ("dolly", "gsm8k")
        for m, v in (("airrep", 0.3), ("tfidf", 0.2), (NOISE_CEILING, 0.8))
    ]
    classification = [
        {
            "task": "hh",
            "method": "tfidf",
            "accuracy": 0.6,
            "chance": 0.5,
            "n_queries": 8,
            "n_pool": 16,
        }
    ]
    selection = [
        {"target": "dolly", "selection": s, "n": 8, "target_loss": v, "base_loss": 5.0, "draws": 1}
        for s, v in (("random", 4.5), ("airrep", 4.4))
    ]
    settings = {"airrep": {"pooling": "attention"}, "tfidf": {}}
    tables = ReportTables(
        lds, classification, selection, command="airrep bench lds --preset tiny", settings=settings
    )
    written = write_report(tmp_path, tables)
    assert set(written) == {
        "report.md",
        "lds.parquet",
        "classification.parquet",
        "selection.parquet",
        "lds.png",
    }
    frame = pl.read_parquet(tmp_path / "lds.parquet")
    assert frame.shape[0] == 6 and set(frame["method"]) == {"airrep", "tfidf", NOISE_CEILING}
    assert (tmp_path / "lds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "report.md").read_text()
    # The average of two sets carries its standard error: √(1.0² + 1.0²) / 2.
    assert "| airrep | 30.0 ± 1.0 | 30.0 ± 1.0 | 30.0 ± 0.7 |" in markdown
    assert f"| {NOISE_CEILING} | 80.0" in markdown
    assert "-0.1000" in markdown  # airrep's selection vs random
    assert "airrep bench lds --preset tiny" in markdown
    assert "| airrep | pooling=attention |" in markdown and "| tfidf | — |" in markdown
    json.dumps(frame.to_dicts())


def test_evaluation_config_presets_and_validation():
    for name in ("tiny", "mini", "paper"):
        config = EvaluationConfig.preset(name)
        assert EvaluationConfig.from_dict(config.to_dict()) == config
    tiny = EvaluationConfig.preset("tiny")
    assert (tiny.sampling.pool_size, tiny.sampling.n_test, tiny.sampling.n_subsets) == (64, 8, 6)
    assert tiny.transfer_base.architecture == "llama" and tiny.transfer_base.hidden_size == 64
    with pytest.raises(ConfigError, match="methods"):
        EvaluationConfig.preset("tiny", methods=("airrep", "nope"))
    with pytest.raises(ConfigError, match="noise_seed"):
        EvaluationConfig.preset("tiny", noise_seed=0)
    with pytest.raises(ConfigError, match="noise_subsets"):
        EvaluationConfig.preset("tiny", noise_subsets=7)
