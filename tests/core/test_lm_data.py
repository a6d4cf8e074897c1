"""Tokenisation with response-only labels, truncation, padding and length batching (lm.data)."""

from __future__ import annotations

import pytest
import torch
from lm_fixtures import CHATML_TEMPLATE, EOS_TOKEN, read_p3_pairs, train_tokenizer
from transformers import PreTrainedTokenizerFast

from airrep_core.data.examples import lm_prompt
from airrep_core.lm.data import (
    IGNORE_INDEX,
    TokenizedExample,
    collate,
    length_sorted_batches,
    tokenize_example,
)

NO_TRUNCATION = 100_000


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    """Real P3 pairs: long and short prompts, short and long responses, some empty responses."""
    return read_p3_pairs(40, 44)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer([f"{p} {r}" for p, r in read_p3_pairs(0, 30)])


@pytest.fixture(scope="module")
def chat_tokenizer() -> PreTrainedTokenizerFast:
    """ChatML template; the extra text teaches it a "\n\n\n" token (see the boundary test)."""
    texts = [f"{p} {r}" for p, r in read_p3_pairs(0, 30)] + ["a\n\n\n b"] * 20
    return train_tokenizer(texts, CHATML_TEMPLATE)


def split(example: TokenizedExample) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids), checking the labels' layout on the way."""
    n_prompt = example.num_prompt_tokens
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    assert example.response_mask == [False] * n_prompt + [True] * example.num_response_tokens
    return example.input_ids[:n_prompt], example.input_ids[n_prompt:]


def test_plain_format_masks_the_prompt_and_keeps_response_and_eos(tokenizer, pairs) -> None:
    for prompt, response in pairs:
        example = tokenize_example(tokenizer, prompt, response, NO_TRUNCATION)
        prompt_ids, response_ids = split(example)
        assert prompt_ids == tokenizer(lm_prompt(prompt))["input_ids"]
        assert response_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(response_ids[:-1]) == " " + response
        assert tokenizer.decode(example.input_ids) == lm_prompt(prompt) + " " + response + EOS_TOKEN


def test_chat_template_masks_the_rendered_prompt(chat_tokenizer, pairs) -> None:
    for prompt, response in pairs:
        example = tokenize_example(chat_tokenizer, prompt, response, NO_TRUNCATION)
        prompt_ids, response_ids = split(example)
        user_turn = [{"role": "user", "content": lm_prompt(prompt)}]
        rendered_prompt = chat_tokenizer.apply_chat_template(
            user_turn, tokenize=False, add_generation_prompt=True
        )
        assert rendered_prompt.endswith("<|im_start|>assistant\n")
        assert prompt_ids == chat_tokenizer(rendered_prompt, add_special_tokens=False)["input_ids"]
        assert chat_tokenizer.decode(response_ids) == response + "<|im_end|>" + EOS_TOKEN


def test_boundary_stays_exact_when_the_tokenizer_merges_across_it(chat_tokenizer) -> None:
    # The rendered prompt ends with "\n"; a response starting with "\n\n " makes "\n\n\n", which
    # the byte-level BPE tokenises as one token, so the prompt alone is no prefix of the whole.
    prompt, response = "Say hello.", "\n\n Hello"
    rendered_prompt = chat_tokenizer.apply_chat_template(
        [{"role": "user", "content": lm_prompt(prompt)}], tokenize=False, add_generation_prompt=True
    )
    alone = chat_tokenizer(rendered_prompt, add_special_tokens=False)["input_ids"]
    joint = chat_tokenizer(rendered_prompt + response, add_special_tokens=False)["input_ids"]
    assert joint[: len(alone)] != alone, "precondition: a merge across the boundary"

    prompt_ids, response_ids = split(tokenize_example(chat_tokenizer, prompt, response, 512))
    assert prompt_ids == alone
    assert chat_tokenizer.decode(response_ids) == response + "<|im_end|>" + EOS_TOKEN


def test_empty_response_still_has_a_response_token(tokenizer) -> None:
    prompt_ids, response_ids = split(tokenize_example(tokenizer, "Name a colour.", "", 512))
    assert response_ids[-1] == tokenizer.eos_token_id
    assert prompt_ids == tokenizer(lm_prompt("Name a colour."))["input_ids"]


@pytest.mark.parametrize("max_length", [2, 3, 8, 40, 120, 300])
def test_truncation_keeps_a_window_around_the_boundary(tokenizer, pairs, max_length) -> None:
    for prompt, response in pairs:
        full_prompt, full_response = split(
            tokenize_example(tokenizer, prompt, response, NO_TRUNCATION)
        )
        example = tokenize_example(tokenizer, prompt, response, max_length)
        prompt_ids, response_ids = split(example)
        assert len(example) == min(max_length, len(full_prompt) + len(full_response))
        assert len(prompt_ids) >= 1 and len(response_ids) >= 1
        # The prompt loses its head, the response its tail: a contiguous window.
        assert prompt_ids == full_prompt[len(full_prompt) - len(prompt_ids) :]
        assert response_ids == full_response[: len(response_ids)]
        # The rule: the response keeps max(1, max_length - n_prompt) tokens (all if they fit).
        assert len(response_ids) == min(len(full_response), max(1, max_length - len(full_prompt)))


def test_truncation_cases_by_hand(tokenizer) -> None:
    prompt, response = "What is two plus two?", "Four, as everybody knows."
    full_prompt, full_response = split(tokenize_example(tokenizer, prompt, response, NO_TRUNCATION))
    n_prompt, n_total = len(full_prompt), len(full_prompt) + len(full_response)

    fits = tokenize_example(tokenizer, prompt, response, n_total)
    assert split(fits) == (full_prompt, full_response)

    short_response = split(tokenize_example(tokenizer, prompt, response, n_prompt + 2))
    assert short_response == (full_prompt, full_response[:2])

    prompt_too_long = split(tokenize_example(tokenizer, prompt, response, n_prompt))
    assert prompt_too_long == (full_prompt[1:], full_response[:1])


def test_bad_inputs_are_rejected(tokenizer) -> None:
    with pytest.raises(ValueError, match="max_length=1"):
        tokenize_example(tokenizer, "p", "r", 1)
    with pytest.raises(TypeError, match="must be str"):
        tokenize_example(tokenizer, "p", None, 10)
    no_eos = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="no EOS token"):
        tokenize_example(no_eos, "p", "r", 10)


def test_collate_right_pads_and_round_trips(tokenizer, pairs) -> None:
    examples = [tokenize_example(tokenizer, p, r, 64) for p, r in pairs[:5]]
    batch = collate(examples, pad_id=tokenizer.pad_token_id)
    width = max(len(e) for e in examples)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (5, width),
        "attention_mask": (5, width),
        "labels": (5, width),
    }
    assert all(v.dtype == torch.long for v in batch.values())
    for row, example in enumerate(examples):
        n = len(example)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"][row].tolist() == example.input_ids + [tokenizer.pad_token_id] * (
            width - n
        )
        assert batch["labels"][row].tolist() == example.labels + [IGNORE_INDEX] * (width - n)
    with pytest.raises(ValueError, match="empty"):
        collate([], pad_id=0)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 100])
def test_length_sorted_batches_cover_every_index_longest_first(batch_size) -> None:
    lengths = [5, 9, 2, 9, 7, 1, 5, 5, 3, 8]
    batches = length_sorted_batches(lengths, batch_size)
    order = [index for batch in batches for index in batch]
    assert sorted(order) == list(range(len(lengths)))
    assert all(len(batch) == batch_size for batch in batches[:-1])
    assert 1 <= len(batches[-1]) <= batch_size
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    assert order == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))  # ties stable
    assert length_sorted_batches([], batch_size) == []


def test_length_sorted_batches_rejects_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        length_sorted_batches([1, 2], 0)
