"""The transformers loss backend: response-token cross-entropy, batching and order invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lm_fixtures import tiny_lm  # noqa: F401  (session fixture)

from airrep_core.lm.data import tokenize_example
from airrep_core.lm.loading import load_causal_lm
from airrep_core.lm.loss import TransformersLossBackend, response_losses_for_model

MAX_LENGTH = 192  # shorter than several P3 examples: truncation is exercised too
ATOL = 2e-5


def brute_force_losses(model, tokenizer, pairs, max_length) -> np.ndarray:
    """One example at a time, one response token at a time: −(logit − logsumexp), averaged."""
    losses = []
    with torch.no_grad():
        for prompt, response in pairs:
            example = tokenize_example(tokenizer, prompt, response, max_length)
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0].double()
            token_losses = [
                -(logits[t - 1, example.input_ids[t]] - torch.logsumexp(logits[t - 1], dim=0))
                for t in range(len(example))
                if example.response_mask[t]
            ]
            losses.append(torch.stack(token_losses).mean().item())
    return np.asarray(losses)


@pytest.mark.parametrize("with_adapter", [False, True], ids=["full", "lora"])
def test_backend_equals_a_per_token_loop(tiny_lm, with_adapter) -> None:  # noqa: F811
    adapter_dir = tiny_lm.adapter_dir if with_adapter else None
    losses = TransformersLossBackend(
        batch_size=4, max_length=MAX_LENGTH, device="cpu"
    ).response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=adapter_dir)
    assert losses.shape == (len(tiny_lm.eval_pairs),) and losses.dtype == np.float32
    model, tokenizer = load_causal_lm(tiny_lm.model_dir, adapter_dir=adapter_dir, device="cpu")
    expected = brute_force_losses(model, tokenizer, tiny_lm.eval_pairs, MAX_LENGTH)
    np.testing.assert_allclose(losses, expected, rtol=0, atol=ATOL)


def test_batched_equals_one_at_a_time_and_order_is_restored(tiny_lm) -> None:  # noqa: F811
    pairs = list(tiny_lm.eval_pairs)
    model, tokenizer = load_causal_lm(tiny_lm.model_dir, device="cpu")
    one_at_a_time = response_losses_for_model(model, tokenizer, pairs, 1, MAX_LENGTH)
    batched = response_losses_for_model(model, tokenizer, pairs, 7, MAX_LENGTH)
    np.testing.assert_allclose(batched, one_at_a_time, rtol=0, atol=ATOL)

    permutation = np.random.default_rng(0).permutation(len(pairs))
    permuted = response_losses_for_model(
        model, tokenizer, [pairs[i] for i in permutation], 7, MAX_LENGTH
    )
    np.testing.assert_allclose(permuted, batched[permutation], rtol=0, atol=ATOL)


def test_loaded_model_function_keeps_train_mode_and_matches_the_backend(tiny_lm) -> None:  # noqa: F811
    model, tokenizer = load_causal_lm(
        tiny_lm.model_dir, adapter_dir=tiny_lm.adapter_dir, device="cpu"
    )
    model.train()
    in_process = response_losses_for_model(model, tokenizer, tiny_lm.eval_pairs, 5, MAX_LENGTH)
    assert model.training
    from_disk = TransformersLossBackend(5, MAX_LENGTH, device="cpu").response_losses(
        tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=tiny_lm.adapter_dir
    )
    np.testing.assert_array_equal(in_process, from_disk)


def test_adapter_changes_the_losses_as_its_merge_does(tiny_lm) -> None:  # noqa: F811
    backend = TransformersLossBackend(8, MAX_LENGTH, device="cpu")
    base = backend.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs)
    adapted = backend.response_losses(
        tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=tiny_lm.adapter_dir
    )
    merged = backend.response_losses(tiny_lm.merged_dir, tiny_lm.eval_pairs)
    assert np.abs(adapted - base).max() > 0.1, "the test adapter must change the model"
    np.testing.assert_allclose(adapted, merged, rtol=0, atol=1e-4)


def test_bfloat16_weights_stay_close_to_float32(tiny_lm) -> None:  # noqa: F811
    full = TransformersLossBackend(8, MAX_LENGTH, device="cpu").response_losses(
        tiny_lm.model_dir, tiny_lm.eval_pairs
    )
    half = TransformersLossBackend(8, MAX_LENGTH, device="cpu", dtype="bfloat16").response_losses(
        tiny_lm.model_dir, tiny_lm.eval_pairs
    )
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, rtol=0.02, atol=0.05)


def test_empty_input_gives_an_empty_array(tiny_lm) -> None:  # noqa: F811
    losses = TransformersLossBackend(4, MAX_LENGTH, device="cpu").response_losses(
        tiny_lm.model_dir, []
    )
    assert losses.shape == (0,) and losses.dtype == np.float32


def test_bad_arguments_are_named(tiny_lm, tmp_path) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="batch_size=0"):
        TransformersLossBackend(0, MAX_LENGTH)
    with pytest.raises(ValueError, match="dtype='float64'"):
        TransformersLossBackend(4, MAX_LENGTH, dtype="float64")
    with pytest.raises(ValueError, match="device='tpu0'"):
        TransformersLossBackend(4, MAX_LENGTH, device="tpu0")
    backend = TransformersLossBackend(4, MAX_LENGTH, device="cpu")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        backend.response_losses(tmp_path, tiny_lm.eval_pairs)
    with pytest.raises(FileNotFoundError, match=r"no adapter_config\.json"):
        backend.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=tmp_path)
    with pytest.raises(TypeError, match=r"examples\[1\]"):
        backend.response_losses(tiny_lm.model_dir, [("p", "r"), ("only a prompt",)])
