"""``airrep run --plan``: the stages, their units, what the store holds, and the estimate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from airrep_core.config.pipeline import PipelineConfig
from storage.artifacts import ArtifactStore
from tasks.run_plan import TASK_OVERHEAD_S, Probe, cached_label_work, estimate, plan_run

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    "start-up (imports, Prefect server)",
    "import datasets",
    "generate labels",
    "train the encoder",
    "embed the pool",
    "attribute an example",
    "evaluate against the baselines",
]
PROBE = Probe(
    imports_s=5.0,
    lm_load_s=0.1,
    lm_step_s=0.2,
    lm_eval_batch_s=0.1,
    encoder_load_s=0.5,
    encoder_batch_s=0.2,
)
NOTHING = {"datasets": 0, "base": 0, "splits": 0, "units": 0}


def test_plan_units_follow_the_preset() -> None:
    tiny, mini = PipelineConfig.preset("tiny"), PipelineConfig.preset("mini")
    stages = {s.stage: s for s in estimate(tiny, PROBE, NOTHING)}
    assert list(stages) == STAGES
    assert stages["generate labels"].total == 2 * 4  # n_splits x n_subsets
    assert stages["evaluate against the baselines"].total == 6 + 4  # subsets + noise subsets
    assert stages["embed the pool"].total == 200 // 32 + 1
    mini_stages = {s.stage: s for s in estimate(mini, PROBE, NOTHING)}
    assert mini_stages["generate labels"].total == 4 * 32
    assert sum(s.seconds for s in mini_stages.values()) > 5 * sum(
        s.seconds for s in stages.values()
    )


def test_plan_time_scales_with_the_probe_and_drops_with_cached_units() -> None:
    tiny = PipelineConfig.preset("tiny")
    base = {s.stage: s.seconds for s in estimate(tiny, PROBE, NOTHING)}
    twice = replace(PROBE, lm_step_s=0.4, lm_eval_batch_s=0.2)
    slower = {s.stage: s.seconds for s in estimate(tiny, twice, NOTHING)}
    load = 2 * PROBE.lm_load_s + 4 * TASK_OVERHEAD_S  # base LM, shard; 4 task runs
    assert slower["generate labels"] - load == pytest.approx(2 * (base["generate labels"] - load))
    assert PROBE.unit_s(tiny.labels.finetune, 8, 6) == pytest.approx(2 * 2 * 0.2 + 0.1)
    cached = {"datasets": 5, "base": 1, "splits": 1, "units": 8}
    done = {s.stage: s for s in estimate(tiny, PROBE, cached)}
    assert done["generate labels"].cached == 8
    assert done["generate labels"].seconds == pytest.approx(4 * TASK_OVERHEAD_S)  # tasks only


def test_plan_without_import_counts_no_dataset_import() -> None:
    """``--no-import-data``: the import stage has no unit, so none of them is in the store."""
    cached = {"datasets": 5, "base": 0, "splits": 0, "units": 0}
    tiny = PipelineConfig.preset("tiny")
    stages = {s.stage: s for s in estimate(tiny, PROBE, cached, import_data=False)}
    assert (stages["import datasets"].total, stages["import datasets"].cached) == (0, 0)
    stages = {s.stage: s for s in estimate(tiny, PROBE, cached)}
    assert (stages["import datasets"].total, stages["import datasets"].cached) == (5, 5)


def test_cached_label_work_counts_what_the_store_holds(file_root: str) -> None:
    """Fresh store: nothing; then the corpus, the base LM, the splits and one label unit."""
    from tasks import labels
    from tasks.ground_truth import import_p3_holdout

    store = ArtifactStore(file_root)
    config = PipelineConfig.preset("tiny")
    assert cached_label_work(store, config) == NOTHING
    import_p3_holdout(store)
    corpus = labels.load_corpus(
        store, next(r for r in store.list("datasets") if r.config["name"] == config.corpus)
    )
    base = labels.build_base(store, corpus, config.labels.base)
    splits_ref = labels.build_splits(store, corpus, config.labels.sampling, config.labels.base)
    splits = labels.read_splits(store, splits_ref)
    labels.run_label_units(
        store, corpus, base, splits, config.labels.finetune, units=[(splits[0].split_id, 0)]
    )
    assert cached_label_work(store, config) == {"datasets": 0, "base": 1, "splits": 1, "units": 1}


@pytest.mark.slow
def test_plan_estimate_within_2x_of_the_tiny_run_and_the_rerun_answers_from_the_store(
    tmp_path: Path,
) -> None:
    """On a fresh root: the plan, then the real ``make run`` command (clean output: no
    traceback, ERROR or WARNING line, no third-party progress bar), then an unchanged rerun."""
    root = (tmp_path / "store").as_uri()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}  # rich: no wrapped cells
    command = [sys.executable, "-m", "flows.cli", "run", "--preset", "tiny", "--root", root]

    shown = subprocess.run([*command, "--plan"], env=env, cwd=REPO, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert all(stage.split(" (")[0] in shown.stdout for stage in STAGES)
    plan = plan_run(ArtifactStore(root), "tiny", PipelineConfig.preset("tiny"))
    assert not plan.recorded and all(s.cached == 0 for s in plan.stages)

    started = time.perf_counter()
    first = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr[-3000:]
    output = first.stdout + first.stderr
    for noise in ("Traceback", "ERROR", "WARNING", "it/s]"):
        assert noise not in output, output
    print(f"tiny: plan {plan.seconds:.0f} s, run {seconds:.0f} s")
    assert plan.seconds / 2 <= seconds <= plan.seconds * 2, (plan.seconds, seconds)

    started = time.perf_counter()
    second = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "recorded result" in second.stdout
    assert re.search(r"LDS", second.stdout)
    assert time.perf_counter() - started < 30  # ≤ 10 s on an idle machine (README)
    assert plan_run(ArtifactStore(root), "tiny", PipelineConfig.preset("tiny")).recorded
