"""Classification test (DESIGN.md §3): is the top-1 retrieved training example of the query's
class (P3 task, source dataset of a mixed pool, HH-RLHF chosen vs rejected)?

A task is a labelled pool and labelled queries drawn class-balanced with a seed, with no prompt
shared between pool and queries (HH-RLHF's chosen and rejected transcripts of one dialogue share
the prompt; retrieving the query's own dialogue would test the prompt, not the class).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from airrep_core.data.examples import Example
from airrep_core.data.shapes import check_shape


@dataclass(frozen=True)
class ClassificationTask:
    """A labelled pool and labelled queries.

    Attributes:
        name: the task's table name.
        pool / pool_labels: training examples and their classes (same length).
        queries / query_labels: test examples and their classes.
    """

    name: str
    pool: tuple[Example, ...]
    pool_labels: tuple[str, ...]
    queries: tuple[Example, ...]
    query_labels: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes, sorted."""
        return tuple(sorted(set(self.pool_labels)))

    def chance_accuracy(self) -> float:
        """Expected top-1 accuracy of a uniformly random retrieval: Σ_c p_query(c) p_pool(c)."""
        pool = np.array(self.pool_labels)
        return float(np.mean([np.mean(pool == label) for label in self.query_labels]))


def top1_accuracy(
    scores: np.ndarray, query_labels: Sequence[str], pool_labels: Sequence[str]
) -> float:
    """Fraction of queries whose highest-scoring pool example has the query's class.

    Args:
        scores: ``(n_query, n_pool)`` higher = more related; ties go to the lowest index.
        query_labels: ``(n_query,)`` classes; pool_labels: ``(n_pool,)`` classes.
    """
    scores = np.asarray(scores)
    check_shape("scores", scores, "(n_query, n_pool)", (len(query_labels), len(pool_labels)))
    retrieved = np.asarray(pool_labels)[scores.argmax(axis=1)]
    return float(np.mean(retrieved == np.asarray(query_labels)))


def classes_with_enough_examples(
    labels: Sequence[str], per_class: int, n_queries: int
) -> list[str]:
    """The classes (sorted) with at least ``per_class + ceil(n_queries / n_kept)`` examples, where
    ``n_kept`` is the number of classes kept (dropping a class raises the others' query quota,
    so the rule is applied until nothing changes). E.g. a P3 task with one small template."""
    counts = Counter(labels)
    kept = set(counts)
    while kept:
        need = per_class + math.ceil(n_queries / len(kept))
        enough = {c for c in kept if counts[c] >= need}
        if enough == kept:
            break
        kept = enough
    return sorted(kept)


def balanced_task(
    name: str,
    examples: Sequence[Example],
    labels: Sequence[str],
    per_class: int,
    n_queries: int,
    seed: int,
) -> ClassificationTask:
    """Draw ``per_class`` pool examples of each class and ``n_queries`` queries (balanced over
    classes, ``ceil(n_queries / n_classes)`` each, then cut to ``n_queries``), with disjoint
    prompts; a pure function of the examples, labels and ``seed``.

    Raises ``ValueError`` when there are fewer than two classes or a class cannot fill its quota.
    """
    if len(examples) != len(labels):
        raise ValueError(f"{len(examples)} examples but {len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(f"task {name!r}: {len(classes)} class(es); at least two are needed")
    by_prompt: dict[str, list[int]] = {}
    for index in sorted(range(len(examples)), key=lambda i: examples[i].example_id):
        by_prompt.setdefault(examples[index].prompt, []).append(index)
    groups = sorted(by_prompt.values(), key=lambda group: [examples[i].example_id for i in group])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 3]))
    query_quota = dict.fromkeys(classes, math.ceil(n_queries / len(classes)))
    pool_quota = dict.fromkeys(classes, per_class)
    queries: list[int] = []
    pool: list[int] = []
    for group_index in rng.permutation(len(groups)):
        members = groups[group_index]
        wanting_query = [i for i in members if query_quota[labels[i]] > 0]
        if wanting_query:
            chosen = wanting_query[int(rng.integers(len(wanting_query)))]
            query_quota[labels[chosen]] -= 1
            queries.append(chosen)
            continue
        for i in members:
            if pool_quota[labels[i]] > 0:
                pool_quota[labels[i]] -= 1
                pool.append(i)
        if not any(query_quota.values()) and not any(pool_quota.values()):
            break
    short = {c: (query_quota[c], pool_quota[c]) for c in classes if query_quota[c] or pool_quota[c]}
    if short:
        raise ValueError(
            f"task {name!r}: not enough examples; (queries, pool) still missing per class: {short}"
        )
    queries = queries[:n_queries]
    return ClassificationTask(
        name=name,
        pool=tuple(examples[i] for i in pool),
        pool_labels=tuple(labels[i] for i in pool),
        queries=tuple(examples[i] for i in queries),
        query_labels=tuple(labels[i] for i in queries),
    )
