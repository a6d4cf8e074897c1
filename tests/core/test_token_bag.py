"""The token bag (``encoder.token_bag``): its value against a brute force over the LM's labelled
tokens, its fitted statistics, the encoder that appends it (round trip, scores), and the choice
of its weight on held-out labels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from baseline_fixtures import train_and_query_examples
from encoder_fixtures import unigram_label_set
from lm_fixtures import tiny_qwen2, train_tokenizer

from airrep_core.config.baselines import Bm25ResponseConfig
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.encoder.head_training import choose_hybrid_weights, split_example_ids
from airrep_core.encoder.model import TOKEN_BAG_DIR, AirRepEncoder
from airrep_core.encoder.scoring import group_scores
from airrep_core.encoder.token_bag import TokenBag
from airrep_core.errors import ConfigError
from airrep_core.evaluation.metrics import lds
from airrep_core.lm.data import IGNORE_INDEX, tokenize_example
from airrep_core.methods.lexical import Bm25Attributor

MAX_LENGTH = 48


@pytest.fixture(scope="module")
def data():
    """(train, queries) P3 examples, 30 and 8."""
    return train_and_query_examples(n_train=30, n_query=8)


@pytest.fixture(scope="module")
def target_lm(data):
    """(model, tokenizer): a seeded tiny Qwen2 over a BPE trained on ``data``."""
    tokenizer = train_tokenizer([f"{e.prompt} {e.response}" for part in data for e in part])
    return tiny_qwen2(tokenizer), tokenizer


def brute_force_bags(examples, model, tokenizer) -> np.ndarray:
    """Mean input-embedding row over each example's labelled (response) tokens."""
    table = model.get_input_embeddings().weight.detach().numpy()
    rows = []
    for e in examples:
        labels = tokenize_example(tokenizer, e.prompt, e.response, MAX_LENGTH).labels
        rows.append(table[[t for t in labels if t != IGNORE_INDEX]].mean(axis=0))
    return np.stack(rows)


def test_bag_is_the_centred_scaled_mean_embedding_of_the_labelled_tokens(data, target_lm):
    train, queries = data
    model, tokenizer = target_lm
    bag = TokenBag.from_model(model, tokenizer, MAX_LENGTH)
    fitted = bag.fit_encode(train)
    np.testing.assert_array_equal(fitted, bag.encode(train))  # one pass == fit, then encode
    raw = brute_force_bags(train, model, tokenizer)
    np.testing.assert_allclose(fitted.mean(axis=0), 0.0, atol=1e-5)
    assert (fitted**2).sum(axis=1).mean() == pytest.approx(1.0, rel=1e-5)
    center = raw.mean(axis=0)
    scale = 1 / np.sqrt(((raw - center) ** 2).sum(axis=1).mean())
    expected = (brute_force_bags(queries, model, tokenizer) - center) * scale
    np.testing.assert_allclose(bag.encode(queries), expected, rtol=1e-4, atol=1e-6)
    # The weight scales dot products by w.
    bag.weight = 4.0
    np.testing.assert_allclose(
        bag.encode(queries) @ bag.encode(train).T, 4.0 * expected @ fitted.T, rtol=1e-4, atol=1e-5
    )


def test_a_table_that_disagrees_with_the_tokenizer_names_the_example(data, target_lm):
    train, _ = data
    _, tokenizer = target_lm
    small = TokenBag(tokenizer, np.zeros((3, 4), np.float32), MAX_LENGTH)
    with pytest.raises(ValueError, match=f"example {train[0].example_id!r}: token id"):
        small.encode(train[:1])


def test_encoder_appends_its_bag_and_round_trips(data, target_lm, tmp_path):
    train, queries = data
    model, tokenizer = target_lm
    bag = TokenBag.from_model(model, tokenizer, MAX_LENGTH).fit(train)
    bag.weight = 2.0
    encoder = AirRepEncoder.from_config(EncoderTrainConfig.preset("tiny"))  # response view
    encoder.token_bag = bag
    embeddings = encoder.encode_examples(queries)
    assert embeddings.shape == (len(queries), encoder.dense_dim + bag.dim) == (8, encoder.dim)
    np.testing.assert_allclose(
        embeddings,
        np.concatenate([encoder.encode([q.response for q in queries]), bag.encode(queries)], 1),
        atol=1e-6,
    )
    loaded = AirRepEncoder.from_pretrained(encoder.save(tmp_path / "encoder"))
    assert (tmp_path / "encoder" / TOKEN_BAG_DIR).is_dir()
    assert loaded.token_bag is not None and loaded.token_bag.weight == 2.0
    np.testing.assert_allclose(loaded.encode_examples(queries), embeddings, atol=1e-6)
    assert loaded.metadata()["token_bag_weight"] == 2.0


def zscore(scores: np.ndarray) -> np.ndarray:
    """scipy's row z-score, 0 for a constant row (a target sharing no token with the pool)."""
    return np.nan_to_num(scipy.stats.zscore(scores, axis=1))


def test_bag_weight_is_chosen_with_lambda_on_validation_labels():
    splits, examples = unigram_label_set(n_splits=3, n_targets=16, n_subsets=12, subset_size=8)
    tokenizer = train_tokenizer([f"{e.prompt} {e.response}" for e in examples.values()])
    model = tiny_qwen2(tokenizer)
    ids = split_example_ids(splits)
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((len(ids), 8)).astype(np.float32)
    config = EncoderTrainConfig.preset("tiny").replace(
        lexical_weights=(1.0,), token_bag_weights=(0.5, 2.0)
    )
    bag = TokenBag.from_model(model, tokenizer, config.lexical.lm_max_length)
    bags = bag.fit_encode([examples[i] for i in ids])
    choice = choose_hybrid_weights(embeddings, bags, ids, splits[2:], examples, config, tokenizer)
    grid = {k: v for k, v in choice.items() if k.startswith("w=")}
    assert len(grid) == 3 * 2
    best = max(grid.values())
    assert grid[f"w={choice['token_bag_weight']:g} λ={choice['lexical_weight']:g}"] == best
    # Brute force for w = 2, λ = 1 on the held-out split.
    split = splits[2]
    n = min(config.validation_max_targets, len(split.target_ids))
    pool = sorted({m for members in split.subset_members for m in members})
    row = {i: k for k, i in enumerate(ids)}
    full = np.concatenate([embeddings, np.sqrt(2.0) * bags], axis=1)
    dots = full[[row[t] for t in split.target_ids[:n]]] @ full[[row[m] for m in pool]].T
    bm25 = Bm25Attributor(config.lexical, tokenizer=tokenizer)
    bm25.fit([examples[m] for m in pool])
    lexical = bm25.score([examples[t] for t in split.target_ids[:n]])
    h = zscore(dots) + zscore(lexical)
    groups = np.stack(
        [h[:, [pool.index(m) for m in members]].sum(axis=1) for members in split.subset_members],
        axis=1,
    )
    assert grid["w=2 λ=1"] == pytest.approx(lds(groups, split.losses[:, :n].T), abs=1e-5)
    # The plain (λ = 0) candidate uses the encoder's pooling on the appended embedding.
    plain = group_scores(
        full[[row[t] for t in split.target_ids[:n]]],
        full[[row[m] for m in pool]],
        [np.asarray([pool.index(m) for m in members]) for members in split.subset_members],
        None,
        config.pooling,
    )
    assert grid["w=2 λ=0"] == pytest.approx(lds(plain, split.losses[:, :n].T), abs=1e-5)


def test_bag_weights_need_lexical_terms_the_lm_reads():
    with pytest.raises(ConfigError, match="token_bag_weights"):
        EncoderTrainConfig.preset("tiny").replace(
            lexical=Bm25ResponseConfig(lm_max_length=0), token_bag_weights=(1.0,)
        )
    assert EncoderTrainConfig.preset("mini").needs_base_lm
