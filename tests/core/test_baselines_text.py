"""The attribution interface and the text baselines (TF-IDF, BM25, off-the-shelf MiniLM)."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest
from baseline_fixtures import train_and_query_examples
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from airrep_core.config.base import PRESET_NAMES
from airrep_core.config.baselines import (
    Bm25Config,
    GradDotConfig,
    LograConfig,
    TfidfConfig,
)
from airrep_core.data.examples import encoder_text
from airrep_core.errors import ConfigError
from airrep_core.methods import (
    ALL_METHODS,
    BASELINE_CONFIGS,
    Bm25Attributor,
    NotFittedError,
    TfidfAttributor,
    build_method,
    method_spec,
)
from airrep_core.methods.interface import sum_group_scores


@pytest.fixture(scope="module")
def data():
    return train_and_query_examples(n_train=30, n_query=8)


def test_group_score_is_the_sum_over_each_subset(data):
    train, queries = data
    attributor = TfidfAttributor()
    attributor.fit(train)
    scores = attributor.score(queries)
    rng = np.random.default_rng(0)
    subsets = [rng.choice(len(train), size=size, replace=False) for size in (1, 5, 12, 30)]
    subsets.append(np.array([], dtype=np.int64))
    expected = np.zeros((len(queries), len(subsets)))
    for q in range(len(queries)):
        for j, subset in enumerate(subsets):
            for i in subset:
                expected[q, j] += scores[q, i]
    got = attributor.group_score(scores, subsets)
    assert got.shape == (len(queries), len(subsets)) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_group_score_rejects_bad_subsets():
    scores = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"subsets\[1\].*outside \[0, 4\)"):
        sum_group_scores(scores, [np.array([0, 1]), np.array([3, 4])])
    with pytest.raises(TypeError, match=r"subsets\[0\].*integer"):
        sum_group_scores(scores, [np.array([0.5])])


def test_score_before_fit_and_bad_inputs_are_clear_errors(data):
    train, _ = data
    attributor = TfidfAttributor()
    with pytest.raises(NotFittedError, match="before fit"):
        attributor.score(train[:1])
    with pytest.raises(ValueError, match="train is empty"):
        attributor.fit([])
    with pytest.raises(TypeError, match=r"train\[1\] is a str"):
        attributor.fit([train[0], "not an example"])


def test_tfidf_equals_direct_sklearn_cosine(data):
    train, queries = data
    attributor = TfidfAttributor(TfidfConfig.preset("tiny"))
    attributor.fit(train)
    got = attributor.score(queries)
    vectorizer = TfidfVectorizer()
    train_matrix = vectorizer.fit_transform([encoder_text(e.prompt, e.response) for e in train])
    query_matrix = vectorizer.transform([encoder_text(e.prompt, e.response) for e in queries])
    expected = cosine_similarity(query_matrix, train_matrix)
    assert got.shape == (len(queries), len(train)) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert attributor.storage_floats_per_example == pytest.approx(train_matrix.nnz / len(train))


def test_bm25_equals_bm25s_retrieval_and_ranks_a_duplicate_first(data):
    train, queries = data
    attributor = Bm25Attributor(Bm25Config.preset("tiny"))
    attributor.fit(train)
    probes = [*queries, *train[:4]]
    got = attributor.score(probes)
    assert got.shape == (len(probes), len(train)) and got.dtype == np.float32
    # bm25s's own retrieval API over the same tokens returns the same top documents and scores.
    texts = [encoder_text(e.prompt, e.response) for e in train]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    query_tokens = bm25s.tokenize(
        [encoder_text(e.prompt, e.response) for e in probes], stopwords="en", show_progress=False
    )
    documents, scores = retriever.retrieve(query_tokens, k=5, show_progress=False)
    for row in range(len(probes)):
        np.testing.assert_allclose(got[row, documents[row]], scores[row], rtol=1e-5)
        assert np.sort(got[row])[::-1][:5] == pytest.approx(scores[row], rel=1e-5)
    # A training example used as its own query is its best match.
    for i in range(4):
        assert int(np.argmax(got[len(queries) + i])) == i


def test_lexical_scores_are_deterministic_and_order_equivariant(data):
    train, queries = data
    first, second = TfidfAttributor(), TfidfAttributor()
    first.fit(train)
    second.fit(train)
    np.testing.assert_array_equal(first.score(queries), second.score(queries))
    reversed_scores = first.score(queries[::-1])
    np.testing.assert_allclose(reversed_scores[::-1], first.score(queries), rtol=1e-6)


def test_every_baseline_has_one_config_class():
    assert set(BASELINE_CONFIGS) == {m for m in ALL_METHODS if method_spec(m).needs != "encoder"}


@pytest.mark.parametrize("config_class", BASELINE_CONFIGS.values(), ids=BASELINE_CONFIGS.keys())
def test_every_config_has_valid_presets_that_round_trip(config_class):
    for name in PRESET_NAMES:
        config = config_class.preset(name)
        assert config_class.from_dict(config.to_dict()) == config


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="projection_in/projection_out"):
        GradDotConfig(projection_in=0, projection_out=8)
    with pytest.raises(ConfigError, match="damping"):
        LograConfig(damping=0.0)
    with pytest.raises(ConfigError, match="method"):
        Bm25Config(method="okapi-ish")


def test_paper_logra_dimension_is_the_papers_18432_at_qwen25_05b():
    # Qwen2.5-0.5B: 24 blocks, 3 MLP linears each; 16 x 16 per layer.
    config = LograConfig.preset("paper")
    assert 24 * len(config.module_suffixes) * config.projection_in * config.projection_out == 18_432


def test_build_method_rejects_unknown_methods_and_missing_inputs():
    assert ALL_METHODS == (
        "airrep", "airrep_mean", "encoder", "tfidf", "bm25", "bm25_response", "rds", "grad_dot",
        "logra", "trak",
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown"):
        build_method("influence")
    with pytest.raises(ValueError, match="needs the target LM"):
        build_method("logra", "tiny")
    with pytest.raises(ValueError, match="needs the trained AirRep encoder"):
        build_method("airrep")


def test_off_the_shelf_minilm_is_cosine_of_its_embeddings(data):
    train, queries = data
    attributor = build_method("encoder", "tiny")
    attributor.fit(train[:10])
    got = attributor.score([*queries[:3], train[0]])
    embeddings = attributor.encoder.encode_examples([*queries[:3], train[0], *train[:10]])
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = embeddings[:4] @ embeddings[4:].T
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got[3, 0] == pytest.approx(1.0, abs=1e-5)
    assert attributor.storage_floats_per_example == 384
