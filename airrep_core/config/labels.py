"""Configs of label generation (DESIGN.md §2, "Label generation"): sampling, base LM, fine-tuning.

``LabelsConfig`` composes the three stage configs; each also stands alone (the LDS ground truth
reuses ``BaseModelConfig`` and ``FinetuneConfig`` with ``EvaluationSamplingConfig``).

Presets: ``tiny`` (the test suite: a 2-layer, head-size-32 Qwen2 and a few dozen examples, seconds),
``mini`` (the CPU benchmark on P3, DESIGN.md §6 calibration, about an hour on 2 AVX2 cores),
``paper`` (the paper's protocol: Qwen2.5-0.5B, 100 splits x 100 subsets x 1,000 examples; GPUs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from airrep_core.config.base import (
    DEVICES,
    PRECISIONS,
    PRESET_NAMES,
    StageConfig,
    help_field,
    require,
)

SCRATCH_MODEL = "scratch"
SCRATCH_ARCHITECTURES = ("qwen2", "llama")
FINETUNE_METHODS = ("full", "lora")
LR_SCHEDULES = ("constant", "linear", "cosine")
MIN_HEAD_SIZE = 32  # vLLM's smallest supported attention head size


def _positive(config: StageConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        require(isinstance(value, int) and value >= 1, config, name, value, "an int >= 1")


def _validate_subset_draw(config: SamplingConfig | EvaluationSamplingConfig, *counts: str) -> None:
    """The checks of a seeded draw of subsets from a pool: ``seed`` an int >= 0, each of
    ``counts`` an int >= 1, ``subset_size <= pool_size`` (in this order)."""
    require(
        isinstance(config.seed, int) and config.seed >= 0,
        config,
        "seed",
        config.seed,
        "an int >= 0",
    )
    _positive(config, *counts)
    require(
        config.subset_size <= config.pool_size,
        config,
        "subset_size",
        config.subset_size,
        f"<= pool_size ({config.pool_size})",
    )


@dataclasses.dataclass(frozen=True)
class SamplingConfig(StageConfig):
    """Splits and subsets of the label-generation corpus (a pure function of (seed, split))."""

    seed: int = help_field(
        0, "seed of every split's draw (split s uses the seed sequence (seed, s))"
    )
    n_splits: int = help_field(5, "number of splits")
    n_targets: int = help_field(100, "N_v: target examples per split")
    pool_size: int = help_field(1000, "N_t: training pool per split (disjoint from its targets)")
    n_subsets: int = help_field(48, "M: subsets per split (distinct as sets)")
    subset_size: int = help_field(100, "n: examples per subset, without repeats")

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {
            "n_splits": 2,
            "n_targets": 6,
            "pool_size": 24,
            "n_subsets": 4,
            "subset_size": 8,
        },
        # Sized for well under an hour on 2 AVX2 cores in float32 (benchmarks/label_throughput.py):
        # 4 x 32 = 128 subsets of 50 (10% of the pool, as in DESIGN.md §6), plus the warm-up.
        "mini": {
            "n_splits": 4,
            "n_targets": 100,
            "pool_size": 500,
            "n_subsets": 32,
            "subset_size": 50,
        },
        "paper": {
            "n_splits": 100,
            "n_targets": 10_000,
            "pool_size": 100_000,
            "n_subsets": 100,
            "subset_size": 1000,
        },
    }

    def validate(self) -> None:
        _validate_subset_draw(
            self, "n_splits", "n_targets", "pool_size", "n_subsets", "subset_size"
        )


@dataclasses.dataclass(frozen=True)
class EvaluationSamplingConfig(StageConfig):
    """Subsets of one evaluation set's train pool for LDS ground truth (DESIGN.md §3)."""

    seed: int = help_field(0, "seed of the draw")
    pool_size: int = help_field(1000, "train pool drawn from the evaluation set (when not given)")
    n_test: int = help_field(100, "test examples drawn from the evaluation set (when not given)")
    n_subsets: int = help_field(48, "K: subsets of the pool")
    subset_size: int = help_field(100, "examples per subset")

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {"pool_size": 24, "n_test": 6, "n_subsets": 4, "subset_size": 8},
        "mini": {"pool_size": 500, "n_test": 100, "n_subsets": 24, "subset_size": 50},
        "paper": {"pool_size": 10_000, "n_test": 1000, "n_subsets": 100, "subset_size": 1000},
    }

    def validate(self) -> None:
        _validate_subset_draw(self, "pool_size", "n_test", "n_subsets", "subset_size")


@dataclasses.dataclass(frozen=True)
class BaseModelConfig(StageConfig):
    """The base target LM θ₀: a hub id / local directory, or built from scratch and warmed up."""

    model: str = help_field(
        SCRATCH_MODEL,
        f"{SCRATCH_MODEL!r} (build from a config, train a BPE tokenizer, warm up on the corpus) "
        "or a Hugging Face hub id / local model directory loaded with from_pretrained",
    )
    revision: str = help_field("", "hub revision (commit/tag) of `model`; empty = default branch")
    architecture: str = help_field("qwen2", f"scratch model family, one of {SCRATCH_ARCHITECTURES}")
    n_layers: int = help_field(4, "scratch: transformer blocks")
    hidden_size: int = help_field(256, "scratch: hidden width")
    n_heads: int = help_field(4, "scratch: attention heads (head size = hidden / heads >= 32)")
    n_kv_heads: int = help_field(4, "scratch: key/value heads (divides n_heads)")
    intermediate_size: int = help_field(768, "scratch: MLP width")
    tie_embeddings: bool = help_field(True, "scratch: tie input embedding and LM head")
    max_positions: int = help_field(1024, "scratch: max position embeddings")
    vocab_size: int = help_field(
        8192, "scratch: byte-level BPE vocabulary size (special tokens incl.)"
    )
    corpus_share: float = help_field(
        0.25,
        "fraction of the corpus (chosen by a hash of example_id) reserved for the tokenizer and "
        "warm-up; label subsets and targets never use it (0 for a hub model)",
    )
    n_warmup_examples: int = help_field(12_000, "scratch: warm-up (pretraining) examples")
    n_heldout_examples: int = help_field(500, "scratch: held-out examples for the warm-up loss")
    block_size: int = help_field(256, "scratch: warm-up token block length (packed text)")
    batch_size: int = help_field(16, "scratch: warm-up blocks per step")
    learning_rate: float = help_field(2e-3, "scratch: warm-up peak AdamW learning rate")
    weight_decay: float = help_field(0.01, "scratch: warm-up AdamW weight decay")
    lr_warmup_steps: int = help_field(40, "scratch: linear learning-rate warm-up steps")
    max_steps: int = help_field(780, "scratch: warm-up step budget (cosine decay to 10% over it)")
    eval_every: int = help_field(60, "scratch: steps between held-out evaluations")
    patience: int = help_field(
        2, "scratch: stop after this many evaluations without a held-out improvement"
    )
    min_improvement: float = help_field(0.005, "scratch: smallest held-out loss drop that counts")
    seed: int = help_field(0, "seed of the init, tokenizer sample and warm-up order")
    precision: str = help_field(
        "auto", f"warm-up precision, one of {PRECISIONS} (see FinetuneConfig)"
    )
    device: str = help_field("auto", f"one of {DEVICES}")

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {
            "n_layers": 2,
            "hidden_size": 64,
            "n_heads": 2,
            "n_kv_heads": 2,
            "intermediate_size": 128,
            "max_positions": 256,
            "vocab_size": 400,
            "corpus_share": 0.4,
            "n_warmup_examples": 48,
            "n_heldout_examples": 8,
            "block_size": 64,
            "batch_size": 4,
            "learning_rate": 3e-3,
            "lr_warmup_steps": 2,
            "max_steps": 12,
            "eval_every": 4,
        },
        # NOTE: precision stays "auto" (float32 on CPU). bf16 autocast pays off only on CPUs with
        # AMX/AVX512-BF16 (DESIGN.md §6's machine): airrep_core/runtime.py measures it at run time.
        # Warm-up budget 780 steps (DESIGN.md §6), chosen by the held-out loss alone: at 300 steps
        # it was still falling (5.76 after 9.05; §6 reaches 4.79 at 780), and the early stop
        # (patience, min_improvement) ends the warm-up sooner when it flattens. About 31 min in
        # float32 on 2 AVX-512 cores; `airrep bench lds --base-steps 300` is the earlier regime.
        "mini": {"max_steps": 780, "n_heldout_examples": 200},
        "paper": {"model": "Qwen/Qwen2.5-0.5B", "corpus_share": 0.0},
    }

    @property
    def is_scratch(self) -> bool:
        """True when the base model is built from a config and warmed up here."""
        return self.model == SCRATCH_MODEL

    def validate(self) -> None:
        require(
            isinstance(self.model, str) and bool(self.model.strip()),
            self,
            "model",
            self.model,
            f"{SCRATCH_MODEL!r}, a hub id or a local directory",
        )
        require(
            self.architecture in SCRATCH_ARCHITECTURES,
            self,
            "architecture",
            self.architecture,
            str(SCRATCH_ARCHITECTURES),
        )
        require(
            isinstance(self.corpus_share, (int, float)) and 0.0 <= self.corpus_share < 1.0,
            self,
            "corpus_share",
            self.corpus_share,
            "a number in [0, 1)",
        )
        if not self.is_scratch:
            return
        _positive(
            self,
            "n_layers",
            "hidden_size",
            "n_heads",
            "n_kv_heads",
            "intermediate_size",
            "max_positions",
            "n_warmup_examples",
            "n_heldout_examples",
            "batch_size",
            "max_steps",
            "eval_every",
            "patience",
        )
        require(self.block_size >= 2, self, "block_size", self.block_size, "an int >= 2")
        require(
            self.block_size <= self.max_positions,
            self,
            "block_size",
            self.block_size,
            f"<= max_positions ({self.max_positions})",
        )
        require(
            self.hidden_size % self.n_heads == 0
            and self.hidden_size // self.n_heads >= MIN_HEAD_SIZE,
            self,
            "n_heads",
            self.n_heads,
            f"a divisor of hidden_size ({self.hidden_size}) leaving a head size >= {MIN_HEAD_SIZE}",
        )
        require(
            self.n_heads % self.n_kv_heads == 0,
            self,
            "n_kv_heads",
            self.n_kv_heads,
            f"a divisor of n_heads ({self.n_heads})",
        )
        require(
            self.vocab_size >= 300,
            self,
            "vocab_size",
            self.vocab_size,
            ">= 300 (256 bytes + merges)",
        )
        require(
            self.corpus_share > 0,
            self,
            "corpus_share",
            self.corpus_share,
            "> 0 for a scratch model",
        )
        require(self.learning_rate > 0, self, "learning_rate", self.learning_rate, "> 0")
        require(self.weight_decay >= 0, self, "weight_decay", self.weight_decay, ">= 0")
        require(self.lr_warmup_steps >= 0, self, "lr_warmup_steps", self.lr_warmup_steps, ">= 0")
        require(self.min_improvement >= 0, self, "min_improvement", self.min_improvement, ">= 0")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(StageConfig):
    """Fine-tuning θ₀ on one subset and evaluating the targets' response losses."""

    method: str = help_field("full", f"one of {FINETUNE_METHODS}: full fine-tuning or LoRA (peft)")
    epochs: int = help_field(3, "epochs over the subset")
    batch_size: int = help_field(8, "examples per optimiser step")
    learning_rate: float = help_field(5e-4, "AdamW learning rate")
    weight_decay: float = help_field(0.0, "AdamW weight decay")
    adam_betas: tuple[float, float] = help_field((0.9, 0.999), "AdamW betas")
    lr_schedule: str = help_field("constant", f"one of {LR_SCHEDULES} (after the warm-up)")
    warmup_ratio: float = help_field(
        0.0, "fraction of the steps with a linear learning-rate warm-up"
    )
    max_grad_norm: float = help_field(1.0, "gradient-norm clip (0 = none)")
    max_length: int = help_field(192, "tokens per example (prompt cut from the left, lm.data)")
    seed: int = help_field(0, "seed of the batch order; the same for every subset")
    precision: str = help_field(
        "auto",
        f"one of {PRECISIONS}: auto = bf16 autocast on CUDA, float32 on CPU; bf16 = bf16 autocast "
        "(float32 weights and optimiser state) on either device",
    )
    eval_precision: str = help_field("auto", f"loss-evaluation precision, one of {PRECISIONS}")
    device: str = help_field("auto", f"one of {DEVICES}: auto = CUDA when available")
    eval_batch_size: int = help_field(32, "targets per evaluation batch")
    lora_rank: int = help_field(8, "LoRA rank r")
    lora_alpha: float = help_field(16.0, "LoRA alpha")
    lora_dropout: float = help_field(0.0, "LoRA dropout")
    lora_target_modules: tuple[str, ...] = help_field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names LoRA adapts",
    )

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "max_length": 64},
        "mini": {},  # precision "auto": float32 on CPU (see BaseModelConfig's mini preset)
        "paper": {
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 2e-5,
            "max_length": 512,
            "lr_schedule": "linear",
            "warmup_ratio": 0.03,
        },
    }

    def validate(self) -> None:
        require(self.method in FINETUNE_METHODS, self, "method", self.method, str(FINETUNE_METHODS))
        _positive(self, "epochs", "batch_size", "eval_batch_size", "lora_rank")
        require(self.learning_rate > 0, self, "learning_rate", self.learning_rate, "> 0")
        require(self.weight_decay >= 0, self, "weight_decay", self.weight_decay, ">= 0")
        require(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            self,
            "adam_betas",
            self.adam_betas,
            "two numbers in [0, 1)",
        )
        require(
            self.lr_schedule in LR_SCHEDULES,
            self,
            "lr_schedule",
            self.lr_schedule,
            str(LR_SCHEDULES),
        )
        require(0 <= self.warmup_ratio < 1, self, "warmup_ratio", self.warmup_ratio, "[0, 1)")
        require(self.max_grad_norm >= 0, self, "max_grad_norm", self.max_grad_norm, ">= 0")
        require(self.max_length >= 2, self, "max_length", self.max_length, "an int >= 2")
        require(
            isinstance(self.seed, int) and self.seed >= 0, self, "seed", self.seed, "an int >= 0"
        )
        require(self.lora_alpha > 0, self, "lora_alpha", self.lora_alpha, "> 0")
        require(0 <= self.lora_dropout < 1, self, "lora_dropout", self.lora_dropout, "[0, 1)")
        require(
            len(self.lora_target_modules) > 0,
            self,
            "lora_target_modules",
            self.lora_target_modules,
            "at least one module name",
        )


def base_steps_override(base_steps: int | None) -> dict[str, Any]:
    """``LabelsConfig.preset`` overrides for another scratch base LM warm-up budget
    (``BaseModelConfig.max_steps``; None = the preset's): the regime table's runs."""
    return {"base": {"max_steps": base_steps}} if base_steps else {}


@dataclasses.dataclass(frozen=True)
class LabelsConfig(StageConfig):
    """Label generation end to end: sampling, base model, fine-tuning (one preset name for all)."""

    sampling: SamplingConfig = dataclasses.field(
        default_factory=SamplingConfig, metadata={"help": "splits and subsets"}
    )
    base: BaseModelConfig = dataclasses.field(
        default_factory=BaseModelConfig, metadata={"help": "the base target LM"}
    )
    finetune: FinetuneConfig = dataclasses.field(
        default_factory=FinetuneConfig, metadata={"help": "fine-tuning and loss evaluation"}
    )

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {name: {} for name in PRESET_NAMES}
    """Every part at its own preset of the same name."""
