"""Fine-tuning one subset and evaluating targets: same start for every subset, exact losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from airrep_core.config.labels import FinetuneConfig
from airrep_core.data.examples import Example
from airrep_core.lm.base_model import BaseModelReport
from airrep_core.lm.data import collate
from airrep_core.lm.finetune import SubsetFinetuner, lr_multiplier, response_token_loss
from airrep_core.lm.loss import TransformersLossBackend, tokenize_pairs

CONFIG = FinetuneConfig.preset("tiny")
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_dir(built: tuple[Path, BaseModelReport]) -> Path:
    """The directory of the ``tiny`` base LM (``conftest.built``)."""
    return built[0]


@pytest.fixture(scope="module")
def finetuner(base_dir: Path) -> SubsetFinetuner:
    return SubsetFinetuner(base_dir, CONFIG)


def subsets(examples: list[Example]) -> tuple[list[Example], list[Example], list[Example]]:
    """Two disjoint subsets of 8 and 10 targets from other templates."""
    return examples[0:64:8], examples[1:64:8], examples[100:240:14]


def test_response_token_loss_equals_the_models_own_loss_and_gradient(
    finetuner: SubsetFinetuner, corpus: list[Example]
) -> None:
    model = finetuner.model
    pairs = [(e.prompt, e.response) for e in corpus[:6]]
    batch = collate(tokenize_pairs(finetuner.tokenizer, pairs, CONFIG.max_length), finetuner.pad_id)
    ours, n_tokens = response_token_loss(model, batch, CPU, "float32")
    (ours_grad,) = torch.autograd.grad(ours, [model.model.layers[0].mlp.up_proj.weight])
    reference = model(**batch).loss
    (reference_grad,) = torch.autograd.grad(reference, [model.model.layers[0].mlp.up_proj.weight])
    assert n_tokens == int((batch["labels"][:, 1:] != -100).sum())
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), abs=1e-5)
    torch.testing.assert_close(ours_grad, reference_grad, atol=1e-6, rtol=1e-4)


def test_every_subset_starts_from_the_same_weights_and_seed(
    finetuner: SubsetFinetuner, base_dir: Path, corpus: list[Example]
) -> None:
    first, second, targets = subsets(corpus)
    losses_first, stats = finetuner.run(first, targets)
    losses_second, _ = finetuner.run(second, targets)
    again, _ = finetuner.run(first, targets)
    fresh, _ = SubsetFinetuner(base_dir, CONFIG).run(first, targets)
    assert losses_first.dtype == np.float32 and losses_first.shape == (len(targets),)
    np.testing.assert_array_equal(again, losses_first)
    np.testing.assert_array_equal(fresh, losses_first)
    assert np.abs(losses_second - losses_first).max() > 1e-3  # the data is what differs
    assert stats.steps == CONFIG.epochs * 2 and stats.response_tokens > 0


def test_fine_tuning_lowers_the_subsets_own_loss(
    finetuner: SubsetFinetuner, corpus: list[Example]
) -> None:
    first, _, _ = subsets(corpus)
    finetuner.reset()
    before = finetuner.target_losses(first)
    finetuner.train(first)
    after = finetuner.target_losses(first)
    assert after.mean() < before.mean() - 0.1


def test_in_process_losses_equal_the_loss_backend_on_the_saved_model(
    finetuner: SubsetFinetuner, corpus: list[Example], tmp_path: Path
) -> None:
    first, _, targets = subsets(corpus)
    finetuner.train(first)
    in_process = finetuner.target_losses(targets)
    finetuner.model.save_pretrained(tmp_path)
    finetuner.tokenizer.save_pretrained(tmp_path)
    backend = TransformersLossBackend(batch_size=3, max_length=CONFIG.max_length, device="cpu")
    saved = backend.response_losses(tmp_path, [(e.prompt, e.response) for e in targets])
    np.testing.assert_allclose(in_process, saved, atol=1e-5)


def test_bf16_evaluation_is_close_to_float32(
    finetuner: SubsetFinetuner, corpus: list[Example]
) -> None:
    first, _, targets = subsets(corpus)
    finetuner.train(first)
    fp32 = finetuner.target_losses(targets)
    bf16 = finetuner.target_losses(targets, precision="bf16")
    assert np.abs(bf16 - fp32).max() < 0.05


def test_lora_trains_only_the_adapter_and_restarts_identically(
    base_dir: Path, corpus: list[Example]
) -> None:
    config = CONFIG.replace(method="lora", lora_rank=4, learning_rate=1e-2)
    lora = SubsetFinetuner(base_dir, config)
    trainable = {n for n, p in lora.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    frozen = {
        n: p.detach().clone() for n, p in lora.model.named_parameters() if not p.requires_grad
    }
    first, second, targets = subsets(corpus)
    losses_first, _ = lora.run(first, targets)
    lora.run(second, targets)
    again, _ = lora.run(first, targets)
    np.testing.assert_array_equal(again, losses_first)
    assert all(torch.equal(p, frozen[n]) for n, p in lora.model.named_parameters() if n in frozen)
    lora.reset()  # LoRA B starts at zero: the reset model is the base model
    base_losses = SubsetFinetuner(base_dir, CONFIG).target_losses(targets)
    np.testing.assert_allclose(lora.target_losses(targets), base_losses, atol=1e-5)
    assert np.abs(losses_first - base_losses).max() > 1e-3


def test_learning_rate_schedules() -> None:
    config = CONFIG.replace(warmup_ratio=0.2, lr_schedule="linear")
    values = [lr_multiplier(step, 10, config) for step in range(10)]
    assert values[:2] == [0.5, 1.0]
    assert values[2:] == pytest.approx([1 - k / 8 for k in range(8)])
    cosine = CONFIG.replace(lr_schedule="cosine")
    assert lr_multiplier(0, 10, cosine) == 1.0 and lr_multiplier(5, 10, cosine) == pytest.approx(
        0.5
    )
    assert lr_multiplier(7, 10, CONFIG) == 1.0
