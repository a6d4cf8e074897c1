"""The method registry: one record per attribution method, read by the evaluation, the CLI, the
report, the teacher and the configs (DESIGN.md §3).

A record names the method, its config class (``None`` for AirRep, whose settings are the
evaluation config's ``airrep_*`` fields), what it reads (``text`` only, the ``base_lm``, or the
trained ``encoder``), whether it can be a teacher, its group rule (how per-example scores become
a subset score, stated in every table) and its builder. Builders import their module on call, so
this module stays light enough for the configs to read the names.

| name        | needs   | features / score                                                  |
|-------------|---------|-------------------------------------------------------------------|
| airrep      | encoder | trained AirRep embeddings, attention pooling (or the hybrid score) |
| airrep_mean | encoder | the same embeddings alone, mean pooling (ablation)                 |
| encoder     | text    | off-the-shelf MiniLM mean-pooled embeddings, cosine                |
| tfidf       | text    | TF-IDF cosine of ``encoder_text`` (scikit-learn)                   |
| bm25        | text    | BM25 of the query's ``encoder_text`` (bm25s)                       |
| bm25_response | base_lm | BM25 of response against response over the target LM's tokens |
| rds         | base_lm | target LM mean last-layer hidden state, cosine                     |
| grad_dot    | base_lm | projected response-loss gradients, identity preconditioner         |
| logra       | base_lm | projected gradients, per-layer damped K-FAC preconditioner         |
| trak        | base_lm | projected gradients, ridge (ΦᵀΦ + λI)^{-1} preconditioner          |

Every method returns ``(n_query, n_train)`` float32 scores, higher = more helpful.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airrep_core.config.base import StageConfig
from airrep_core.config.baselines import (
    Bm25Config,
    Bm25ResponseConfig,
    EncoderBaselineConfig,
    GradDotConfig,
    LograConfig,
    RdsConfig,
    TfidfConfig,
    TrakConfig,
)
from airrep_core.methods.interface import SUM_RULE

if TYPE_CHECKING:
    from airrep_core.methods.interface import Attributor

NEEDS = ("text", "base_lm", "encoder")


@dataclass(frozen=True)
class MethodSpec:
    """One method: ``build(config, model=, tokenizer=, encoder=)`` returns a fresh attributor."""

    name: str
    needs: str
    config_class: type[StageConfig] | None
    group_rule: str
    build: Callable[..., Attributor]
    teacher: bool = False


def _airrep(pooling: str) -> Callable[..., Attributor]:
    def build(settings: dict[str, Any], *, encoder: Any = None, **_: Any) -> Attributor:
        from airrep_core.methods.airrep import AirRepAttributor

        # The mean-pooling ablation is the embedding alone, also for a hybrid encoder.
        return AirRepAttributor(
            encoder,
            pooling,
            settings["batch_size"],
            settings["precision"],
            hybrid=pooling == "attention",
        )

    return build


def _text(name: str) -> Callable[..., Attributor]:
    def build(config: StageConfig, **_: Any) -> Attributor:
        from airrep_core.methods import lexical, representation

        if name == "encoder":
            return representation.build_off_the_shelf_encoder(config)
        cls = lexical.TfidfAttributor if name == "tfidf" else lexical.Bm25Attributor
        return cls(config)

    return build


def _model(name: str) -> Callable[..., Attributor]:
    def build(config: StageConfig, *, model: Any = None, tokenizer: Any = None, **_: Any):
        if model is None or tokenizer is None:
            raise ValueError(f"method={name!r} needs the target LM: pass model= and tokenizer=")
        if name == "rds":
            from airrep_core.methods.representation import RdsAttributor

            return RdsAttributor(model, tokenizer, config)
        from airrep_core.methods.gradients import GradientAttributor

        return GradientAttributor(model, tokenizer, config)

    return build


def _target_lm_bm25(config: StageConfig, *, tokenizer: Any = None, **_: Any) -> Attributor:
    """BM25 over the target LM's tokens: only the LM's tokenizer is read."""
    if tokenizer is None:
        raise ValueError("method='bm25_response' needs the target LM: pass model= and tokenizer=")
    from airrep_core.methods.lexical import Bm25Attributor

    return Bm25Attributor(config, tokenizer=tokenizer)


_SPECS = (
    MethodSpec(
        "airrep", "encoder", None, "attention pooling: Σ softmax(abs s)·s", _airrep("attention")
    ),
    MethodSpec("airrep_mean", "encoder", None, "mean of per-example scores", _airrep("mean")),
    MethodSpec("encoder", "text", EncoderBaselineConfig, SUM_RULE, _text("encoder")),
    MethodSpec("tfidf", "text", TfidfConfig, SUM_RULE, _text("tfidf"), teacher=True),
    MethodSpec("bm25", "text", Bm25Config, SUM_RULE, _text("bm25"), teacher=True),
    MethodSpec(
        "bm25_response", "base_lm", Bm25ResponseConfig, SUM_RULE, _target_lm_bm25, teacher=True
    ),
    MethodSpec("rds", "base_lm", RdsConfig, SUM_RULE, _model("rds")),
    MethodSpec("grad_dot", "base_lm", GradDotConfig, SUM_RULE, _model("grad_dot"), teacher=True),
    MethodSpec("logra", "base_lm", LograConfig, SUM_RULE, _model("logra"), teacher=True),
    MethodSpec("trak", "base_lm", TrakConfig, SUM_RULE, _model("trak"), teacher=True),
)

METHOD_SPECS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}
"""Every method, in the canonical order of the tables."""

ALL_METHODS = tuple(METHOD_SPECS)
AIRREP_METHODS = tuple(n for n, s in METHOD_SPECS.items() if s.needs == "encoder")
"""AirRep with attention pooling and its mean-pooling ablation."""
BASELINE_METHODS = tuple(n for n, s in METHOD_SPECS.items() if s.needs != "encoder")
TEXT_METHODS = tuple(n for n, s in METHOD_SPECS.items() if s.needs == "text")
"""Methods that read only the text."""
MODEL_METHODS = tuple(n for n, s in METHOD_SPECS.items() if s.needs == "base_lm")
"""Methods that need the target LM and its tokenizer."""
TEACHER_METHODS = tuple(n for n, s in METHOD_SPECS.items() if s.teacher)
"""Methods that can score the teacher's pseudo-labels (no trained encoder, one score per pair)."""
BASELINE_CONFIGS = {n: s.config_class for n, s in METHOD_SPECS.items() if s.config_class}
"""Each baseline's config class; its presets (tiny/mini/paper) are the method's fair settings."""


def method_spec(name: str) -> MethodSpec:
    """The record of ``name``; ``ValueError`` naming the allowed methods."""
    if name not in METHOD_SPECS:
        raise ValueError(f"method={name!r} is unknown; allowed: {ALL_METHODS}")
    return METHOD_SPECS[name]


def build_method(
    name: str,
    preset: str = "mini",
    *,
    model: Any = None,
    tokenizer: Any = None,
    encoder: Any = None,
    settings: dict[str, Any] | None = None,
) -> Attributor:
    """A fresh attributor of method ``name``.

    Baselines take the config of ``preset`` (tiny/mini/paper); ``model``/``tokenizer`` (a
    transformers causal LM and its tokenizer) are required for the ``base_lm`` methods. AirRep
    takes the trained ``encoder`` (an ``AirRepEncoder``) and ``settings`` (``batch_size``,
    ``precision``).
    """
    spec = method_spec(name)
    if spec.config_class is None:
        if encoder is None:
            raise ValueError(f"method={name!r} needs the trained AirRep encoder: pass encoder=")
        return spec.build(settings or {"batch_size": 64, "precision": "float32"}, encoder=encoder)
    return spec.build(spec.config_class.preset(preset), model=model, tokenizer=tokenizer)
