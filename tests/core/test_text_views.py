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
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.config.labels import FinetuneConfig
from airrep_core.data.examples import encoder_text, view_text
from airrep_core.encoder.model import LEXICAL_TOKENIZER_DIR, AirRepEncoder
from airrep_core.errors import ConfigError
from airrep_core.lm.data import IGNORE_INDEX, tokenize_example
from airrep_core.lm.tokenizer import train_bpe_tokenizer
from airrep_core.methods import build_method
from airrep_core.methods.airrep import AirRepAttributor
from airrep_core.methods.lexical import Bm25Attributor


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
        lexical=Bm25ResponseConfig(),
        lexical_tokenizer=tokenizer,
        lexical_weight=2.0,
    )
    directory = encoder.save(tmp_path / "encoder")
    assert (directory / LEXICAL_TOKENIZER_DIR).is_dir()
    loaded = AirRepEncoder.from_pretrained(directory)
    assert (
        loaded.text_view == "response"
        and loaded.lexical.to_dict() == Bm25ResponseConfig().to_dict()
    )
    assert loaded.lexical_tokenizer("a B 7")["input_ids"] == tokenizer("a B 7")["input_ids"]
    # The encoder reads the response alone, for queries and pool alike.
    np.testing.assert_allclose(
        loaded.encode_examples(queries), loaded.encode([q.response for q in queries]), atol=1e-6
    )
    hybrid = AirRepAttributor(loaded, "attention", batch_size=8)
    hybrid.fit(pool)
    dots = loaded.encode_examples(queries) @ loaded.encode_examples(pool).T
    bm25 = Bm25Attributor(Bm25ResponseConfig(), tokenizer=tokenizer)
    bm25.fit(pool)
    # A constant BM25 row (a query sharing no token with the pool) z-scores to 0.
    expected = scipy.stats.zscore(dots, axis=1) + 2.0 * np.nan_to_num(
        scipy.stats.zscore(bm25.score(queries), axis=1)
    )
    np.testing.assert_allclose(hybrid.score(queries), expected, atol=1e-4)
