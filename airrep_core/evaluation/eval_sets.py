"""Evaluation sets: hold-out rules and the pool/test draw (DESIGN.md §3; never tune on tests).

- **P3 hold-out by template.** A P3 template (one upstream file) is held out from AirRep's
  training corpus when sha256 of its name falls in the lowest ``share`` of the hash range. Whole
  templates go to one side, so the P3 evaluation set has examples *and* prompt templates that
  AirRep's labels never contained (other templates of the same task may be in training: the
  paper's FLAN setting). The rule depends only on the template name, so it is stable when the
  data grows.
- **Pool/test by prompt.** An evaluation set's test examples and train pool never share a prompt
  (e.g. HH-RLHF's chosen and rejected transcripts of one dialogue stay on one side): prompts are
  shuffled with the seed; the first ``n_test`` prompts give one test example each, the following
  prompts fill the pool. For data with unique prompts this is a plain random split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np

from airrep_core.data.examples import Example

P3_HELDOUT_SHARE = 0.1
"""Share of P3 templates held out from AirRep's training corpus for the P3 evaluation set."""

P3_TASKS = (
    "adversarial_qa",
    "ag_news",
    "amazon_polarity",
    "app_reviews",
    "cnn_dailymail",
    "common_gen",
    "commonsense_qa",
    "cosmos_qa",
    "dbpedia_14",
    "dream",
    "duorc",
    "gigaword",
    "glue_mrpc",
    "glue_qqp",
    "imdb",
    "kilt_tasks_hotpotqa",
    "multi_news",
    "paws",
    "qasc",
    "quarel",
    "quartz",
    "quoref",
    "ropes",
    "rotten_tomatoes",
    "samsum",
    "sciq",
    "social_i_qa",
    "trec",
    "wiki_bio",
    "wiki_hop",
    "wiki_qa",
    "wiqa",
    "xsum",
    "yelp_review_full",
)
"""Source datasets of the P3 templates (a template's name starts with ``<task>_``)."""

_HASH_SCALE = float(2**64)


def p3_task(template: str) -> str:
    """The source task of a P3 template name (longest matching ``<task>_`` prefix).

    Raises ``ValueError`` naming the template when no known task matches.
    """
    matches = [t for t in P3_TASKS if template == t or template.startswith(f"{t}_")]
    if not matches:
        raise ValueError(f"P3 template {template!r} starts with no known task of {P3_TASKS}")
    return max(matches, key=len)


def is_heldout_template(template: str, share: float = P3_HELDOUT_SHARE) -> bool:
    """Whether the P3 ``template`` is held out of AirRep's training corpus (module docstring)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share={share!r} is invalid; allowed: a number in (0, 1)")
    digest = hashlib.sha256(template.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SCALE < share


def split_templates(
    templates: Iterable[str], share: float = P3_HELDOUT_SHARE
) -> tuple[list[str], list[str]]:
    """``(training_templates, heldout_templates)``, both sorted."""
    names = sorted(set(templates))
    heldout = [t for t in names if is_heldout_template(t, share)]
    return [t for t in names if t not in set(heldout)], heldout


def draw_pool_and_test_by_prompt(
    examples: Mapping[str, Example], pool_size: int, n_test: int, seed: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(pool_ids, test_ids)`` sorted, with no prompt shared between pool and test.

    A pure function of the examples' ids and prompts and ``seed`` (input order ignored).
    Raises ``ValueError`` when the set has too few distinct prompts for ``n_test`` test examples
    and ``pool_size`` pool examples.
    """
    by_prompt: dict[str, list[str]] = {}
    for example_id in sorted(examples):
        by_prompt.setdefault(examples[example_id].prompt, []).append(example_id)
    groups = sorted(by_prompt.values())
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 2]))
    order = rng.permutation(len(groups))
    if len(groups) < n_test:
        raise ValueError(f"{len(groups)} distinct prompts, fewer than n_test={n_test}")
    test_ids = []
    for i in order[:n_test]:
        members = groups[i]
        test_ids.append(members[int(rng.integers(len(members)))])
    pool_ids: list[str] = []
    for i in order[n_test:]:
        pool_ids.extend(groups[i][: pool_size - len(pool_ids)])
        if len(pool_ids) == pool_size:
            break
    if len(pool_ids) < pool_size:
        raise ValueError(
            f"{len(examples)} examples leave {len(pool_ids)} for the pool after {n_test} test "
            f"prompts; pool_size={pool_size} requested"
        )
    return tuple(sorted(pool_ids)), tuple(sorted(test_ids))
