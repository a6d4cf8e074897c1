"""The in-memory example record shared by every core function, and the text formats built from it."""

from __future__ import annotations

from dataclasses import dataclass

from airrep_core.config.base import TEXT_VIEWS

MAX_PROMPT_WORDS = 256


@dataclass(frozen=True, slots=True)
class Example:
    """One instruction example z = (prompt, response).

    ``example_id`` is stable across imports; ``source`` is the dataset name; ``group`` is the task,
    template or category (``None`` when the data has none).
    """

    example_id: str
    prompt: str
    response: str
    source: str = ""
    group: str | None = None


def encoder_text(prompt: str, response: str, max_prompt_words: int = MAX_PROMPT_WORDS) -> str:
    """The encoder's input text (DESIGN.md §2): ``"Question: " + prompt + "\\nAnswer: " + response``.

    The prompt is cut to its first ``max_prompt_words`` whitespace-separated words; tokenisation and
    truncation to the encoder's max length happen in the encoder.
    """
    words = prompt.split()
    if len(words) > max_prompt_words:
        prompt = " ".join(words[:max_prompt_words])
    return f"Question: {prompt}\nAnswer: {response}"


def view_text(example: Example, view: str, max_prompt_words: int = MAX_PROMPT_WORDS) -> str:
    """The text of ``example`` in ``view`` (one of ``TEXT_VIEWS``; the prompt cut to
    ``max_prompt_words`` words in ``question_answer``)."""
    if view == "question_answer":
        return encoder_text(example.prompt, example.response, max_prompt_words)
    if view == "response":
        return example.response
    raise ValueError(f"view={view!r} is invalid; allowed: {TEXT_VIEWS}")


def lm_prompt(prompt: str) -> str:
    """The target LM's prompt text (DESIGN.md §2): ``"Question: {prompt}\\nAnswer:"``.

    The response follows after a single space; the loss is taken on the response tokens only.
    """
    return f"Question: {prompt}\nAnswer:"
