"""The token bag (``encoder.token_bag``): its value against a brute force over the LM's labelled
tokens (idf-weighted, BM25's lucene idf by brute force), its fitted statistics, the query cut-off, the
encoder that appends it (round trip, scores, a bag saved before idf weighting), and the choice
of its weight on held-out labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from baseline_fixtures import train_and_query_examples
from encoder_fixtures import unigram_label_set
from lm_fixtures import tiny_qwen2, train_tokenizer
from safetensors.torch import load_file, save_file

from airrep_core.attribution.index import AttributionIndex
from airrep_core.config.baselines import Bm25ResponseConfig
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.encoder.head_training import choose_hybrid_weights, split_example_ids
from airrep_core.encoder.model import TOKEN_BAG_DIR, AirRepEncoder
from airrep_core.encoder.scoring import group_scores
from airrep_core.encoder.token_bag import SETTINGS_FILE, TABLE_FILE, TokenBag
from airrep_core.errors import ConfigError
from airrep_core.evaluation.metrics import lds
from airrep_core.lm.data import IGNORE_INDEX, tokenize_example
from airrep_core.methods.airrep import AirRepAttributor
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


def labelled_tokens(examples, tokenizer) -> list[list[int]]:
    """Each example's labelled (response) token ids under ``tokenize_example``."""
    return [
        [
            t
            for t in tokenize_example(tokenizer, e.prompt, e.response, MAX_LENGTH).labels
            if t != IGNORE_INDEX
        ]
        for e in examples
    ]


def brute_force_bags(examples, model, tokenizer, idf: dict[int, float]) -> np.ndarray:
    """idf-weighted mean input-embedding row over each example's labelled (response) tokens."""
    table = model.get_input_embeddings().weight.detach().numpy()
    rows = []
    for tokens in labelled_tokens(examples, tokenizer):
        weights = np.asarray([idf[t] for t in tokens])
        rows.append((weights[:, None] * table[tokens]).sum(axis=0) / weights.sum())
    return np.stack(rows)


def test_bag_is_the_centred_scaled_idf_mean_embedding_of_the_labelled_tokens(data, target_lm):
    train, queries = data
    model, tokenizer = target_lm
    bag = TokenBag.from_model(model, tokenizer, MAX_LENGTH)
    fitted = bag.fit_tokens(bag.read_tokens(train))
    np.testing.assert_array_equal(fitted, bag.encode(train))  # one pass == fit, then encode
    corpus = labelled_tokens(train, tokenizer)
    n = len(corpus)
    df = {t: sum(t in doc for doc in corpus) for t in range(bag.table.shape[0])}
    idf = {t: float(np.log(1 + (n - d + 0.5) / (d + 0.5))) for t, d in df.items()}
    np.testing.assert_allclose(bag.idf, [idf[t] for t in range(len(idf))], rtol=1e-6)
    raw = brute_force_bags(train, model, tokenizer, idf)
    np.testing.assert_allclose(fitted.mean(axis=0), 0.0, atol=1e-5)
    assert (fitted**2).sum(axis=1).mean() == pytest.approx(1.0, rel=1e-5)
    center = raw.mean(axis=0)
    scale = 1 / np.sqrt(((raw - center) ** 2).sum(axis=1).mean())
    expected = (brute_force_bags(queries, model, tokenizer, idf) - center) * scale
    np.testing.assert_allclose(bag.encode(queries), expected, rtol=1e-4, atol=1e-6)
    # The weight scales dot products by w.
    bag.weight = 4.0
    np.testing.assert_allclose(
        bag.encode(queries) @ bag.encode(train).T, 4.0 * expected @ fitted.T, rtol=1e-4, atol=1e-5
    )
    # Without idf weighting, the plain mean.
    plain = TokenBag.from_model(model, tokenizer, MAX_LENGTH, idf_weighted=False)
    plain.fit(train)
    ones = dict.fromkeys(idf, 1.0)
    raw = brute_force_bags(train, model, tokenizer, ones)
    expected = (brute_force_bags(queries, model, tokenizer, ones) - raw.mean(axis=0)) / np.sqrt(
        ((raw - raw.mean(axis=0)) ** 2).sum(axis=1).mean()
    )
    np.testing.assert_allclose(plain.encode(queries), expected, rtol=1e-4, atol=1e-6)


def test_a_query_past_the_cut_off_has_no_bag_and_a_stored_example_always_has_one(data, target_lm):
    train, queries = data
    model, tokenizer = target_lm
    lengths = np.asarray([len(t) for t in labelled_tokens(queries, tokenizer)])
    cut_off = int(np.median(lengths))
    bag = TokenBag.from_model(model, tokenizer, MAX_LENGTH, max_query_tokens=cut_off).fit(train)
    documents, as_queries = bag.encode(queries), bag.encode_queries(queries)
    long = lengths > cut_off
    assert long.any() and (~long).any()
    np.testing.assert_array_equal(as_queries[long], 0.0)
    np.testing.assert_array_equal(as_queries[~long], documents[~long])
    assert (np.abs(documents).sum(axis=1) > 0).all()
    uncut = TokenBag.from_model(model, tokenizer, MAX_LENGTH).fit(train)
    np.testing.assert_array_equal(uncut.encode_queries(queries), uncut.encode(queries))


def test_a_table_that_disagrees_with_the_tokenizer_names_the_example(data, target_lm):
    train, _ = data
    _, tokenizer = target_lm
    small = TokenBag(tokenizer, np.zeros((3, 4), np.float32), MAX_LENGTH)
    with pytest.raises(ValueError, match=f"example {train[0].example_id!r}: token id"):
        small.encode(train[:1])


def test_encoder_appends_its_bag_and_round_trips(data, target_lm, tmp_path):
    train, queries = data
    model, tokenizer = target_lm
    bag = TokenBag.from_model(model, tokenizer, MAX_LENGTH, max_query_tokens=6).fit(train)
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
    as_queries = encoder.encode_queries(queries)
    np.testing.assert_allclose(
        as_queries,
        np.concatenate(
            [encoder.encode([q.response for q in queries]), bag.encode_queries(queries)], 1
        ),
        atol=1e-6,
    )
    loaded = AirRepEncoder.from_pretrained(encoder.save(tmp_path / "encoder"))
    assert (tmp_path / "encoder" / TOKEN_BAG_DIR).is_dir()
    assert loaded.token_bag is not None and loaded.token_bag.weight == 2.0
    assert loaded.token_bag.max_query_tokens == 6 and loaded.token_bag.idf_weighted
    np.testing.assert_allclose(loaded.encode_examples(queries), embeddings, atol=1e-6)
    np.testing.assert_allclose(loaded.encode_queries(queries), as_queries, atol=1e-6)
    assert loaded.metadata()["token_bag_weight"] == 2.0


def test_a_bag_saved_before_idf_weighting_loads_as_the_plain_mean(data, target_lm, tmp_path):
    """Encoders trained by the previous release kept no idf and no cut-off."""
    train, queries = data
    model, tokenizer = target_lm
    plain = TokenBag.from_model(model, tokenizer, MAX_LENGTH, idf_weighted=False).fit(train)
    plain.save(tmp_path / "bag")
    tensors = load_file(str(tmp_path / "bag" / TABLE_FILE))
    save_file({k: v for k, v in tensors.items() if k != "idf"}, str(tmp_path / "bag" / TABLE_FILE))
    settings = json.loads((tmp_path / "bag" / SETTINGS_FILE).read_text())
    old = {k: v for k, v in settings.items() if k not in ("idf_weighted", "max_query_tokens")}
    (tmp_path / "bag" / SETTINGS_FILE).write_text(json.dumps(old))
    loaded = TokenBag.load(tmp_path / "bag")
    assert not loaded.idf_weighted and loaded.max_query_tokens == 0
    np.testing.assert_allclose(loaded.encode(queries), plain.encode(queries), atol=1e-6)


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
    bag = TokenBag.from_model(model, tokenizer, config.lexical.lm_max_length, max_query_tokens=3)
    tokens = bag.read_tokens([examples[i] for i in ids])
    bags = bag.fit_tokens(tokens)
    row = {i: k for k, i in enumerate(ids)}
    query_bags = bag.encode_tokens(tokens, queries=True)
    assert (query_bags != bags).any()  # some targets read more than 3 tokens
    choice = choose_hybrid_weights(
        embeddings, (bags, query_bags), ids, splits[2:], examples, config, tokenizer
    )
    grid = {k: v for k, v in choice.items() if k.startswith("w=")}
    assert len(grid) == 3 * 2
    best = max(grid.values())
    assert grid[f"w={choice['token_bag_weight']:g} λ={choice['lexical_weight']:g}"] == best
    # Brute force for w = 2, λ = 1 on the held-out split.
    split = splits[2]
    n = min(config.validation_max_targets, len(split.target_ids))
    pool = sorted({m for members in split.subset_members for m in members})
    full = np.concatenate([embeddings, np.sqrt(2.0) * bags], axis=1)
    targets = [examples[t] for t in split.target_ids[:n]]
    target_full = np.concatenate(
        [
            embeddings[[row[t] for t in split.target_ids[:n]]],
            np.sqrt(2.0) * bag.encode_queries(targets),
        ],
        axis=1,
    )
    dots = target_full @ full[[row[m] for m in pool]].T
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
        target_full,
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


def test_every_query_path_encodes_queries_with_the_cut_off(data, target_lm):
    """The evaluation's attributor and the store's index score queries (``encode_queries``: no bag
    past the cut-off) against stored rows (``encode_examples``: always a bag)."""
    train, queries = data
    model, tokenizer = target_lm
    cut_off = int(np.median([len(t) for t in labelled_tokens(queries, tokenizer)]))
    bag = TokenBag.from_model(model, tokenizer, MAX_LENGTH, max_query_tokens=cut_off).fit(train)
    encoder = AirRepEncoder.from_config(EncoderTrainConfig.preset("tiny"))
    encoder.token_bag = bag
    stored = encoder.encode_examples(train)
    expected = encoder.encode_queries(queries) @ stored.T
    assert not np.allclose(expected, encoder.encode_examples(queries) @ stored.T)
    attributor = AirRepAttributor(encoder, "attention", batch_size=8, hybrid=False)
    attributor.fit(train)
    np.testing.assert_allclose(attributor.score(queries), expected, rtol=1e-5, atol=1e-5)
    index = AttributionIndex(encoder, stored, [e.example_id for e in train])
    np.testing.assert_allclose(index.embed(queries) @ stored.T, expected, rtol=1e-5, atol=1e-5)
