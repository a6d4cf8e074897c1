"""A tiny real target LM and real P3 examples for the baseline tests (owned by the baseline tests).

The tokenizer is the project's byte-level BPE (``airrep_core.lm.tokenizer.train_bpe_tokenizer``) trained on a
few hundred real P3 examples (``$AIRREP_DATA_DIR/flan_p3``); the model is a 2-layer, 128-wide
``Qwen2ForCausalLM`` (4 heads, 2 KV heads, q/k/v biases, tied embeddings) from a seeded config,
trained 30 AdamW steps on those examples so that its gradients are not those of a random model.
Both are written with ``save_pretrained`` and read back with the ``Auto*`` classes.

Use from a test module (tests/core has no ``__init__.py``, so pytest puts it on ``sys.path``)::

    from baseline_fixtures import build_tiny_target_lm, load_target_lm
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from lm_fixtures import tiny_qwen2
from p3_fixtures import TEMPLATES, p3_examples
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from airrep_core.data.examples import Example
from airrep_core.lm.data import collate, tokenize_example
from airrep_core.lm.tokenizer import train_bpe_tokenizer

SEED = 0
PER_TEMPLATE = 50
"""P3 rows per task: the first 40 train the tiny LM, the last 10 are train/query examples."""


def train_and_query_examples(
    n_train: int = 18, n_query: int = 6
) -> tuple[list[Example], list[Example]]:
    """Train and query examples interleaved over the six tasks (disjoint, from the 41st row on)."""
    by_task = [
        list(p3_examples(PER_TEMPLATE)[i * PER_TEMPLATE + 40 : (i + 1) * PER_TEMPLATE])
        for i in range(len(TEMPLATES))
    ]
    mixed = [task[row] for row in range(10) for task in by_task]
    return mixed[:n_train], mixed[n_train : n_train + n_query]


def build_tiny_target_lm(directory: Path) -> Path:
    """Train the tokenizer and the 2-layer Qwen2 on the first 40 rows of each task; save them."""
    corpus = [e for i, e in enumerate(p3_examples(PER_TEMPLATE)) if i % PER_TEMPLATE < 40]
    tokenizer = train_bpe_tokenizer((f"{e.prompt} {e.response}" for e in corpus), vocab_size=1024)
    model = tiny_qwen2(tokenizer, SEED)
    tokenized = [tokenize_example(tokenizer, e.prompt, e.response, 64) for e in corpus]
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        rows = torch.randint(len(tokenized), (8,), generator=generator).tolist()
        batch = collate([tokenized[row] for row in rows], pad_id=tokenizer.pad_token_id)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@dataclass(frozen=True)
class BaselineLM:
    """The loaded test LM and its directory."""

    directory: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def load_target_lm(directory: Path) -> BaselineLM:
    """Model (float32, eval mode, eager attention for exact batched/unbatched equality) and tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    model.eval()
    return BaselineLM(directory, model, AutoTokenizer.from_pretrained(directory))
