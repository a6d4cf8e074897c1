"""Real data and a small real label set for the encoder tests (owned by the encoder tests).

The label set is built from real P3 examples (``flan_p3``) with a real, cheap, deterministic
"target LM": for each subset S, a word-unigram language model estimated on S's prompts and
responses with add-one smoothing over the vocabulary of all the examples involved; the label ℓ of
a target x for S is the mean negative log-likelihood of x's response words under that model. So a
subset "helps" a target when it uses the target's response words, which is the miniature's main
signal (DESIGN.md §6: token overlap carries much of it). Subsets are drawn with a skewed,
per-subset task mixture (Dirichlet(0.3) over templates) so that labels vary across subsets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from p3_fixtures import p3_examples
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from airrep_core.config.encoder import DEFAULT_ENCODER
from airrep_core.data.examples import Example
from airrep_core.data.labels import SplitLabels
from airrep_core.encoder.model import AirRepEncoder, resolve_backbone

WORD = re.compile(r"[a-z0-9]+")
PER_TEMPLATE = 60
"""P3 rows per task in the encoder tests' examples."""


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def unigram_split_labels(
    split_id: int,
    targets: Sequence[Example],
    pool: Sequence[Example],
    n_subsets: int,
    subset_size: int,
    seed: int,
) -> SplitLabels:
    """A split whose losses are unigram-LM response losses (see the module docstring)."""
    rng = np.random.default_rng([seed, split_id])
    groups = sorted({e.group for e in pool})
    by_group = {g: [i for i, e in enumerate(pool) if e.group == g] for g in groups}
    vocabulary = {w for e in (*targets, *pool) for w in words(e.prompt + " " + e.response)}
    members: list[tuple[str, ...]] = []
    losses = np.zeros((n_subsets, len(targets)), dtype=np.float32)
    for j in range(n_subsets):
        mixture = rng.dirichlet(np.full(len(groups), 0.3))
        counts = rng.multinomial(subset_size, mixture)
        chosen = []
        for group, count in zip(groups, counts, strict=True):
            candidates = by_group[group]
            chosen += rng.choice(
                candidates, size=min(count, len(candidates)), replace=False
            ).tolist()
        subset = [pool[i] for i in chosen]
        members.append(tuple(e.example_id for e in subset))
        unigram = Counter(w for e in subset for w in words(e.prompt + " " + e.response))
        total = sum(unigram.values()) + len(vocabulary)
        for t, target in enumerate(targets):
            target_words = words(target.response) or ["<empty>"]
            losses[j, t] = np.mean([-np.log((unigram[w] + 1) / total) for w in target_words])
    return SplitLabels(
        split_id=split_id,
        target_ids=tuple(e.example_id for e in targets),
        subset_ids=tuple(range(n_subsets)),
        subset_members=tuple(members),
        losses=losses,
    )


def unigram_label_set(
    n_splits: int, n_targets: int, n_subsets: int, subset_size: int, seed: int = 0
) -> tuple[list[SplitLabels], dict[str, Example]]:
    """``n_splits`` disjoint splits (targets and pools) of the P3 examples, and the examples."""
    examples = list(p3_examples(PER_TEMPLATE))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    per_split = len(examples) // n_splits
    splits = []
    for k in range(n_splits):
        part = [examples[i] for i in order[k * per_split : (k + 1) * per_split]]
        targets, pool = part[:n_targets], part[n_targets:]
        splits.append(unigram_split_labels(k, targets, pool, n_subsets, subset_size, seed))
    return splits, {e.example_id: e for e in examples}


@cache
def minilm_tokenizer() -> PreTrainedTokenizerBase:
    """The offline all-MiniLM-L6-v2 tokenizer (read once per test session)."""
    return AutoTokenizer.from_pretrained(resolve_backbone(DEFAULT_ENCODER))


def tiny_bert_encoder(
    seed: int = 0, *, dropout: float = 0.0, projection: bool = True, max_length: int = 48
) -> AirRepEncoder:
    """A small randomly initialised BERT (2 layers, width 32) behind the real HF code and the
    real MiniLM tokenizer: fast enough for exact-gradient and resume tests."""
    tokenizer = minilm_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    backbone = BertModel(config)
    return AirRepEncoder(
        backbone, tokenizer, projection=projection, max_length=max_length, projection_seed=seed
    )
