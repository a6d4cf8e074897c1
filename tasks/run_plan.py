"""What ``airrep run --preset P`` will cost before it starts: its stages, their units of work,
what the store already holds, and the expected time on this machine from a short probe.

The probe measures, on this machine, the quantities the stages are made of: loading the target
LM (and its first step's extra time), one fine-tuning step and one batch of target losses with
the preset's fine-tuning config, loading the encoder and encoding one batch, and the start-up
imports (seconds at ``tiny``, about a minute at ``mini`` on a loaded 2-core machine).
Each stage's time is its unit counts times those measurements (``estimate``); the fixed costs no
probe measures (the Prefect server's start, task orchestration) are the constants below.

What is cached: the run record (``tasks.run_record``: everything, a rerun only prints), the
datasets, the base LM, the label splits and each label unit (their content keys are computed as
the pipeline computes them). Stages after the labels count as to do unless the run record exists,
so the estimate of a partly cached store is an upper bound.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from airrep_core.config.labels import FinetuneConfig
from airrep_core.config.pipeline import PipelineConfig
from airrep_core.data.examples import Example
from storage.artifacts import ArtifactStore
from storage.dataset_heads import latest_version, list_datasets
from storage.datasets import read_examples
from storage.errors import DataValidationError
from storage.formats import input_files, read_records
from storage.sample_data import SAMPLE_DATASETS
from storage.shapes import file_rows
from tasks.run_record import read_run_record

PREFECT_START_S = 10.0
"""The ephemeral Prefect server's start (measured 8–12 s on a loaded 2-core machine)."""
TASK_OVERHEAD_S = 2.5
"""What a task run costs beyond the work the probe times: Prefect's state changes, reading its
inputs from the store (a 47,000-row corpus for most), tokenizing. Calibrated on this 2-core
machine: the tiny run's measured time less the probe-based part, over its 29 task runs."""
PROBE_REPEATS = 3
"""Each probe timing is the fastest of this many (a shared machine's jobs disturb single ones)."""
SHARD_SIZE = 8
"""Label units per shard (``pipeline_flow``'s default)."""
RERUN_S = 6.0
"""A rerun answered by the run record: import check of the sample data and printing."""
GRADIENT_METHODS = ("grad_dot", "logra", "trak")
ENCODER_METHODS = ("airrep", "airrep_mean", "encoder")
LM_FORWARD_METHODS = ("rds",)


@dataclass(frozen=True)
class Probe:
    """Seconds measured on this machine for the preset's models.

    Attributes:
        imports_s: importing torch, transformers and Prefect.
        lm_load_s: what each task pays to start on the target LM: loading it for fine-tuning
            (``SubsetFinetuner``) and its first step's extra time (allocations, kernel choice).
        lm_step_s: one fine-tuning step (``finetune.batch_size`` examples) once warm.
        lm_eval_batch_s: the losses of one batch of ``finetune.eval_batch_size`` targets.
        encoder_load_s: loading the encoder backbone.
        encoder_batch_s: encoding one batch of ``embedding.batch_size`` examples.
    """

    imports_s: float
    lm_load_s: float
    lm_step_s: float
    lm_eval_batch_s: float
    encoder_load_s: float
    encoder_batch_s: float

    def unit_s(self, finetune: FinetuneConfig, subset_size: int, n_targets: int) -> float:
        """One fine-tune-and-evaluate unit: ``epochs`` passes over ``subset_size`` examples,
        then the losses of ``n_targets`` targets."""
        steps = finetune.epochs * math.ceil(subset_size / finetune.batch_size)
        return (
            steps * self.lm_step_s
            + math.ceil(n_targets / finetune.eval_batch_size) * self.lm_eval_batch_s
        )


@dataclass(frozen=True)
class StagePlan:
    """One stage: its units of work, how many the store already holds, its expected seconds."""

    stage: str
    units: str
    total: int
    cached: int
    seconds: float


@dataclass(frozen=True)
class RunPlan:
    """The plan of a run: its stages, the probe they were estimated from, the total."""

    preset: str
    root: str
    stages: list[StagePlan]
    probe: Probe | None
    recorded: bool

    @property
    def seconds(self) -> float:
        """Expected wall time of the whole run."""
        return sum(s.seconds for s in self.stages)


def plan_run(
    store: ArtifactStore, preset: str, config: PipelineConfig, import_data: bool = True
) -> RunPlan:
    """The plan of ``airrep run --preset preset`` on ``store`` (probes this machine unless the
    run is recorded: then a rerun only prints)."""
    if read_run_record(store, config.to_dict(), evaluate=True) is not None:
        stages = [StagePlan("recorded run (prints the stored result)", "run", 1, 1, RERUN_S)]
        return RunPlan(preset, store.root.uri, stages, None, recorded=True)
    cached = cached_label_work(store, config)
    probe = measure_probe(store, config)
    return RunPlan(
        preset, store.root.uri, estimate(config, probe, cached, import_data), probe, False
    )


def estimate(
    config: PipelineConfig, probe: Probe, cached: dict[str, int], import_data: bool = True
) -> list[StagePlan]:
    """Each stage's units and expected seconds from ``probe`` (``cached``: units in the store by
    kind, ``datasets``, ``base``, ``splits``, ``units``)."""
    labels, enc, emb, ev = config.labels, config.encoder.train, config.embedding, config.evaluation
    sampling, finetune = labels.sampling, labels.finetune
    unit_s = probe.unit_s(finetune, sampling.subset_size, sampling.n_targets)
    per_example_grad = probe.lm_step_s / finetune.batch_size
    encode_each = probe.encoder_batch_s / emb.batch_size

    stages = []
    n_samples = len(SAMPLE_DATASETS) if import_data else 0
    stages.append(
        StagePlan(
            "start-up (imports, Prefect server)",
            "process",
            1,
            0,
            probe.imports_s + PREFECT_START_S,
        )
    )
    stages.append(
        StagePlan(
            "import datasets",
            "sample datasets",
            n_samples,
            cached["datasets"] if import_data else 0,
            (n_samples + 1) * TASK_OVERHEAD_S,  # and the P3 template split
        )
    )

    units = sampling.n_splits * sampling.n_subsets
    base = labels.base
    warmup_s = (  # warm-up steps, scaled by their tokens per step
        base.max_steps
        * probe.lm_step_s
        * (base.batch_size * base.block_size)
        / (finetune.batch_size * finetune.max_length)
        if base.is_scratch
        else 0.0
    )
    base_s = 0.0 if cached["base"] else probe.lm_load_s + warmup_s
    todo = units - cached["units"]
    shards = math.ceil(units / SHARD_SIZE)
    label_s = base_s + (probe.lm_load_s + todo * unit_s if todo else 0.0)
    label_s += (3 + shards) * TASK_OVERHEAD_S  # base, splits, shards, gather
    stages.append(
        StagePlan("generate labels", "fine-tunes (subsets)", units, cached["units"], label_s)
    )

    teacher_s = 0.0
    if enc.teacher_steps:
        teacher = config.encoder.teacher
        examples = teacher.n_targets + teacher.n_candidates
        teacher_s = probe.lm_load_s + examples * per_example_grad
    distinct = sampling.n_splits * (sampling.pool_size + sampling.n_targets)
    steps = enc.steps + enc.teacher_steps
    encoder_s = (
        probe.encoder_load_s
        + teacher_s
        + distinct * encode_each
        + steps * (enc.targets_per_step + enc.subsets_per_step) * encode_each
    )
    encoder_s += 3 * TASK_OVERHEAD_S  # base (found), teacher, training
    stages.append(StagePlan("train the encoder", "training steps", steps, 0, encoder_s))

    pool = config.pool_rows or 0
    batches = math.ceil(pool / emb.batch_size) if pool else 0
    stages.append(
        StagePlan(
            "embed the pool",
            "encoder batches",
            batches,
            0,
            probe.encoder_load_s + batches * probe.encoder_batch_s + 2 * TASK_OVERHEAD_S,
        )
    )
    stages.append(
        StagePlan(
            "attribute an example",
            "query",
            1,
            0,
            probe.encoder_load_s + encode_each + TASK_OVERHEAD_S,
        )
    )

    gt = ev.sampling
    gt_fine_tunes = gt.n_subsets + ev.noise_subsets
    gt_unit_s = probe.unit_s(ev.finetune, gt.subset_size, gt.n_test)
    examples = gt.pool_size + gt.n_test

    def per_set(methods: tuple[str, ...]) -> float:
        """One evaluation set: its ground-truth fine-tunes and every method's scores."""
        return (
            probe.lm_load_s
            + gt_fine_tunes * gt_unit_s
            + sum(_method_s(m, examples, probe, per_example_grad, encode_each) for m in methods)
        )

    n_sets, n_transfer = len(ev.eval_sets), len(ev.transfer_eval_sets)
    transfer_s = 0.0
    if n_transfer:  # a second base LM (warm-up) and its ground truths
        transfer_s = warmup_s + n_transfer * per_set(ev.transfer_methods)
    extras = _extras_s(config, probe, per_example_grad, encode_each)
    tasks_n = (n_sets + n_transfer) * (2 + len(ev.methods)) + 1  # set, truth, scores; report
    evaluation_s = n_sets * per_set(ev.methods) + transfer_s + extras + tasks_n * TASK_OVERHEAD_S
    stages.append(
        StagePlan(
            "evaluate against the baselines",
            f"ground-truth fine-tunes ({n_sets + n_transfer} sets) + {len(ev.methods)} baselines",
            (n_sets + n_transfer) * gt_fine_tunes,
            0,
            evaluation_s,
        )
    )
    return stages


def _method_s(
    method: str, examples: int, probe: Probe, per_example_grad: float, encode_each: float
) -> float:
    """One attribution method over ``examples`` (pool and test) examples."""
    if method in GRADIENT_METHODS:
        return probe.lm_load_s + examples * per_example_grad
    if method in ENCODER_METHODS:
        return probe.encoder_load_s + examples * encode_each
    if method in LM_FORWARD_METHODS:
        return probe.lm_load_s + examples * per_example_grad / 3
    return 0.1  # lexical (tfidf, bm25)


def _extras_s(
    config: PipelineConfig, probe: Probe, per_example_grad: float, encode_each: float
) -> float:
    """The classification and data-selection tests of the evaluation."""
    ev = config.evaluation
    classification_examples = 2 * ev.classification_pool_per_class + ev.classification_queries
    classification = sum(
        _method_s(m, classification_examples, probe, per_example_grad, encode_each)
        for m in ev.classification_methods
    ) * len(ev.classification_tasks)
    selection_examples = ev.selection_pool_per_set * len(ev.selection_pool_sets)
    selection = sum(
        _method_s(m, selection_examples, probe, per_example_grad, encode_each)
        for m in ev.selection_methods
    ) + (ev.selection_random_draws + len(ev.selection_methods)) * (
        probe.lm_load_s + probe.unit_s(ev.finetune, ev.selection_size, ev.sampling.n_test)
    )
    return classification + selection


def measure_probe(store: ArtifactStore, config: PipelineConfig) -> Probe:
    """Time the preset's models on this machine (a scratch target LM is built untrained: its
    speed does not depend on its weights)."""
    started = time.perf_counter()
    import prefect  # noqa: F401  (timed: the run imports it)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from airrep_core.encoder.model import AirRepEncoder
    from airrep_core.lm.base_model import init_scratch_model
    from airrep_core.lm.finetune import SubsetFinetuner
    from airrep_core.lm.tokenizer import train_bpe_tokenizer

    imports_s = time.perf_counter() - started
    examples = _probe_examples(store, config)
    base = config.labels.base
    with tempfile.TemporaryDirectory(prefix="airrep-probe-") as tmp:
        model = base.model
        if base.is_scratch:
            texts = [f"{e.prompt}\n{e.response}" for e in examples]
            tokenizer = train_bpe_tokenizer(texts, base.vocab_size)
            init_scratch_model(base, tokenizer).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            model = tmp
        finetune = replace(config.labels.finetune, epochs=1)
        started = time.perf_counter()
        finetuner = SubsetFinetuner(model, finetune)
        load_s = time.perf_counter() - started
        one_step = examples[: finetune.batch_size]  # one epoch of one batch: one step
        first_s = _seconds(lambda: finetuner.train(one_step))
        lm_step_s = _seconds(lambda: finetuner.train(one_step), PROBE_REPEATS)
        targets = examples[: finetune.eval_batch_size]
        lm_eval_batch_s = _seconds(lambda: finetuner.target_losses(targets), PROBE_REPEATS)
    lm_load_s = load_s + max(first_s - lm_step_s, 0.0)
    train = config.encoder.train
    started = time.perf_counter()
    encoder = AirRepEncoder.from_backbone(train.encoder, max_length=train.max_length)
    encoder_load_s = time.perf_counter() - started
    batch = [encoder.example_text(e) for e in examples[: config.embedding.batch_size]]
    encoder_batch_s = _seconds(
        lambda: encoder.encode(batch, config.embedding.batch_size), PROBE_REPEATS
    )
    return Probe(imports_s, lm_load_s, lm_step_s, lm_eval_batch_s, encoder_load_s, encoder_batch_s)


def _seconds(work: Callable[[], object], repeats: int = 1) -> float:
    """The fastest of ``repeats`` timings of ``work`` (the least disturbed by other jobs)."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def _probe_examples(store: ArtifactStore, config: PipelineConfig) -> list[Example]:
    """Examples to probe with: the corpus when it is imported, else the pool's sample files
    (read, not imported: a plan changes nothing in the store)."""
    wanted = max(
        config.labels.sampling.subset_size + config.labels.sampling.n_targets,
        config.embedding.batch_size,
    )
    if config.corpus in list_datasets(store):
        version = latest_version(store, config.corpus)
        rows = read_examples(store, version.ref).slice(0, wanted).to_pylist()
        return [Example(r["example_id"], r["prompt"], r["response"]) for r in rows]
    if config.pool not in SAMPLE_DATASETS:
        raise ValueError(
            f"cannot probe: dataset {config.corpus!r} is not in {store.root.uri} and "
            f"{config.pool!r} is not a sample dataset ({sorted(SAMPLE_DATASETS)})"
        )
    found: list[Example] = []
    for path in input_files(SAMPLE_DATASETS[config.pool].paths()):
        for row in file_rows(read_records(path), None).items:
            if isinstance(row, DataValidationError):
                continue
            found.append(Example(f"probe-{len(found)}", row.prompt, row.response))
            if len(found) >= wanted:
                return found
    return found


def cached_label_work(store: ArtifactStore, config: PipelineConfig) -> dict[str, int]:
    """How much of the import and label stages the store holds: ``datasets`` (sample datasets
    present), ``base`` and ``splits`` (0/1) and ``units`` (label units)."""
    present = set(list_datasets(store))
    cached = {
        "datasets": sum(name in present for name in SAMPLE_DATASETS),
        "base": 0,
        "splits": 0,
        "units": 0,
    }
    if config.corpus not in present:
        return cached
    from tasks import labels, splits
    from tasks.corpus import load_corpus

    corpus = load_corpus(store, latest_version(store, config.corpus))
    base_key = labels.base_key(corpus, config.labels.base)
    splits_key = splits.splits_key(corpus, config.labels.sampling, config.labels.base)
    cached["base"] = int(store.exists(labels.BASE_STAGE, base_key))
    cached["splits"] = int(store.exists(splits.SPLITS_STAGE, splits_key))
    if not (cached["base"] and cached["splits"]):
        return cached
    base_ref = store.get(labels.BASE_STAGE, base_key)
    label_splits = splits.read_splits(store, store.get(splits.SPLITS_STAGE, splits_key))
    cached["units"] = sum(
        store.exists(
            labels.UNIT_STAGE,
            labels.unit_key(corpus, base_ref, split, j, config.labels.finetune)[0],
        )
        for split in label_splits
        for j in split.subset_ids
    )
    return cached
