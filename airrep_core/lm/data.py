"""Target-LM token sequences with response-only labels, their batching and padding.

One example z = (prompt, response) becomes one token sequence whose labels are ``-100`` on the
prompt tokens and the token ids on the response tokens, so that the fine-tuning loss and the
evaluated loss ℓ (DESIGN.md §2, "Labels": mean per-token cross-entropy of the response tokens)
see the response only. Fine-tuning and loss evaluation (both backends) share this tokenisation,
so a target's tokens are the same everywhere.

Text format (DESIGN.md §2, "Label generation"):

- plain tokenizer: ``lm_prompt(prompt) + " " + response`` then the EOS token; the prompt part is
  ``"Question: {prompt}\\nAnswer:"``, the response part starts with the space.
- tokenizer with a chat template: one user turn (content ``lm_prompt(prompt)``) and one assistant
  turn (content ``response``) rendered by the template; the prompt part is the user turn rendered
  with the generation prompt, the response part is everything the template adds after it (the
  response and its end-of-turn markup, trailing whitespace removed), then the EOS token unless the
  template already ends with it.

The prompt/response boundary is exact: the prompt part is tokenised alone and must be a prefix of
the tokenised whole; where a tokenizer merges characters across the boundary (it is not a
prefix), the two parts are tokenised separately and concatenated instead.

Truncation rule (sequences longer than ``max_length`` tokens): the response keeps its first
``max(1, max_length - n_prompt)`` tokens (so the loss always has at least one response token),
and the prompt keeps its *last* ``max_length - n_response_kept`` tokens (cut from the left, so the
tokens right before the response survive). A prompt that fits is never cut; a response that does
not fit loses its tail (and the EOS token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from airrep_core.data.examples import lm_prompt

IGNORE_INDEX = -100
"""Label of a token that takes no part in the loss (PyTorch's ``cross_entropy`` default)."""

MIN_MAX_LENGTH = 2
"""The smallest ``max_length``: one prompt token to predict from and one response token."""


@dataclass(frozen=True)
class TokenizedExample:
    """One example's token ids and response-only labels.

    Attributes:
        input_ids: ``(n_tokens,)`` token ids, prompt tokens then response tokens.
        labels: ``(n_tokens,)`` ``IGNORE_INDEX`` (-100) at prompt tokens, the token id at response
            tokens. Unshifted: the model's logits at position ``t - 1`` predict ``labels[t]``.
    """

    input_ids: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(
                f"input_ids ({len(self.input_ids)} tokens) and labels ({len(self.labels)}) "
                "must have the same length"
            )

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def response_mask(self) -> list[bool]:
        """``(n_tokens,)`` True at response tokens (the ones the loss is taken on)."""
        return [label != IGNORE_INDEX for label in self.labels]

    @property
    def num_prompt_tokens(self) -> int:
        """Number of leading prompt tokens (labels ``IGNORE_INDEX``)."""
        return len(self.labels) - self.num_response_tokens

    @property
    def num_response_tokens(self) -> int:
        """Number of response tokens (labels kept)."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_example(
    tokenizer: Any, prompt: str, response: str, max_length: int
) -> TokenizedExample:
    """Tokenise ``(prompt, response)`` with response-only labels (module docstring: format, rule).

    Args:
        tokenizer: a transformers tokenizer (``PreTrainedTokenizerBase``) with an EOS token.
        prompt: the raw prompt (``lm_prompt`` wraps it).
        response: the raw response.
        max_length: the most tokens kept, at least ``MIN_MAX_LENGTH``.

    Returns:
        the ``TokenizedExample``; it has at least one prompt token and one response token.
    """
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise TypeError(
            f"prompt and response must be str, got {type(prompt).__name__} and "
            f"{type(response).__name__}"
        )
    if not isinstance(max_length, int) or max_length < MIN_MAX_LENGTH:
        raise ValueError(
            f"max_length={max_length!r} is invalid; allowed: an int >= {MIN_MAX_LENGTH}"
        )
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; set eos_token")

    prompt_text, response_text, add_special = _prompt_and_response_texts(
        tokenizer, prompt, response
    )
    prompt_ids, response_ids = _split_token_ids(tokenizer, prompt_text, response_text, add_special)
    if not prompt_ids:
        raise ValueError(f"prompt {prompt_text!r} tokenised to no tokens")
    if not response_ids or response_ids[-1] != eos_id:
        response_ids.append(eos_id)

    if len(prompt_ids) + len(response_ids) > max_length:
        n_response = min(len(response_ids), max(1, max_length - len(prompt_ids)))
        response_ids = response_ids[:n_response]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_length - n_response) :]
    return TokenizedExample(
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(response_ids),
    )


def read_token_ids(
    tokenizer: Any, prompt: str, response: str, max_length: int, response_only: bool
) -> list[int]:
    """The token ids the target LM reads of ``(prompt, response)`` when fine-tuned or scored at
    ``max_length`` (``tokenize_example``'s format and truncation): the response's kept tokens
    (with EOS unless cut) when ``response_only``, else the whole kept sequence."""
    tokens = tokenize_example(tokenizer, prompt, response, max_length)
    if not response_only:
        return tokens.input_ids
    return tokens.input_ids[tokens.num_prompt_tokens :]


def _prompt_and_response_texts(tokenizer: Any, prompt: str, response: str) -> tuple[str, str, bool]:
    """``(prompt part, response part, add_special_tokens)``: the full text is their concatenation.

    With a chat template the rendered text carries its own special tokens, so the tokenizer must
    not add any (``add_special_tokens=False``), as in ``apply_chat_template(tokenize=True)``.
    """
    user_text = lm_prompt(prompt)
    if getattr(tokenizer, "chat_template", None) is None:
        return user_text, " " + response, True
    user_turn = [{"role": "user", "content": user_text}]
    rendered_prompt = tokenizer.apply_chat_template(
        user_turn, tokenize=False, add_generation_prompt=True
    )
    rendered_full = tokenizer.apply_chat_template(
        [*user_turn, {"role": "assistant", "content": response}], tokenize=False
    )
    if not rendered_full.startswith(rendered_prompt):
        raise ValueError(
            "the tokenizer's chat template renders the user turn with the generation prompt "
            f"({rendered_prompt[-80:]!r} at its end) differently from the start of the full "
            "conversation, so the prompt/response boundary is undefined; use a template whose "
            "generation prompt is a prefix of the conversation"
        )
    return rendered_prompt, rendered_full[len(rendered_prompt) :].rstrip(), False


def _split_token_ids(
    tokenizer: Any, prompt_text: str, response_text: str, add_special: bool
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt part and of the response part, with an exact boundary."""
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=add_special)["input_ids"])
    full_ids = list(
        tokenizer(prompt_text + response_text, add_special_tokens=add_special)["input_ids"]
    )
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return prompt_ids, full_ids[len(prompt_ids) :]
    return prompt_ids, list(tokenizer(response_text, add_special_tokens=False)["input_ids"])


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into tensors.

    Returns:
        ``input_ids`` ``(B, T)`` int64 (padded with ``pad_id``), ``attention_mask`` ``(B, T)``
        int64 (1 = token, 0 = padding), ``labels`` ``(B, T)`` int64 (padded with
        ``IGNORE_INDEX``), with ``T`` the longest example's length.
    """
    if not batch:
        raise ValueError("collate: the batch is empty")
    width = max(len(example) for example in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into ``lengths`` grouped in batches of ``batch_size``, longest first.

    Ties keep the input order (stable sort), so the batching is deterministic. The first batch
    holds the longest sequences, so a batch size that runs out of memory fails at once.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an int >= 1")
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
