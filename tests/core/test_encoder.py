"""AirRepEncoder: encode invariances, save/load round trip, projection modes (DESIGN.md §2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from encoder_fixtures import PER_TEMPLATE
from p3_fixtures import p3_examples

from airrep_core.data.examples import encoder_text
from airrep_core.encoder.model import ENCODER_CONFIG_FILE, AirRepEncoder, resolve_backbone

MAX_LENGTH = 128


@pytest.fixture(scope="module")
def encoder() -> AirRepEncoder:
    return AirRepEncoder.from_backbone(max_length=MAX_LENGTH, projection_seed=7)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    # Real P3 examples of very different lengths (some truncated at MAX_LENGTH tokens).
    return [encoder_text(e.prompt, e.response) for e in p3_examples(PER_TEMPLATE)[::45]][:8]


def test_encode_is_invariant_to_batch_size_and_input_order(encoder, texts):
    reference = encoder.encode(texts, batch_size=len(texts))
    assert reference.dtype == np.float32 and reference.shape == (len(texts), encoder.dim)
    lengths = {len(ids) for ids in encoder.tokenize(texts)}
    assert len(lengths) > 3 and max(lengths) == MAX_LENGTH  # padding and truncation both occur
    for batch_size in (1, 3):
        np.testing.assert_allclose(encoder.encode(texts, batch_size), reference, atol=2e-5)
    np.testing.assert_allclose(encoder.encode(texts, 3, sort_by_length=False), reference, atol=2e-5)
    permutation = np.random.default_rng(0).permutation(len(texts))
    shuffled = encoder.encode([texts[i] for i in permutation], batch_size=3)
    np.testing.assert_allclose(shuffled, reference[permutation], atol=2e-5)


def test_projection_is_seeded_linear_on_the_mean_pooled_backbone(encoder, texts):
    plain = AirRepEncoder.from_backbone(max_length=MAX_LENGTH, projection=False)
    pooled = plain.encode(texts[:4])
    # The off-the-shelf baseline = masked mean of the backbone's last hidden states.
    assert not plain.training and not plain.backbone.training
    tokenized = encoder.tokenizer(
        texts[:4], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = plain.backbone(
            input_ids=tokenized["input_ids"], attention_mask=tokenized["attention_mask"]
        ).last_hidden_state
    mask = tokenized["attention_mask"].unsqueeze(-1).float()
    manual = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(pooled, manual, atol=2e-5)
    # Enc(z) = W · meanpool(BERT(z)) + b with a seeded W.
    weight = encoder.projection.weight.detach().numpy()
    bias = encoder.projection.bias.detach().numpy()
    np.testing.assert_allclose(encoder.encode(texts[:4]), pooled @ weight.T + bias, atol=2e-5)
    again = AirRepEncoder.from_backbone(max_length=MAX_LENGTH, projection_seed=7)
    other = AirRepEncoder.from_backbone(max_length=MAX_LENGTH, projection_seed=8)
    assert torch.equal(again.projection.weight, encoder.projection.weight)
    assert not torch.equal(other.projection.weight, encoder.projection.weight)


@pytest.mark.parametrize("projection", [True, False])
def test_save_and_load_reproduce_embeddings_exactly(tmp_path, encoder, texts, projection):
    model = (
        encoder
        if projection
        else AirRepEncoder.from_backbone(max_length=MAX_LENGTH, projection=False)
    )
    with torch.no_grad():  # a trained-looking encoder, not the pretrained one
        for parameter in model.backbone.encoder.layer[0].parameters():
            parameter.add_(0.01)
    directory = model.save(tmp_path / "enc")
    files = {p.name for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", ENCODER_CONFIG_FILE} <= files
    assert ("projection.safetensors" in files) == projection
    assert not any(name.endswith((".bin", ".pt", ".pkl", ".pth")) for name in files)
    meta = json.loads((directory / ENCODER_CONFIG_FILE).read_text())
    assert meta["max_length"] == MAX_LENGTH and set(meta["versions"]) >= {"torch", "transformers"}
    loaded = AirRepEncoder.from_pretrained(directory)
    assert loaded.max_length == MAX_LENGTH and (loaded.projection is not None) == projection
    np.testing.assert_array_equal(loaded.encode(texts, 4), model.encode(texts, 4))
    with pytest.raises(FileExistsError):
        model.save(directory)
    with torch.no_grad():
        for parameter in model.backbone.encoder.layer[0].parameters():
            parameter.sub_(0.01)


def test_bf16_autocast_stays_close_to_float32(encoder, texts):
    full = encoder.encode(texts[:4])
    half = encoder.encode(texts[:4], precision="bf16")
    assert half.dtype == np.float32
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99


def test_bad_inputs_are_clear_errors(tmp_path, encoder):
    with pytest.raises(ValueError, match="not a saved AirRep encoder"):
        AirRepEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot load encoder backbone 'no/such-model'"):
        AirRepEncoder.from_backbone("no/such-model")
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("one text")
    with pytest.raises(ValueError, match="precision='fp8'"):
        encoder.encode(["a"], precision="fp8")
    assert resolve_backbone("thenlper/gte-small") == "thenlper/gte-small"
