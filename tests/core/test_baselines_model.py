"""The target-LM baselines: RDS, per-example gradients, projection, Grad-Dot, LoGra, TRAK."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baseline_fixtures import (
    BaselineLM,
    build_tiny_target_lm,
    load_target_lm,
    train_and_query_examples,
)

from airrep_core.config.baselines import GradDotConfig, LograConfig, RdsConfig, TrakConfig
from airrep_core.lm.data import collate, tokenize_example
from airrep_core.methods import GradientAttributor, RdsAttributor
from airrep_core.methods.gradient_features import (
    GradientFeaturizer,
    KroneckerProjection,
    TrackedLayer,
    projection_matrix,
    response_losses,
)
from airrep_core.methods.preconditioners import (
    KfacFactor,
    KroneckerCovariance,
    ridge_preconditioned,
)

EXACT = {"projection_in": 0, "projection_out": 0}


@pytest.fixture(scope="module")
def baseline_lm(tmp_path_factory: pytest.TempPathFactory) -> BaselineLM:
    """The tiny target LM of ``baseline_fixtures`` (built once per module, a few seconds)."""
    return load_target_lm(build_tiny_target_lm(tmp_path_factory.mktemp("baseline_lm")))


@pytest.fixture(scope="module")
def data():
    return train_and_query_examples(n_train=10, n_query=3)


def single_batch(lm, example, max_length=64):
    tokenized = tokenize_example(lm.tokenizer, example.prompt, example.response, max_length)
    return collate([tokenized], lm.tokenizer.pad_token_id)


def test_response_losses_equal_the_models_own_loss(baseline_lm, data):
    train, _ = data
    model = baseline_lm.model
    tokenized = [
        tokenize_example(baseline_lm.tokenizer, e.prompt, e.response, 64) for e in train[:4]
    ]
    batch = collate(tokenized, baseline_lm.tokenizer.pad_token_id)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(batch["input_ids"])
        got = response_losses(model, embeds, batch["attention_mask"], batch["labels"])
        for row, example in enumerate(train[:4]):
            expected = model(**single_batch(baseline_lm, example)).loss
            assert got[row].item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_example_gradients_equal_a_loop_of_backward(baseline_lm, data):
    train, _ = data
    model = baseline_lm.model
    featurizer = GradientFeaturizer(
        model, baseline_lm.tokenizer, GradDotConfig.preset("tiny", batch_size=3, **EXACT)
    )
    examples = train[:5]
    features = featurizer.features(examples)
    assert features.shape == (5, featurizer.feature_dim)
    for row, example in enumerate(examples):
        model.zero_grad()
        model(**single_batch(baseline_lm, example)).loss.backward()
        blocks = []
        for layer in featurizer.layers:
            grad = layer.module.weight.grad
            if layer.has_bias:
                grad = torch.cat([grad, layer.module.bias.grad.unsqueeze(1)], dim=1)
            blocks.append(grad.reshape(-1))
        expected = torch.cat(blocks).numpy()
        np.testing.assert_allclose(
            features[row], expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max()
        )
    model.zero_grad()
    assert all(p.requires_grad for p in model.parameters()), (
        "featurisation must restore requires_grad"
    )


def test_batched_featurisation_equals_one_at_a_time(baseline_lm, data):
    train, _ = data
    config = GradDotConfig.preset("tiny")
    batched = GradientFeaturizer(
        baseline_lm.model, baseline_lm.tokenizer, config.replace(batch_size=4)
    )
    single = GradientFeaturizer(
        baseline_lm.model, baseline_lm.tokenizer, config.replace(batch_size=1)
    )
    a = batched.features(train[:6])
    b = single.features(train[:6])
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def exact_and_projected(lm) -> tuple[GradientFeaturizer, GradientFeaturizer]:
    """Featurizers of the exact gradients and of the tiny preset's projected ones."""
    exact = GradDotConfig.preset("tiny", **EXACT)
    return (
        GradientFeaturizer(lm.model, lm.tokenizer, exact),
        GradientFeaturizer(lm.model, lm.tokenizer, GradDotConfig.preset("tiny")),
    )


def test_projected_features_are_the_projection_of_exact_gradients(baseline_lm, data):
    train, _ = data
    exact, projected = exact_and_projected(baseline_lm)
    exact_layers = exact.split_layers(exact.features(train[:3]))
    projected_layers = projected.split_layers(projected.features(train[:3]))
    for name, gradients in exact_layers.items():
        p_in = projected.projection.input_matrices[name].double()
        p_out = projected.projection.output_matrices[name].double()
        expected = p_out @ torch.from_numpy(gradients).double() @ p_in.T
        np.testing.assert_allclose(
            projected_layers[name],
            expected.numpy(),
            rtol=1e-4,
            atol=1e-5 * float(expected.abs().max()),
        )


def test_identity_projection_is_exact(baseline_lm, data):
    train, _ = data
    exact, identity = exact_and_projected(baseline_lm)
    for layer in identity.layers:
        identity.projection.input_matrices[layer.name] = torch.eye(layer.d_in)
        identity.projection.output_matrices[layer.name] = torch.eye(layer.d_out)
        identity.projection.shapes[layer.name] = (layer.d_out, layer.d_in)
    np.testing.assert_allclose(
        identity.features(train[:3]), exact.features(train[:3]), rtol=1e-5, atol=1e-7
    )


def test_kronecker_projection_preserves_dot_products_in_expectation():
    # JL sanity: (P_out ⊗ P_in) with N(0, 1/k) entries is unbiased for <x, y>; over many seeds the
    # mean projected dot product matches, and one 32 x 32 projection is close.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 60, generator=generator, dtype=torch.float64)
    y = x + 0.7 * torch.randn(40, 60, generator=generator, dtype=torch.float64)
    layer = TrackedLayer("block.mlp", torch.nn.Linear(60, 40, bias=False), 60, 40)
    exact = float((x * y).sum())
    estimates = []
    for seed in range(300):
        projection = KroneckerProjection([layer], k_in=8, k_out=8, seed=seed)
        p_in = projection.input_matrices[layer.name].double()
        p_out = projection.output_matrices[layer.name].double()
        estimates.append(float(((p_out @ x @ p_in.T) * (p_out @ y @ p_in.T)).sum()))
    standard_error = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < 4 * standard_error
    wide = KroneckerProjection([layer], k_in=32, k_out=32, seed=1)
    p_in, p_out = (
        wide.input_matrices[layer.name].double(),
        wide.output_matrices[layer.name].double(),
    )
    one = float(((p_out @ x @ p_in.T) * (p_out @ y @ p_in.T)).sum())
    assert one == pytest.approx(exact, rel=0.25)
    assert torch.equal(projection_matrix(4, 5, 3, "a"), projection_matrix(4, 5, 3, "a"))
    assert not torch.equal(projection_matrix(4, 5, 3, "a"), projection_matrix(4, 5, 4, "a"))


def test_kfac_preconditioning_equals_the_explicit_kronecker_formula():
    generator = torch.Generator().manual_seed(0)
    a_root = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    s_root = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    activation_cov, gradient_cov = a_root @ a_root.T, s_root @ s_root.T
    gradients = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    factor = KfacFactor.from_covariances(activation_cov, gradient_cov, damping_fraction=0.1)
    # mean eigenvalue of S ⊗ A = trace(S) trace(A) / (k_out k_in)
    assert factor.damping == pytest.approx(0.1 * gradient_cov.trace() * activation_cov.trace() / 20)
    # row-major vec: vec(S G A) = (S ⊗ A) vec(G)
    fisher = torch.kron(gradient_cov, activation_cov) + factor.damping * torch.eye(
        20, dtype=torch.float64
    )
    expected = torch.linalg.solve(fisher, gradients.reshape(3, 20).T).T.reshape(3, 4, 5)
    torch.testing.assert_close(factor.precondition(gradients), expected, rtol=1e-9, atol=1e-12)


def test_kfac_covariances_are_token_averages_over_real_tokens(baseline_lm, data):
    # Independent check of A = Σ a aᵀ / N and S = Σ g gᵀ / N over unpadded tokens: our own hooks
    # on the first attention projection (with bias), one example at a time (no padding at all).
    train, _ = data
    model = baseline_lm.model
    featurizer = GradientFeaturizer(
        model, baseline_lm.tokenizer, LograConfig.preset("tiny", batch_size=3, **EXACT)
    )
    covariance = KroneckerCovariance()
    featurizer.features(train[:4], on_batch=covariance.update)
    layer = featurizer.layers[0]
    assert layer.has_bias
    seen = {}
    sums_a = torch.zeros(layer.d_in, layer.d_in, dtype=torch.float64)
    sums_g = torch.zeros(layer.d_out, layer.d_out, dtype=torch.float64)
    tokens = 0

    def forward_hook(module, inputs, output):
        seen["a"] = inputs[0].detach()
        output.register_hook(lambda grad: seen.__setitem__("g", grad.detach()))

    handle = layer.module.register_forward_hook(forward_hook)
    try:
        for example in train[:4]:
            model.zero_grad()
            model(**single_batch(baseline_lm, example, max_length=64)).loss.backward()
            a = torch.cat([seen["a"][0], torch.ones(seen["a"].shape[1], 1)], dim=1).double()
            g = seen["g"][0].double()
            sums_a += a.T @ a
            sums_g += g.T @ g
            tokens += a.shape[0]
    finally:
        handle.remove()
        model.zero_grad()
    assert covariance.num_tokens == tokens
    torch.testing.assert_close(
        covariance.activation[layer.name] / tokens, sums_a / tokens, rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(
        covariance.gradient[layer.name] / tokens,
        sums_g / tokens,
        rtol=1e-3,
        atol=1e-4 * float((sums_g / tokens).abs().max()),
    )


@pytest.mark.parametrize("shape", [(5, 8), (8, 5)])
def test_trak_preconditioner_equals_the_explicit_ridge_inverse(shape):
    features = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    psi, damping = ridge_preconditioned(features, damping_fraction=0.1)
    phi = features.astype(np.float64)
    k = shape[1]
    assert damping == pytest.approx(0.1 * (phi**2).sum() / k)
    expected = phi @ np.linalg.inv(phi.T @ phi + damping * np.eye(k))
    np.testing.assert_allclose(psi, expected, rtol=1e-5, atol=1e-6)


def test_grad_dot_sign_and_size_match_an_sgd_step(baseline_lm, data):
    # A step θ ← θ - η ∇ℓ(z) on the tracked layers changes ℓ(x) by ≈ -η score(x, z).
    train, queries = data
    model = baseline_lm.model
    attributor = GradientAttributor(
        model, baseline_lm.tokenizer, GradDotConfig.preset("tiny", **EXACT)
    )
    attributor.fit(train[:6])
    scores = attributor.score(queries[:1])[0]
    learning_rate = 1e-4
    query_batch = single_batch(baseline_lm, queries[0])
    tracked = [
        parameter
        for layer in attributor.featurizer.layers
        for parameter in (layer.module.weight, layer.module.bias)
        if parameter is not None
    ]
    originals = [parameter.detach().clone() for parameter in tracked]
    for z in (int(np.argmax(scores)), int(np.argmin(scores))):
        with torch.no_grad():
            before = model(**query_batch).loss.item()
        model.zero_grad()
        model(**single_batch(baseline_lm, train[z])).loss.backward()
        with torch.no_grad():
            for parameter in tracked:
                parameter -= learning_rate * parameter.grad
            after = model(**query_batch).loss.item()
            for parameter, original in zip(tracked, originals, strict=True):
                parameter.copy_(original)
        model.zero_grad()
        assert after - before == pytest.approx(-learning_rate * scores[z], rel=0.1)


@pytest.mark.parametrize("method", ["rds", "grad_dot", "logra", "trak"])
def test_model_attributors_shape_determinism_and_self_scores(baseline_lm, data, method):
    train, queries = data
    builders = {
        "rds": lambda: RdsAttributor(
            baseline_lm.model, baseline_lm.tokenizer, RdsConfig.preset("tiny")
        ),
        "grad_dot": lambda: GradientAttributor(
            baseline_lm.model, baseline_lm.tokenizer, GradDotConfig.preset("tiny")
        ),
        "logra": lambda: GradientAttributor(
            baseline_lm.model, baseline_lm.tokenizer, LograConfig.preset("tiny")
        ),
        "trak": lambda: GradientAttributor(
            baseline_lm.model, baseline_lm.tokenizer, TrakConfig.preset("tiny")
        ),
    }
    attributor = builders[method]()
    attributor.fit(train)
    probes = [*queries, *train[:3]]
    scores = attributor.score(probes)
    assert scores.shape == (len(probes), len(train)) and scores.dtype == np.float32
    assert np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores, attributor.score(probes))
    if method != "rds":  # a new instance draws the same seeded projection
        other = builders[method]().featurizer.projection
        for name, matrix in attributor.featurizer.projection.input_matrices.items():
            assert torch.equal(matrix, other.input_matrices[name])
            assert torch.equal(
                attributor.featurizer.projection.output_matrices[name], other.output_matrices[name]
            )
    # Self-influence is positive (PSD preconditioners). Each train example is its own best match
    # for the cosine (RDS) and for TRAK with n < k (its ridge kernel is then close to the identity
    # on the train set); K-FAC influence has no such guarantee.
    self_scores = scores[len(queries) + np.arange(3), np.arange(3)]
    assert np.all(self_scores > 0)
    if method in ("rds", "trak"):
        assert list(np.argmax(scores[len(queries) :], axis=1)) == [0, 1, 2]
    expected_storage = 128 if method == "rds" else attributor.featurizer.feature_dim
    assert attributor.storage_floats_per_example == expected_storage


def test_gradient_attributor_strategies_equal_grad_dot_trak_and_logra_formulas(baseline_lm, data):
    """One attributor, three preconditioners: identity == φ(x)ᵀφ(z); ridge == the explicit
    (ΦᵀΦ + λI)^{-1} with λ = 0.1·trace(ΦᵀΦ)/k; K-FAC == the explicit per-layer (S ⊗ A + λI)^{-1}
    with λ = 0.1·mean eigenvalue (the formulas of the former Grad-Dot, TRAK and LoGra classes)."""
    train, queries = data
    model, tokenizer = baseline_lm.model, baseline_lm.tokenizer
    featurizer = GradientFeaturizer(model, tokenizer, GradDotConfig.preset("tiny"))
    covariance = KroneckerCovariance()
    phi = featurizer.features(train, on_batch=covariance.update)
    phi_q = featurizer.features(queries)
    scores = {}
    for config in (GradDotConfig, TrakConfig, LograConfig):
        attributor = GradientAttributor(model, tokenizer, config.preset("tiny"))
        attributor.fit(train)
        scores[attributor.name] = attributor.score(queries)
    np.testing.assert_array_equal(scores["grad_dot"], phi_q @ phi.T)

    phi64, k = phi.astype(np.float64), phi.shape[1]
    damping = 0.1 * (phi64**2).sum() / k
    trak = phi_q.astype(np.float64) @ np.linalg.inv(phi64.T @ phi64 + damping * np.eye(k))
    np.testing.assert_allclose(scores["trak"], trak @ phi64.T, rtol=1e-3, atol=1e-4)

    logra = np.zeros((len(queries), len(train)))
    train_layers = featurizer.split_layers(phi)
    for name, grads in featurizer.split_layers(phi_q).items():
        a = (covariance.activation[name] / covariance.num_tokens).numpy()
        s = (covariance.gradient[name] / covariance.num_tokens).numpy()
        layer_damping = 0.1 * np.trace(s) * np.trace(a) / (len(s) * len(a))
        fisher = np.kron(s, a) + layer_damping * np.eye(len(s) * len(a))
        flat_q = grads.reshape(len(queries), -1).astype(np.float64)
        flat_t = train_layers[name].reshape(len(train), -1).astype(np.float64)
        logra += np.linalg.solve(fisher, flat_q.T).T @ flat_t.T
    scale = np.abs(logra).max()
    np.testing.assert_allclose(scores["logra"], logra, rtol=1e-3, atol=1e-4 * scale)
