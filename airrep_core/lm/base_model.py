"""The base target LM θ₀ (DESIGN.md §2): loaded from the hub / a directory, or built and warmed up.

Two sources, one result: a normal Hugging Face model directory (``config.json``,
``model.safetensors``, tokenizer files) that ``AutoModelForCausalLM.from_pretrained`` and vLLM load.

- A hub id or local directory goes through the real ``from_pretrained`` path (offline when the
  files are local or cached and ``HF_HUB_OFFLINE=1``) and is saved again, pinning its weights.
- ``"scratch"`` (the offline default for the CPU presets): a byte-level BPE tokenizer trained on
  the corpus's base share, a Qwen2 (or Llama) model built from a config with a seeded random init,
  then warmed up on that share until its held-out loss stops improving (``warmup.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)

from airrep_core.config.labels import BaseModelConfig
from airrep_core.data.examples import Example
from airrep_core.data.sampling import partition_corpus
from airrep_core.lm.loading import load_causal_lm
from airrep_core.lm.tokenizer import train_bpe_tokenizer
from airrep_core.lm.warmup import pack_blocks, warm_up, warmup_text
from airrep_core.records import JsonRecord
from airrep_core.runtime import resolve_device

_SCRATCH_CONFIGS: dict[str, type[PretrainedConfig]] = {"qwen2": Qwen2Config, "llama": LlamaConfig}


@dataclass
class BaseModelReport(JsonRecord):
    """What building the base model did (saved in the artifact's manifest).

    Losses are mean per-token cross-entropy (nats) over the held-out blocks; ``None`` for a
    model loaded from the hub (not warmed up here).
    """

    model: str
    n_parameters: int
    vocab_size: int
    n_warmup_examples: int = 0
    n_heldout_examples: int = 0
    heldout_loss_before: float | None = None
    heldout_loss_after: float | None = None
    warmup_steps: int = 0
    warmup_seconds: float = 0.0
    stopped_early: bool = False
    heldout_curve: list[tuple[int, float]] = field(default_factory=list)


def build_base_model(
    examples: Sequence[Example], config: BaseModelConfig, out_dir: str | Path
) -> BaseModelReport:
    """Write the base LM θ₀ as a Hugging Face model directory at ``out_dir``.

    Args:
        examples: the label corpus; a scratch model uses only its base share
            (``partition_corpus(ids, config.corpus_share)``), which sampling never uses.
        config: the base-model config.
        out_dir: an existing (empty) directory.
    """
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    if not config.is_scratch:
        model, tokenizer = load_causal_lm(config.model, device, revision=config.revision)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        return BaseModelReport(
            model=config.model,
            n_parameters=sum(p.numel() for p in model.parameters()),
            vocab_size=len(tokenizer),
        )
    warmup_examples, heldout_examples = select_warmup_examples(examples, config)
    warmup_texts = [warmup_text(example) for example in warmup_examples]
    heldout_texts = [warmup_text(example) for example in heldout_examples]
    tokenizer = train_bpe_tokenizer(warmup_texts, config.vocab_size)
    torch.manual_seed(config.seed)
    model = init_scratch_model(config, tokenizer).to(device)
    train_blocks = pack_blocks(tokenizer, warmup_texts, config.block_size)
    heldout_blocks = pack_blocks(tokenizer, heldout_texts, config.block_size)
    started = time.perf_counter()
    result = warm_up(model, train_blocks, heldout_blocks, config, device)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return BaseModelReport(
        model=f"scratch-{config.architecture}",
        n_parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=len(tokenizer),
        n_warmup_examples=len(warmup_examples),
        n_heldout_examples=len(heldout_examples),
        heldout_loss_before=result.heldout_curve[0][1],
        heldout_loss_after=result.best_loss,
        warmup_steps=result.steps,
        warmup_seconds=round(time.perf_counter() - started, 2),
        stopped_early=result.stopped_early,
        heldout_curve=result.heldout_curve,
    )


def select_warmup_examples(
    examples: Sequence[Example], config: BaseModelConfig
) -> tuple[list[Example], list[Example]]:
    """``(warm-up examples, held-out examples)`` from the corpus's base share, seeded.

    Held-out are the first ``n_heldout_examples`` of a seeded permutation of the base share
    (sorted by id first, so the input order does not matter), warm-up the next
    ``n_warmup_examples`` (fewer when the share is smaller).
    """
    by_id = {example.example_id: example for example in examples}
    base_ids, _ = partition_corpus(by_id, config.corpus_share)
    if len(base_ids) <= config.n_heldout_examples:
        raise ValueError(
            f"the corpus's base share (corpus_share={config.corpus_share}) holds {len(base_ids)} "
            f"examples, fewer than n_heldout_examples + 1 = {config.n_heldout_examples + 1}; "
            "raise corpus_share or use a larger dataset"
        )
    order = np.random.default_rng(np.random.SeedSequence([config.seed, 7])).permutation(
        len(base_ids)
    )
    heldout = [by_id[base_ids[i]] for i in order[: config.n_heldout_examples]]
    end = config.n_heldout_examples + config.n_warmup_examples
    warmup = [by_id[base_ids[i]] for i in order[config.n_heldout_examples : end]]
    return warmup, heldout


def init_scratch_model(config: BaseModelConfig, tokenizer: Any) -> PreTrainedModel:
    """A randomly initialised causal LM of ``config``'s shape for ``tokenizer`` (seed it first)."""
    config_cls = _SCRATCH_CONFIGS[config.architecture]
    model_config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
    )
    return AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
