"""Per-example response-loss gradients of the target LM's linear layers, with a seeded projection.

Loss (DESIGN.md §2, "Labels"): ℓ(z) = mean cross-entropy over z's response tokens, with the
tokens of ``lm.data.tokenize_example``. A batch's backward pass runs on Σ_i ℓ(z_i); since batch
rows do not interact, the output gradient that reaches row i of a layer is ∂ℓ(z_i)/∂output.

For a tracked ``nn.Linear`` with weight ``W (d_out, d_in)`` and bias ``b`` the per-example gradient
of ``[W | b]`` is ``G = Σ_t g_t a_tᵀ`` (``a_t`` the input at token t with a 1 appended when there is
a bias, ``g_t`` the gradient w.r.t. the output), so forward hooks capture ``a`` and tensor hooks
on the outputs capture ``g``; no parameter gradient is ever formed (parameters are frozen during
the pass and only the input embeddings require grad, so the backward pass skips the weight-gradient
matmuls). The projection is LoGra's: ``P_out G P_inᵀ = Σ_t (P_out g_t)(P_in a_t)ᵀ`` with seeded
Gaussian ``P_in (k_in, d_in)``, ``P_out (k_out, d_out)`` of variance 1/k, so the projected
features keep dot products in expectation (``E[P_inᵀ P_in] = I``) and the hooks only ever hold
``(B, T, k)`` tensors. ``k = 0`` means no projection (exact gradients).

NOTE(paper): TRAK and Grad-Dot usually project the flattened gradient with a dense JL matrix; a
dense ``k x (#params)`` matrix is out of reach on CPU, so all three gradient methods share this
Kronecker-structured projection (also an unbiased JL-style sketch of the dot product).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from airrep_core.config.baselines import GradientFeatureConfig
from airrep_core.data.examples import Example
from airrep_core.lm.data import IGNORE_INDEX, collate, length_sorted_batches, tokenize_example
from airrep_core.methods.representation import pad_token_id
from airrep_core.runtime import precision_context


@dataclass(frozen=True)
class TrackedLayer:
    """One tracked linear layer: ``d_in`` counts the bias column (``in_features + 1`` with bias)."""

    name: str
    module: nn.Linear
    d_in: int
    d_out: int

    @property
    def has_bias(self) -> bool:
        return self.module.bias is not None


def tracked_linear_layers(model: PreTrainedModel, suffixes: Sequence[str]) -> list[TrackedLayer]:
    """The ``nn.Linear`` modules whose qualified name ends with one of ``suffixes``, in module order.

    The output embedding (``lm_head``) is never tracked. ``ValueError`` when nothing matches.
    """
    output_embedding = model.get_output_embeddings()
    layers = []
    linear_names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is output_embedding:
            continue
        linear_names.append(name)
        if name.split(".")[-1] in suffixes:
            d_in = module.in_features + (1 if module.bias is not None else 0)
            layers.append(TrackedLayer(name, module, d_in, module.out_features))
    if not layers:
        raise ValueError(
            f"no nn.Linear of {type(model).__name__} ends with one of {tuple(suffixes)}; "
            f"linear layers present (first 10): {linear_names[:10]}"
        )
    return layers


def projection_matrix(rows: int, cols: int, seed: int, label: str) -> torch.Tensor:
    """A ``(rows, cols)`` float32 Gaussian matrix with entries N(0, 1/rows), seeded by (seed, label)."""
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randn(rows, cols, generator=generator, dtype=torch.float32) / rows**0.5


class KroneckerProjection:
    """Per-layer ``(P_in, P_out)``; ``k_in = k_out = 0`` is the identity (exact gradients)."""

    def __init__(self, layers: Sequence[TrackedLayer], k_in: int, k_out: int, seed: int) -> None:
        if (k_in == 0) != (k_out == 0) or k_in < 0 or k_out < 0:
            raise ValueError(
                f"(k_in, k_out)={(k_in, k_out)} is invalid; allowed: both 0 or both >= 1"
            )
        self.exact = k_in == 0
        self.shapes: dict[str, tuple[int, int]] = {}
        self.input_matrices: dict[str, torch.Tensor] = {}
        self.output_matrices: dict[str, torch.Tensor] = {}
        for layer in layers:
            if self.exact:
                self.shapes[layer.name] = (layer.d_out, layer.d_in)
                continue
            self.shapes[layer.name] = (k_out, k_in)
            self.input_matrices[layer.name] = projection_matrix(
                k_in, layer.d_in, seed, f"{layer.name}:in"
            )
            self.output_matrices[layer.name] = projection_matrix(
                k_out, layer.d_out, seed, f"{layer.name}:out"
            )

    @property
    def feature_dim(self) -> int:
        """Total floats per example: Σ over layers of rows · cols."""
        return sum(rows * cols for rows, cols in self.shapes.values())

    def project_inputs(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        """``(..., d_in)`` → ``(..., k_in)`` float32."""
        if self.exact:
            return inputs
        return inputs @ self.input_matrices[name].to(inputs.device).T

    def project_output_grads(self, name: str, grads: torch.Tensor) -> torch.Tensor:
        """``(..., d_out)`` → ``(..., k_out)`` float32."""
        if self.exact:
            return grads
        return grads @ self.output_matrices[name].to(grads.device).T


@dataclass
class BatchFactors:
    """One batch's projected token factors, rows in the order of ``indices``.

    ``inputs[name]``: ``(B, T, k_in)`` float32 projected layer inputs (bias column included, zero
    at padding); ``output_grads[name]``: ``(B, T, k_out)`` float32 projected output gradients;
    ``token_mask``: ``(B, T)`` bool, True at real tokens; ``losses``: ``(B,)`` float32 ℓ(z_i).
    """

    indices: list[int]
    token_mask: torch.Tensor
    losses: torch.Tensor
    inputs: dict[str, torch.Tensor]
    output_grads: dict[str, torch.Tensor]

    def per_example_gradients(self) -> dict[str, torch.Tensor]:
        """``{layer: (B, k_out, k_in)}`` float32: Σ_t g̃_t ã_tᵀ per example."""
        return {
            name: torch.einsum("bto,bti->boi", self.output_grads[name], self.inputs[name])
            for name in self.inputs
        }

    def flat_gradients(self) -> torch.Tensor:
        """``(B, D)`` float32: per-layer gradients flattened row-major, concatenated in layer order."""
        grads = self.per_example_gradients()
        return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


def response_losses(
    model: PreTrainedModel,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """``(B,)`` float32 mean cross-entropy over each row's response tokens.

    Logits are the output embedding applied to the final hidden states at the positions that
    predict a response token only (Llama/Qwen2-style heads; a test checks they equal the model's
    own logits), so the full ``(B, T, vocab)`` logits are never formed.
    """
    hidden = model.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
    hidden = hidden.last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    predicts = targets != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[predicts]).float()
    token_losses = F.cross_entropy(logits, targets[predicts], reduction="none")
    rows = predicts.nonzero()[:, 0]
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device)
    sums = sums.index_add(0, rows, token_losses)
    counts = predicts.sum(dim=1).clamp(min=1).to(torch.float32)
    return sums / counts


class _FactorCapture:
    """Forward hooks saving projected inputs; tensor hooks on outputs saving projected grads."""

    def __init__(self, layers: Sequence[TrackedLayer], projection: KroneckerProjection) -> None:
        self.layers = layers
        self.projection = projection
        self.token_mask: torch.Tensor | None = None
        self.inputs: dict[str, torch.Tensor] = {}
        self.output_grads: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _FactorCapture:
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self, token_mask: torch.Tensor) -> None:
        self.token_mask = token_mask
        self.inputs = {}
        self.output_grads = {}

    def _forward_hook(self, layer: TrackedLayer) -> Callable:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if layer.name in self.inputs:
                raise RuntimeError(f"layer {layer.name} ran twice in one forward pass")
            # Projection in float32 even inside the model's bf16 autocast region.
            with torch.no_grad(), torch.autocast(output.device.type, enabled=False):
                activation = inputs[0].detach().float()
                if layer.has_bias:
                    ones = activation.new_ones((*activation.shape[:-1], 1))
                    activation = torch.cat([activation, ones], dim=-1)
                activation = activation * self.token_mask.unsqueeze(-1)
                self.inputs[layer.name] = self.projection.project_inputs(layer.name, activation)
            output.register_hook(self._grad_hook(layer))

        return hook

    def _grad_hook(self, layer: TrackedLayer) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad(), torch.autocast(grad.device.type, enabled=False):
                masked = grad.detach().float() * self.token_mask.unsqueeze(-1)
                self.output_grads[layer.name] = self.projection.project_output_grads(
                    layer.name, masked
                )

        return hook


@contextlib.contextmanager
def _frozen_eval(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode with every parameter frozen; the previous state is restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)


class GradientFeaturizer:
    """Projected per-example response-loss gradients of the tracked layers of a target LM."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: GradientFeatureConfig,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.layers = tracked_linear_layers(model, config.module_suffixes)
        self.projection = KroneckerProjection(
            self.layers, config.projection_in, config.projection_out, config.projection_seed
        )

    @property
    def feature_dim(self) -> int:
        """Floats per example of ``features``."""
        return self.projection.feature_dim

    def iter_batches(self, examples: Sequence[Example]) -> Iterator[BatchFactors]:
        """``BatchFactors`` of ``examples`` in length-sorted batches of ``config.batch_size``."""
        tokenized = [
            tokenize_example(self.tokenizer, e.prompt, e.response, self.config.max_length)
            for e in examples
        ]
        device = self.model.device
        embedding = self.model.get_input_embeddings()
        pad_id = pad_token_id(self.tokenizer)
        lengths = [len(t) for t in tokenized]
        with _frozen_eval(self.model), _FactorCapture(self.layers, self.projection) as capture:
            for indices in length_sorted_batches(lengths, self.config.batch_size):
                batch = {
                    k: v.to(device)
                    for k, v in collate([tokenized[i] for i in indices], pad_id).items()
                }
                token_mask = batch["attention_mask"].bool()
                capture.reset(token_mask)
                inputs_embeds = embedding(batch["input_ids"]).detach().requires_grad_(True)
                with precision_context(self.config.precision, device):
                    losses = response_losses(
                        self.model, inputs_embeds, batch["attention_mask"], batch["labels"]
                    )
                losses.sum().backward(inputs=[inputs_embeds])
                missing = [
                    layer.name for layer in self.layers if layer.name not in capture.output_grads
                ]
                if missing:
                    raise RuntimeError(f"no output gradient reached layers {missing[:5]}")
                yield BatchFactors(
                    indices=list(indices),
                    token_mask=token_mask,
                    losses=losses.detach(),
                    inputs=capture.inputs,
                    output_grads=capture.output_grads,
                )

    def features(
        self,
        examples: Sequence[Example],
        on_batch: Callable[[BatchFactors], None] | None = None,
    ) -> np.ndarray:
        """``(n, feature_dim)`` float32 projected gradients in the order of ``examples``.

        ``on_batch`` sees every batch's token factors (LoGra accumulates its K-FAC factors there).
        """
        out = np.empty((len(examples), self.feature_dim), dtype=np.float32)
        for batch in self.iter_batches(examples):
            out[batch.indices] = batch.flat_gradients().cpu().numpy()
            if on_batch is not None:
                on_batch(batch)
        return out

    def split_layers(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """``(n, D)`` flat features → ``{layer: (n, rows, cols)}`` views, in layer order."""
        views = {}
        start = 0
        for name, (rows, cols) in self.projection.shapes.items():
            views[name] = features[:, start : start + rows * cols].reshape(-1, rows, cols)
            start += rows * cols
        return views
