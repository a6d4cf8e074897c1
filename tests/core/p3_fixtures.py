"""Real P3 examples of six different tasks, shared by the core test fixtures.

Use from a test module or fixture module (tests/core has no ``__init__.py``, so pytest puts it on
``sys.path``)::

    from p3_fixtures import TEMPLATES, p3_examples
"""

from __future__ import annotations

import json
from functools import cache

from airrep_core.data.examples import Example
from storage.sample_data import sample_data_dir

END_OF_TEXT = "<|endoftext|>"
"""The marker that ends every P3 completion; not part of the answer."""
TEMPLATES = (
    "imdb_Movie_Expressed_Sentiment",
    "ag_news_classify",
    "gigaword_make_a_title",
    "samsum_Summarize_",
    "commonsense_qa_answer_to_question",
    "sciq_Direct_Question",
)
"""Six templates of six different P3 tasks with non-empty, distinctive responses."""


@cache
def p3_examples(per_template: int) -> tuple[Example, ...]:
    """The first ``per_template`` examples with a non-empty response of each of ``TEMPLATES``,
    template after template; ids are ``<template>:<line number>``, group the template."""
    examples = []
    for template in TEMPLATES:
        path = sample_data_dir() / "flan_p3" / f"{template}.jsonl"
        kept = 0
        with path.open(encoding="utf-8") as lines:
            for line_number, line in enumerate(lines, start=1):
                row = json.loads(line)
                response = row["completion"].removesuffix(END_OF_TEXT).strip()
                if not response:
                    continue
                examples.append(
                    Example(
                        f"{template}:{line_number}", row["prompt"], response, "flan_p3", template
                    )
                )
                kept += 1
                if kept == per_template:
                    break
    return tuple(examples)
