"""Settings of the attribution baselines (DESIGN.md §3, "Baselines"): one frozen config per method.

Every method gets stated, fair settings: the same text for the lexical and encoder methods
(``examples.encoder_text``), the same tracked layers and projected-gradient featurisation for the
three gradient methods (Grad-Dot, LoGra, TRAK differ only in the preconditioner), and the same
relative damping rule (a fraction of the mean eigenvalue, kronfluence's heuristic) for the two
preconditioned ones.

Presets: ``tiny`` (tests, a 2-layer toy LM, seconds), ``mini`` (the CPU calibration LM of
DESIGN.md §6: 4 layers, width 256), ``paper`` (Qwen2.5-0.5B on a GPU; LoGra's 18,432 floats per
example are the paper's LoGra dimension, 48x AirRep's 384).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from airrep_core.config.base import TEXT_VIEWS, StageConfig, help_field, require

BLOCK_LINEAR_SUFFIXES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Every ``nn.Linear`` of a Llama/Qwen2 decoder block (attention and MLP)."""

MLP_LINEAR_SUFFIXES = ("gate_proj", "up_proj", "down_proj")
"""The ``nn.Linear`` layers of a Llama/Qwen2 MLP."""

PRECISION_HELP = (
    "float32, bf16 (autocast) or auto (bf16 on CUDA, float32 on CPU: whether bf16 pays off on a "
    "CPU is measured at run time, see airrep_core/runtime.py)"
)

BM25_METHODS = ("robertson", "atire", "bm25l", "bm25+", "lucene")
BM25_TOKENS = ("words", "target_lm")
"""How BM25 cuts text into terms: ``words`` = bm25s words (lowercase, 2+ word characters,
``stopwords`` removed); ``target_lm`` = the target LM's own tokenizer pieces of the text (the
units its loss is over; case, digits and punctuation kept)."""


@dataclasses.dataclass(frozen=True)
class TfidfConfig(StageConfig):
    """TF-IDF cosine (scikit-learn ``TfidfVectorizer``) over ``encoder_text`` of each example."""

    max_prompt_words: int = help_field(256, "prompt cut to its first N words (encoder text format)")
    ngram_max: int = help_field(1, "word n-grams of length 1..ngram_max")
    sublinear_tf: bool = help_field(False, "use 1 + log(tf) instead of raw term counts")
    min_df: int = help_field(1, "ignore terms in fewer than min_df training documents")
    lowercase: bool = help_field(True, "lowercase the text before tokenising")

    PRESETS: ClassVar = {"tiny": {}, "mini": {}, "paper": {}}

    def validate(self) -> None:
        require(self.max_prompt_words >= 1, self, "max_prompt_words", self.max_prompt_words, ">= 1")
        require(self.ngram_max >= 1, self, "ngram_max", self.ngram_max, ">= 1")
        require(self.min_df >= 1, self, "min_df", self.min_df, ">= 1")


@dataclasses.dataclass(frozen=True)
class Bm25Config(StageConfig):
    """BM25 (``bm25s``): documents = each train example's text in ``view``, query = the query's
    text in the same view (``examples.view_text``)."""

    max_prompt_words: int = help_field(256, "prompt cut to its first N words (encoder text format)")
    view: str = help_field(
        "question_answer",
        f"text indexed and queried, one of {TEXT_VIEWS}: question_answer = the encoder text "
        "(prompt and response), response = the response alone",
    )
    k1: float = help_field(1.5, "BM25 term-frequency saturation k1")
    b: float = help_field(0.75, "BM25 length normalisation b")
    method: str = help_field("lucene", f"BM25 variant, one of {BM25_METHODS}")
    stopwords: str = help_field("en", "bm25s stopword list ('en') or '' for none")
    tokens: str = help_field(
        "words",
        f"terms, one of {BM25_TOKENS}: bm25s words, or the target LM's tokenizer pieces "
        "(stopwords then do not apply; the target LM's tokenizer is required)",
    )
    lm_max_length: int = help_field(
        0,
        "target-LM tokens: > 0 = only the tokens the target LM reads of the view under "
        "lm.data's truncation at this many tokens (the labels' fine-tuning max_length; the "
        "response with its EOS token, or prompt and response), 0 = the whole view's text",
    )
    ngram_weights: tuple[float, ...] = help_field(
        (1.0,),
        "weight a_n of term n-grams of order n = 1, 2, ...: one BM25 index per order with a_n > 0 "
        "over each text's runs of n consecutive terms; one order with a_n > 0 = its plain BM25 "
        "scores, more = sum_n a_n * (BM25 of order n, z-scored per query over the pool)",
    )

    PRESETS: ClassVar = {"tiny": {}, "mini": {}, "paper": {}}

    def validate(self) -> None:
        require(self.max_prompt_words >= 1, self, "max_prompt_words", self.max_prompt_words, ">= 1")
        require(self.tokens in BM25_TOKENS, self, "tokens", self.tokens, str(BM25_TOKENS))
        require(self.k1 >= 0, self, "k1", self.k1, ">= 0")
        require(0 <= self.b <= 1, self, "b", self.b, "[0, 1]")
        require(self.method in BM25_METHODS, self, "method", self.method, str(BM25_METHODS))
        require(self.stopwords in ("", "en"), self, "stopwords", self.stopwords, "'' or 'en'")
        require(self.view in TEXT_VIEWS, self, "view", self.view, str(TEXT_VIEWS))
        require(self.lm_max_length >= 0, self, "lm_max_length", self.lm_max_length, ">= 0")
        require(
            self.lm_max_length == 0 or self.tokens == "target_lm",
            self,
            "lm_max_length",
            self.lm_max_length,
            "0 unless tokens='target_lm'",
        )
        require(
            isinstance(self.ngram_weights, tuple)
            and bool(self.ngram_weights)
            and all(isinstance(a, (int, float)) and a >= 0 for a in self.ngram_weights)
            and any(a > 0 for a in self.ngram_weights),
            self,
            "ngram_weights",
            self.ngram_weights,
            "a non-empty tuple of numbers >= 0, at least one > 0",
        )

    @property
    def needs_tokenizer(self) -> bool:
        """Whether the terms are the target LM's tokenizer pieces (the tokenizer is required)."""
        return self.tokens == "target_lm"


@dataclasses.dataclass(frozen=True)
class Bm25ResponseConfig(Bm25Config):
    """BM25 of response against response over the target LM's tokens, exactly the ones its loss
    and fine-tuning read: cut at the labels' fine-tuning ``max_length`` (``FinetuneConfig``
    presets: 64 / 192 / 512). The label-efficient recipe's lexical term and teacher (DESIGN.md
    §2; chosen on held-out label splits)."""

    view: str = help_field("response", f"text indexed and queried, one of {TEXT_VIEWS}")
    stopwords: str = help_field("", "bm25s stopword list; '' (target-LM tokens keep every piece)")
    tokens: str = help_field("target_lm", f"terms, one of {BM25_TOKENS}")
    lm_max_length: int = help_field(192, "the labels' fine-tuning max_length (tokens read)")

    PRESETS: ClassVar = {
        "tiny": {"lm_max_length": 64},
        "mini": {"lm_max_length": 192},
        "paper": {"lm_max_length": 512},
    }


@dataclasses.dataclass(frozen=True)
class EncoderBaselineConfig(StageConfig):
    """The off-the-shelf encoder (MiniLM, no projection, not trained): cosine or dot of embeddings."""

    backbone: str = help_field("all-MiniLM-L6-v2", "encoder backbone (HF id or local directory)")
    max_length: int = help_field(512, "encoder max tokens")
    batch_size: int = help_field(64, "texts per encoder batch")
    normalize: bool = help_field(True, "cosine similarity (True) or raw dot product (False)")
    precision: str = help_field("float32", "encoder precision: float32, bf16 or auto")

    PRESETS: ClassVar = {
        "tiny": {"max_length": 128, "batch_size": 16},
        "mini": {"max_length": 256, "batch_size": 32, "precision": "auto"},
        "paper": {"max_length": 512, "batch_size": 128, "precision": "auto"},
    }

    def validate(self) -> None:
        require(self.max_length >= 8, self, "max_length", self.max_length, ">= 8")
        require(self.batch_size >= 1, self, "batch_size", self.batch_size, ">= 1")


@dataclasses.dataclass(frozen=True)
class RdsConfig(StageConfig):
    """RDS: mean of the target LM's last-layer hidden states over the example's tokens."""

    max_length: int = help_field(512, "target-LM max tokens (lm.data truncation rule)")
    batch_size: int = help_field(8, "examples per forward pass")
    normalize: bool = help_field(True, "cosine similarity (True) or raw dot product (False)")
    precision: str = help_field("float32", PRECISION_HELP)

    PRESETS: ClassVar = {
        "tiny": {"max_length": 64, "batch_size": 4},
        "mini": {"max_length": 192, "batch_size": 8, "precision": "auto"},
        "paper": {"max_length": 512, "batch_size": 16, "precision": "auto"},
    }

    def validate(self) -> None:
        require(self.max_length >= 2, self, "max_length", self.max_length, ">= 2")
        require(self.batch_size >= 1, self, "batch_size", self.batch_size, ">= 1")


@dataclasses.dataclass(frozen=True)
class GradientFeatureConfig(StageConfig):
    """Per-example response-loss gradients of the tracked linear layers, Kronecker-projected.

    For each tracked ``nn.Linear`` (weight ``(d_out, d_in)``, bias as an extra input column of
    ones) the per-example gradient ``G = Σ_t g_t a_tᵀ`` is projected to
    ``P_out G P_inᵀ`` of shape ``(projection_out, projection_in)`` with seeded Gaussian
    ``P_in``/``P_out`` (LoGra's projection). ``projection_in = projection_out = 0`` keeps the exact
    gradient (no projection).
    """

    max_length: int = help_field(512, "target-LM max tokens (lm.data truncation rule)")
    batch_size: int = help_field(8, "examples per forward/backward pass")
    module_suffixes: tuple[str, ...] = help_field(
        BLOCK_LINEAR_SUFFIXES, "track every nn.Linear whose name ends with one of these"
    )
    projection_in: int = help_field(
        16, "projected input width per layer (0 = exact, no projection)"
    )
    projection_out: int = help_field(16, "projected output width per layer (0 = exact)")
    projection_seed: int = help_field(0, "seed of the random projection matrices")
    precision: str = help_field("float32", PRECISION_HELP)

    PRESETS: ClassVar = {
        "tiny": {"max_length": 64, "batch_size": 4, "projection_in": 8, "projection_out": 8},
        "mini": {"max_length": 192, "batch_size": 8, "precision": "auto"},
        "paper": {
            "max_length": 512,
            "batch_size": 16,
            "precision": "auto",
            "module_suffixes": MLP_LINEAR_SUFFIXES,
        },
    }

    def validate(self) -> None:
        require(self.max_length >= 2, self, "max_length", self.max_length, ">= 2")
        require(self.batch_size >= 1, self, "batch_size", self.batch_size, ">= 1")
        require(
            len(self.module_suffixes) > 0 and all(self.module_suffixes),
            self,
            "module_suffixes",
            self.module_suffixes,
            "a non-empty tuple of non-empty module-name suffixes",
        )
        both_zero = self.projection_in == 0 and self.projection_out == 0
        both_positive = self.projection_in >= 1 and self.projection_out >= 1
        require(
            both_zero or both_positive,
            self,
            "projection_in/projection_out",
            (self.projection_in, self.projection_out),
            "both 0 (exact gradients) or both >= 1",
        )

    @property
    def projected(self) -> bool:
        """Whether gradients are projected (False: exact per-layer gradients)."""
        return self.projection_in > 0


@dataclasses.dataclass(frozen=True)
class GradDotConfig(GradientFeatureConfig):
    """Grad-Dot / single-checkpoint TracIn: score = φ(x)ᵀ φ(z) of projected gradients."""


@dataclasses.dataclass(frozen=True)
class LograConfig(GradientFeatureConfig):
    """LoGra: projected per-layer gradients preconditioned with damped K-FAC factors.

    Per layer, ``(S ⊗ A + λ I)^{-1}`` with ``A``/``S`` the projected input-activation and
    output-gradient covariances over the train tokens and ``λ = damping · mean eigenvalue of
    S ⊗ A`` (kronfluence's heuristic damping with ``damping = 0.1``).
    """

    damping: float = help_field(0.1, "λ as a fraction of the mean eigenvalue of S ⊗ A, per layer")

    def validate(self) -> None:
        super().validate()
        require(self.damping > 0, self, "damping", self.damping, "> 0")


@dataclasses.dataclass(frozen=True)
class TrakConfig(GradientFeatureConfig):
    """TRAK (one model): score = φ(x)ᵀ (ΦᵀΦ + λ I)^{-1} φ(z), Φ the train features.

    ``λ = damping · trace(ΦᵀΦ) / k`` (a fraction of the mean eigenvalue over the k feature
    dimensions).
    """

    damping: float = help_field(0.1, "λ as a fraction of the mean eigenvalue of ΦᵀΦ")

    def validate(self) -> None:
        super().validate()
        require(self.damping > 0, self, "damping", self.damping, "> 0")
