"""The two-pass gradient == the one-pass gradient, for every parameter (DESIGN.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from encoder_fixtures import PER_TEMPLATE, tiny_bert_encoder
from p3_fixtures import p3_examples

from airrep_core.data.labels import normalise_losses
from airrep_core.encoder.checkpoint import capture_rng_state
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.ranking_loss import pairwise_ranking_loss
from airrep_core.encoder.scoring import group_scores, pad_membership
from airrep_core.encoder.training_step import StepBatch, chunk_slices, two_pass_backward

CHUNK = 3


def _batch(encoder: AirRepEncoder) -> StepBatch:
    """7 real P3 targets, 4 ragged subsets over 10 distinct members (one shared), random labels."""
    examples = p3_examples(PER_TEMPLATE)[::9]
    targets, members = examples[:7], examples[7:17]
    groups = [[0, 1, 2], [3, 4, 5, 0], [6, 7], [8, 9, 1, 2]]
    membership, mask = pad_membership(groups)
    losses = np.random.default_rng(0).normal(size=(len(groups), len(targets)))
    return StepBatch(
        target_token_ids=encoder.tokenize([encoder.example_text(e) for e in targets]),
        member_token_ids=encoder.tokenize([encoder.example_text(e) for e in members]),
        membership=membership,
        mask=mask,
        labels=np.ascontiguousarray(normalise_losses(losses).T),
    )


def _one_pass_backward(encoder: AirRepEncoder, batch: StepBatch, pooling: str) -> float:
    """Everything in one graph, encoded in the same chunks and order as the two-pass code."""
    members = torch.cat(
        [
            encoder.embed_token_ids(batch.member_token_ids[s])
            for s in chunk_slices(len(batch.member_token_ids), CHUNK)
        ]
    )
    targets = torch.cat(
        [
            encoder.embed_token_ids(batch.target_token_ids[s])
            for s in chunk_slices(len(batch.target_token_ids), CHUNK)
        ]
    )
    scores = group_scores(targets, members, batch.membership, batch.mask, pooling)
    loss = pairwise_ranking_loss(scores, torch.from_numpy(batch.labels))
    loss.backward()
    return float(loss.detach())


def _gradients(encoder: AirRepEncoder) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("pooling", "dropout"), [("attention", 0.0), ("mean", 0.0), ("attention", 0.2)]
)
def test_two_pass_gradient_equals_one_pass_gradient(pooling, dropout):
    encoder = tiny_bert_encoder(seed=1, dropout=dropout).train()
    batch = _batch(encoder)

    torch.manual_seed(123)
    reference_loss = _one_pass_backward(encoder, batch, pooling)
    reference = _gradients(encoder)
    after_reference = capture_rng_state(encoder.device)["cpu"]
    encoder.zero_grad(set_to_none=True)

    torch.manual_seed(123)
    loss = two_pass_backward(
        encoder, batch, pooling=pooling, t_min=0.1, t_max=5.0, chunk_size=CHUNK
    )
    got = _gradients(encoder)

    assert loss == pytest.approx(reference_loss, rel=1e-6)
    # Every parameter that influences the embeddings has a gradient (the pooler does not).
    expected_names = {n for n, _ in encoder.named_parameters() if "pooler" not in n}
    assert set(got) == set(reference) == expected_names
    assert sum(float(g.norm()) for g in reference.values()) > 0
    for name, grad in reference.items():
        # float32 summation order differs between the passes: compare at the tensor's scale
        # (some entries are exactly 0 in theory, e.g. attention key biases, and ~1e-12 here).
        error = float((got[name] - grad).abs().max())
        scale = float(grad.abs().max())
        assert error <= 2e-5 * scale + 1e-9, f"{name}: max error {error:.3g}, scale {scale:.3g}"
    # The generator continues as after pass 1 (same stream as the one-pass computation).
    assert torch.equal(capture_rng_state(encoder.device)["cpu"], after_reference)


def test_dropout_really_differs_between_draws():
    # Guards the dropout case above: without replaying the masks the two passes would differ.
    encoder = tiny_bert_encoder(seed=1, dropout=0.2).train()
    ids = _batch(encoder).member_token_ids[:3]
    with torch.no_grad():
        assert not torch.equal(encoder.embed_token_ids(ids), encoder.embed_token_ids(ids))
