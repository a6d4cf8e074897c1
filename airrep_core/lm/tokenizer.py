"""A byte-level BPE tokenizer trained on the corpus, for the scratch base model (offline default).

Trained with the ``tokenizers`` library (about a second for a few thousand examples) and wrapped
as a transformers ``PreTrainedTokenizerFast`` so that it saves and loads like any hub tokenizer
(``tokenizer.json`` + ``tokenizer_config.json``). Byte-level: every string tokenises, no unknowns.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
"""The one special token: end of text, also used for padding (as in Qwen2's base tokenizers)."""


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer of ``vocab_size`` tokens (the EOS token included).

    Args:
        texts: training text; iterated once.
        vocab_size: the vocabulary size including the 256 byte tokens and the special token;
            the result may be smaller when the text has too few distinct merges.
    Returns:
        a fast tokenizer with ``eos_token`` = ``pad_token`` = ``EOS_TOKEN``, no chat template,
        no BOS token added (the prompt format of DESIGN.md §2 starts the text).
    """
    if vocab_size < 257:
        raise ValueError(f"vocab_size={vocab_size} is invalid; allowed: >= 257 (256 bytes + EOS)")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=1_000_000,
    )
