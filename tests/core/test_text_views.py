"""The response view and BM25 over the target LM's tokens (the label-efficient recipe's text,
DESIGN.md §2): what each reads, equivalence with a hand-built bm25s index, and the hybrid
encoder that carries its lexical settings and tokenizer through a save and a load."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest
import scipy.stats
from baseline_fixtures import train_and_query_examples
from p3_fixtures import p3_examples

from airrep_core.config.base import TEXT_VIEWS
from airrep_core.config.baselines import Bm25Config, Bm25ResponseConfig
from airrep_core.config.encoder import LEXICAL_NGRAM_WEIGHTS, EncoderTrainConfig
from airrep_core.config.labels import FinetuneConfig
from airrep_core.data.examples import encoder_text, view_text
from airrep_core.encoder.model import LEXICAL_TOKENIZER_DIR, AirRepEncoder
from airrep_core.errors import ConfigError
from airrep_core.lm.data import IGNORE_INDEX, tokenize_example
from airrep_core.lm.tokenizer import train_bpe_tokenizer
from airrep_core.methods import build_method
from airrep_core.methods.airrep import AirRepAttributor
from airrep_core.methods.lexical import Bm25Attributor

NGRAM_LEXICAL = Bm25ResponseConfig(ngram_weights=LEXICAL_NGRAM_WEIGHTS)


@pytest.fixture(scope="module")
def data():
    return train_and_query_examples(n_train=30, n_query=8)


@pytest.fixture(scope="module")
def tokenizer(data):
    """The project's byte-level BPE, trained on the examples (as the scratch target LM's is)."""
    train, queries = data
    return train_bpe_tokenizer((f"{e.prompt} {e.response}" for e in train + queries), 512)


def test_view_text_reads_the_paper_text_or_the_response_alone(data):
    example = data[0][0]
    assert view_text(example, "question_answer", 5) == encoder_text(
        example.prompt, example.response, 5
    )
    assert view_text(example, "response") == example.response
    with pytest.raises(ValueError, match="view='prompt'"):
        view_text(example, "prompt")
    with pytest.raises(ConfigError, match="view"):
        Bm25Config(view="prompt")
    with pytest.raises(ConfigError, match="text_view"):
        EncoderTrainConfig(text_view="prompt")
    assert set(TEXT_VIEWS) == {"question_answer", "response"}


def test_bm25_over_target_lm_tokens_equals_bm25s_over_the_tokenizer_pieces(data, tokenizer):
    train, queries = data
    attributor = Bm25Attributor(Bm25ResponseConfig(lm_max_length=0), tokenizer=tokenizer)
    attributor.fit(train)
    pieces = [
        tokenizer.convert_ids_to_tokens(
            tokenizer(f" {e.response}", add_special_tokens=False)["input_ids"]
        )
        for e in [*train, *queries]
    ]
    index = bm25s.BM25(k1=1.5, b=0.75, method="lucene", backend="numpy")
    index.index(pieces[: len(train)], show_progress=False)
    expected = np.stack(
        [index.get_scores([t for t in q if t in index.vocab_dict]) for q in pieces[len(train) :]]
    )
    np.testing.assert_allclose(attributor.score(queries), expected, rtol=1e-5, atol=1e-6)
    # Case and digits survive (the words tokenizer lowercases and drops 1-character words).
    assert any(any(c.isupper() or c.isdigit() for c in p) for row in pieces for p in row)
    with pytest.raises(ValueError, match="tokenizer="):
        Bm25Attributor(Bm25ResponseConfig())


def bm25s_scores(documents: list[list[str]], queries: list[list[str]]) -> np.ndarray:
    """``(n_query, n_doc)`` bm25s scores (the library's defaults: lucene, k1 1.5, b 0.75)."""
    index = bm25s.BM25(k1=1.5, b=0.75, method="lucene", backend="numpy")
    index.index(documents, show_progress=False)
    known = [[t for t in q if t in index.vocab_dict] for q in queries]
    return np.stack([index.get_scores(k) if k else np.zeros(len(documents)) for k in known])


@pytest.mark.parametrize("max_length", [12, 4096])
def test_bm25_reads_exactly_the_response_tokens_the_target_lm_is_trained_on(
    data, tokenizer, max_length
):
    """With ``lm_max_length`` the terms are the labelled tokens of ``tokenize_example``: the
    response after the LM's prompt format, its EOS, and nothing the truncation cut."""
    train, queries = data
    config = Bm25ResponseConfig(lm_max_length=max_length)
    attributor = Bm25Attributor(config, tokenizer=tokenizer)
    attributor.fit(train)
    labelled = [
        tokenizer.convert_ids_to_tokens(
            [
                label
                for label in tokenize_example(tokenizer, e.prompt, e.response, max_length).labels
                if label != IGNORE_INDEX
            ]
        )
        for e in [*train, *queries]
    ]
    expected = bm25s_scores(labelled[: len(train)], labelled[len(train) :])
    np.testing.assert_allclose(attributor.score(queries), expected, rtol=1e-5, atol=1e-6)
    # At 12 tokens the truncation cuts some responses (they lose their EOS), at 4096 none.
    assert any(row[-1] != tokenizer.eos_token for row in labelled) == (max_length == 12)
    with pytest.raises(ConfigError, match="lm_max_length"):
        Bm25Config(lm_max_length=64)  # words: the LM's truncation does not apply


def test_bm25_response_is_a_target_lm_baseline_and_teacher(data, tokenizer):
    train, queries = data
    with pytest.raises(ValueError, match="needs the target LM"):
        build_method("bm25_response", "tiny")
    built = build_method("bm25_response", "tiny", model=object(), tokenizer=tokenizer)
    # The preset reads what the tiny labels' fine-tuning reads (64 tokens).
    assert (
        Bm25ResponseConfig.preset("tiny").lm_max_length == FinetuneConfig.preset("tiny").max_length
    )
    direct = Bm25Attributor(Bm25ResponseConfig(lm_max_length=64), tokenizer=tokenizer)
    built.fit(train)
    direct.fit(train)
    np.testing.assert_array_equal(built.score(queries), direct.score(queries))


def test_response_view_hybrid_encoder_round_trips_with_its_tokenizer(tmp_path, tokenizer):
    examples = list(p3_examples(4))
    queries, pool = examples[:4], examples[4:]
    encoder = AirRepEncoder.from_backbone(
        "all-MiniLM-L6-v2",
        max_length=96,
        projection_init="identity",
        normalize=True,
        text_view="response",
        lexical=NGRAM_LEXICAL,
        lexical_tokenizer=tokenizer,
        lexical_weight=2.0,
    )
    directory = encoder.save(tmp_path / "encoder")
    assert (directory / LEXICAL_TOKENIZER_DIR).is_dir()
    loaded = AirRepEncoder.from_pretrained(directory)
    assert loaded.text_view == "response" and loaded.lexical.to_dict() == NGRAM_LEXICAL.to_dict()
    assert loaded.lexical_tokenizer("a B 7")["input_ids"] == tokenizer("a B 7")["input_ids"]
    # The encoder reads the response alone, for queries and pool alike.
    np.testing.assert_allclose(
        loaded.encode_examples(queries), loaded.encode([q.response for q in queries]), atol=1e-6
    )
    hybrid = AirRepAttributor(loaded, "attention", batch_size=8)
    hybrid.fit(pool)
    dots = loaded.encode_examples(queries) @ loaded.encode_examples(pool).T
    bm25 = Bm25Attributor(NGRAM_LEXICAL, tokenizer=tokenizer)
    bm25.fit(pool)
    # A constant BM25 row (a query sharing no token with the pool) z-scores to 0.
    expected = scipy.stats.zscore(dots, axis=1) + 2.0 * np.nan_to_num(
        scipy.stats.zscore(bm25.score(queries), axis=1)
    )
    np.testing.assert_allclose(hybrid.score(queries), expected, atol=1e-4)


def labelled_pieces(tokenizer, examples, max_length: int) -> list[list[str]]:
    """Each example's labelled tokens under ``tokenize_example`` (what the LM reads), as pieces."""
    return [
        tokenizer.convert_ids_to_tokens(
            [
                label
                for label in tokenize_example(tokenizer, e.prompt, e.response, max_length).labels
                if label != IGNORE_INDEX
            ]
        )
        for e in examples
    ]


def grams(pieces: list[str], order: int) -> list[str]:
    """The order-grams of ``pieces`` as the repr of a tuple (independent of ``ngram_terms``)."""
    return [repr(tuple(pieces[k : k + order])) for k in range(len(pieces) - order + 1)]


def test_ngram_bm25_is_the_weighted_sum_of_per_order_zscored_bm25s(data, tokenizer):
    """Several orders: Σ_n a_n · z(BM25 over n-grams), z per query (scipy) over the documents."""
    train, queries = data
    weights = (1.0, 0.0, 0.5)  # a zero order is not indexed
    attributor = Bm25Attributor(
        Bm25ResponseConfig(lm_max_length=4096, ngram_weights=weights), tokenizer=tokenizer
    )
    attributor.fit(train)
    pieces = labelled_pieces(tokenizer, [*train, *queries], 4096)
    expected = np.zeros((len(queries), len(train)))
    for order, weight in ((1, 1.0), (3, 0.5)):
        documents = [grams(p, order) for p in pieces]
        raw = bm25s_scores(documents[: len(train)], documents[len(train) :])
        expected += weight * np.nan_to_num(scipy.stats.zscore(raw, axis=1))
    np.testing.assert_allclose(attributor.score(queries), expected, rtol=1e-4, atol=1e-4)
    distinct = [len(set(grams(p, 1))) + len(set(grams(p, 3))) for p in pieces[: len(train)]]
    assert attributor.storage_floats_per_example == pytest.approx(np.mean(distinct))


def test_one_ngram_order_scores_plain_bm25_over_its_ngrams(data, tokenizer):
    """A single order keeps BM25's own scale (the ``bm25_response`` baseline is order 1 alone);
    an order longer than every document scores 0."""
    train, queries = data
    pieces = labelled_pieces(tokenizer, [*train, *queries], 4096)
    bigrams = Bm25Attributor(
        Bm25ResponseConfig(lm_max_length=4096, ngram_weights=(0.0, 3.0)), tokenizer=tokenizer
    )
    bigrams.fit(train)
    documents = [grams(p, 2) for p in pieces]
    expected = bm25s_scores(documents[: len(train)], documents[len(train) :])
    np.testing.assert_allclose(bigrams.score(queries), expected, rtol=1e-5, atol=1e-6)
    longest = max(len(p) for p in pieces)
    beyond = Bm25Attributor(
        Bm25ResponseConfig(lm_max_length=4096, ngram_weights=(0.0,) * longest + (1.0,)),
        tokenizer=tokenizer,
    )
    beyond.fit(train)
    np.testing.assert_array_equal(beyond.score(queries), 0.0)


@pytest.mark.parametrize("weights", [(), (0.0, 0.0), (1.0, -0.5)])
def test_ngram_weights_need_a_positive_order_and_no_negative_one(weights):
    with pytest.raises(ConfigError, match="ngram_weights"):
        Bm25ResponseConfig(ngram_weights=weights)


@pytest.mark.parametrize("preset", ["tiny", "mini"])
def test_the_recipe_lexical_term_is_bm25_response_with_ngrams(preset):
    """``bm25_response`` is the unigram part of the hybrid's lexical term, at every preset."""
    lexical = EncoderTrainConfig.preset(preset).lexical
    assert lexical.ngram_weights == LEXICAL_NGRAM_WEIGHTS
    assert lexical.to_dict() == {
        **Bm25ResponseConfig.preset(preset).to_dict(),
        "ngram_weights": list(LEXICAL_NGRAM_WEIGHTS),
    }
