"""Prefect tasks of label generation: thin wrappers around ``tasks.labels`` returning ``StepRef``s.

Fine-tuning tasks carry the ``gpu`` tag (a concurrency limit on it bounds GPU use). The base
model's task has a timeout; a label shard has none: the label flow runs shards in worker threads,
where Prefect cannot enforce one (it warns for each shard), and the ``label-shard`` deployment's
flow carries the timeout instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task

from airrep_core.config.labels import BaseModelConfig, FinetuneConfig, SamplingConfig
from tasks import labels
from tasks.caching import store_verified_cache
from tasks.monitoring import Progress, publish_link, run_logger
from tasks.references import StepRef, open_store
from tasks.retry import IO_RETRY_OPTIONS

SHARD_TIMEOUT_S = 6 * 3600

Unit = tuple[int, int]
"""(split_id, subset_id)."""


@task(
    name="prepare-base-model",
    task_run_name="base-model-{config.architecture}-{config.hidden_size}",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    timeout_seconds=SHARD_TIMEOUT_S,
    **IO_RETRY_OPTIONS,
)
def prepare_base_model(root: str, dataset: StepRef, config: BaseModelConfig) -> StepRef:
    """The base LM θ₀ (built from a config and warmed up, or loaded from the hub/a directory)."""
    store = open_store(root)
    corpus = labels.load_corpus(store, dataset.resolve())
    ref = labels.build_base(store, corpus, config)
    step = StepRef.of(store, ref, **ref.metadata)
    run_logger().info("base model %s: %s", ref.key[:12], ref.metadata)
    publish_link(step, "base target LM (Hugging Face model directory)")
    return step


@task(
    name="sample-splits",
    task_run_name="splits-{sampling.n_splits}x{sampling.n_subsets}",
    cache_policy=store_verified_cache(),
    **IO_RETRY_OPTIONS,
)
def sample_splits(
    root: str, dataset: StepRef, sampling: SamplingConfig, base: BaseModelConfig
) -> StepRef:
    """The splits and subsets tables drawn from the dataset (a pure function of the seed)."""
    store = open_store(root)
    corpus = labels.load_corpus(store, dataset.resolve())
    ref = labels.build_splits(store, corpus, sampling, base)
    return StepRef.of(store, ref, **ref.metadata)


@task(
    name="label-shard",
    task_run_name="label-shard-{shard_name}",
    cache_policy=store_verified_cache(),
    tags=["gpu"],
    **IO_RETRY_OPTIONS,
)
def label_shard(
    root: str,
    dataset: StepRef,
    base: StepRef,
    splits: StepRef,
    finetune: FinetuneConfig,
    units: Sequence[Unit],
    shard_name: str,
) -> list[StepRef]:
    """Fine-tune and evaluate the (split, subset) ``units`` of one shard; existing units are
    skipped, so a killed shard resumes where it stopped."""
    store = open_store(root)
    corpus = labels.load_corpus(store, dataset.resolve())
    splits_list = labels.read_splits(store, splits.resolve())
    progress = Progress(f"label shard {shard_name}: {len(units)} subsets")
    logger = run_logger()

    def report(done: int, total: int, outcome: labels.UnitOutcome) -> None:
        progress.update(done, total)
        state = "computed" if outcome.computed else "reused"
        logger.info(
            "unit (%d, %d) %s [%d/%d]", outcome.split_id, outcome.subset_id, state, done, total
        )

    outcomes = labels.run_label_units(
        store,
        corpus,
        base.resolve(),
        splits_list,
        finetune,
        units=[tuple(u) for u in units],
        progress=report,
    )
    return [StepRef.of(store, o.ref, computed=o.computed) for o in outcomes]


@task(name="gather-labels", cache_policy=store_verified_cache(), **IO_RETRY_OPTIONS)
def gather_labels(
    root: str,
    dataset: StepRef,
    base: StepRef,
    splits: StepRef,
    finetune: FinetuneConfig,
    labels_config: dict,
) -> StepRef:
    """The subset-losses table of every unit (each unit must exist: shards ran first)."""
    store = open_store(root)
    corpus = labels.load_corpus(store, dataset.resolve())
    base_ref = base.resolve()
    splits_ref = splits.resolve()
    unit_refs = [
        store.get(labels.UNIT_STAGE, labels.unit_key(corpus, base_ref, split, j, finetune)[0])
        for split in labels.read_splits(store, splits_ref)
        for j in split.subset_ids
    ]
    ref = labels.gather_labels(store, splits_ref, unit_refs, labels_config)
    step = StepRef.of(store, ref, **ref.metadata)
    publish_link(step, "subset-losses table (labels)")
    return step
