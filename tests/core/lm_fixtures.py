"""A tiny but real target LM for tests: P3-trained byte-level BPE, a small Qwen2, a LoRA adapter.

Everything goes through the real loading code: the tokenizer is trained with the ``tokenizers``
library on real P3 text from the shared data (``$AIRREP_DATA_DIR/flan_p3``), wrapped as a
``PreTrainedTokenizerFast``; the model is a ``Qwen2ForCausalLM`` built by the pipeline's scratch
builder ``init_scratch_model`` (head size 32, the smallest vLLM accepts), briefly trained on P3 so that its losses differ between examples;
the LoRA adapter is trained a few steps with peft on other P3 examples. Both are written with
``save_pretrained`` and read back by the code under test from their directories.

Use from a test module (tests/core has no ``__init__.py``, so pytest puts it on ``sys.path``)::

    from lm_fixtures import tiny_lm  # noqa: F401  (the session fixture)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from airrep_core.config.baselines import BLOCK_LINEAR_SUFFIXES
from airrep_core.config.labels import BaseModelConfig
from airrep_core.data.examples import Example
from airrep_core.lm.base_model import init_scratch_model
from airrep_core.lm.data import collate, tokenize_example

REPO = Path(__file__).resolve().parents[2]
EOS_TOKEN = "<|endoftext|>"
CHAT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Qwen's ChatML layout (without the default system turn), for the chat-template path."""

VOCAB_SIZE = 2048
MAX_POSITIONS = 512
SEED = 0
P3_FILE_STRIDE = 19
"""Every 19th P3 template file (sorted by name): 15 templates from many different tasks."""


@dataclass(frozen=True)
class TinyLM:
    """Paths and data of the test LM.

    Attributes:
        model_dir: ``save_pretrained`` directory of the model and its tokenizer.
        adapter_dir: peft ``save_pretrained`` directory of a LoRA adapter (rank ``lora_rank``) on it.
        lora_rank: the adapter's rank.
        merged_dir: the adapter merged into the model, saved as a full model (same config.json).
        eval_pairs: held-out P3 ``(prompt, response)`` pairs (not used in any training).
    """

    model_dir: Path
    adapter_dir: Path
    lora_rank: int
    merged_dir: Path
    eval_pairs: tuple[tuple[str, str], ...]


def data_dir() -> Path:
    """The shared sample data (``AIRREP_DATA_DIR``, default ``<repo>/../shared/data``)."""
    return Path(os.environ.get("AIRREP_DATA_DIR", REPO.parent / "shared" / "data"))


def read_p3_pairs(start: int, stop: int) -> list[tuple[str, str]]:
    """Lines ``[start, stop)`` of every ``P3_FILE_STRIDE``-th P3 template file, as pairs.

    The completion's trailing ``<|endoftext|>`` marker is not part of the answer and is removed.
    """
    files = sorted((data_dir() / "flan_p3").glob("*.jsonl"))[::P3_FILE_STRIDE]
    if not files:
        raise FileNotFoundError(f"no P3 files under {data_dir() / 'flan_p3'}; set AIRREP_DATA_DIR")
    pairs = []
    for path in files:
        with path.open() as lines:
            for line_number, line in enumerate(lines):
                if line_number >= stop:
                    break
                if line_number >= start:
                    row = json.loads(line)
                    pairs.append((row["prompt"], row["completion"].removesuffix("<|endoftext|>")))
    return pairs


def p3_example_records(start: int, stop: int) -> list[Example]:
    """``read_p3_pairs(start, stop)`` as ``Example`` records ``p3-0000``, ... of ``flan_p3``."""
    return [
        Example(f"p3-{i:04d}", prompt, response, "flan_p3")
        for i, (prompt, response) in enumerate(read_p3_pairs(start, stop))
    ]


def train_tokenizer(
    texts: Sequence[str], chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (``VOCAB_SIZE`` tokens) trained on ``texts``; EOS = pad."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS_TOKEN, *CHAT_SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )
    tokenizer.chat_template = chat_template
    return tokenizer


TINY_QWEN2 = BaseModelConfig.preset(
    "tiny", hidden_size=128, n_heads=4, intermediate_size=256, max_positions=MAX_POSITIONS
)
"""The tiny LM's shape: 2 layers, 128 wide, 4 heads of 32, 2 KV heads, tied embeddings."""


def tiny_qwen2(tokenizer: PreTrainedTokenizerFast, seed: int = SEED) -> PreTrainedModel:
    """A ``TINY_QWEN2`` Qwen2 for ``tokenizer``, seeded init (the pipeline's scratch builder)."""
    torch.manual_seed(seed)
    return init_scratch_model(TINY_QWEN2, tokenizer)


def train_steps(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    pairs: Sequence[tuple[str, str]],
    steps: int,
    lr: float,
    seed: int = SEED,
) -> None:
    """``steps`` AdamW steps on response-only loss over ``pairs`` (batches of 8, length 128)."""
    examples = [tokenize_example(tokenizer, p, r, max_length=128) for p, r in pairs]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(examples), (8,), generator=generator).tolist()
        batch = collate([examples[row] for row in rows], pad_id=tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def build_tiny_lm(root: Path) -> TinyLM:
    """Train the tokenizer, the model (60 steps) and a rank-8 LoRA adapter (20 steps) under root;
    save the model, the adapter and their merge."""
    from peft import LoraConfig, get_peft_model

    train_pairs = read_p3_pairs(0, 30)
    adapter_pairs = read_p3_pairs(30, 40)
    eval_pairs = read_p3_pairs(40, 42)
    tokenizer = train_tokenizer([f"{p} {r}" for p, r in train_pairs])
    model = tiny_qwen2(tokenizer)
    train_steps(model, tokenizer, train_pairs, steps=60, lr=3e-3)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    lora_rank = 8
    lora_config = LoraConfig(
        r=lora_rank,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=list(BLOCK_LINEAR_SUFFIXES),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(SEED)
    lora_model = get_peft_model(model, lora_config)
    train_steps(lora_model, tokenizer, adapter_pairs, steps=20, lr=1e-2)
    adapter_dir = root / "adapter"
    lora_model.save_pretrained(adapter_dir)
    merged_dir = root / "merged"
    lora_model.merge_and_unload().save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    return TinyLM(model_dir, adapter_dir, lora_rank, merged_dir, tuple(eval_pairs))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    """The session's tiny LM (built once, ~10 s)."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))
