"""The pipeline against a real local Prefect server: ``prefect deploy --all`` from prefect.yaml,
label shards dispatched to two process workers on the ``gpu`` pool, and the data-update event
triggering the ``rebuild`` deployment."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect_server import PREFECT, REPO, LocalPrefectServer

from airrep_core.config.labels import LabelsConfig
from storage.artifacts import ArtifactStore
from storage.datasets import import_dataset, read_examples
from storage.sample_data import SAMPLE_DATASETS
from storage.tables import read_table
from tasks.data_tasks import dataset_ref
from tasks.labels import LABELS_STAGE, LOSSES_FILE, generate_labels

pytestmark = pytest.mark.prefect

DEPLOYMENTS = {
    "airrep-pipeline/pipeline",
    "label-shard/label-shard",
    "airrep-rebuild/rebuild",
    "airrep-watch-data/watch-data",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    """A server with the ``cpu`` and ``gpu`` pools and every deployment of prefect.yaml."""
    home = tmp_path_factory.mktemp("prefect-home")
    local = LocalPrefectServer(home)
    local.env["AIRREP_STORAGE_ROOT"] = (home / "store").as_uri()
    local.start()
    try:
        for pool in ("cpu", "gpu"):
            local.cli("work-pool", "create", pool, "--type", "process")
        local.cli("deploy", "--all")
        yield local
    finally:
        local.stop()


def client_for(server: LocalPrefectServer):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class Client:
        def __enter__(self):
            self._settings = temporary_settings(updates={PREFECT_API_URL: server.api_url})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return Client()


def small_corpus(path: Path) -> Path:
    """80 real P3 rows from a few templates, as a JSONL file."""
    files = sorted(SAMPLE_DATASETS["flan_p3"].paths()[0].glob("*.jsonl"))[:40:5]
    rows = [line for f in files for line in f.read_text().splitlines()[:10]]
    path.write_text("\n".join(rows) + "\n")
    return path


def runs_executed_by(worker_log: str) -> set[str]:
    """Ids of the flow runs a worker ran: those it began submitting, less those the server took
    back because the other worker had already claimed them (both may poll the same run)."""

    def ids_after(marker: str) -> set[str]:
        return {
            line.split(marker)[1].split("'")[0]
            for line in worker_log.splitlines()
            if marker in line
        }

    return ids_after("submitting flow run '") - ids_after("Aborted submission of flow run '")


def test_prefect_yaml_deploys_every_deployment(server: LocalPrefectServer) -> None:
    with client_for(server) as client:
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    names = {f"{flows[d.flow_id]}/{d.name}" for d in deployments}
    assert names >= DEPLOYMENTS
    by_name = {f"{flows[d.flow_id]}/{d.name}": d for d in deployments}
    assert by_name["label-shard/label-shard"].work_pool_name == "gpu"
    assert by_name["airrep-pipeline/pipeline"].schedules, "the pipeline runs on a schedule"


def test_label_shards_run_on_two_workers_and_equal_an_in_process_run(
    server: LocalPrefectServer, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.labels_flow import generate_labels_flow

    corpus_file = small_corpus(tmp_path / "corpus.jsonl")
    root = server.env["AIRREP_STORAGE_ROOT"]
    store = ArtifactStore(root)
    version = import_dataset(store, [corpus_file], "corpus")
    logs = [
        server.spawn(
            f"worker-{i}",
            [PREFECT, "worker", "start", "--pool", "gpu", "--limit", "1", "--name", f"gpu-{i}"],
        )
        for i in (1, 2)
    ]
    config = LabelsConfig.preset("tiny")
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        labels = generate_labels_flow(
            root, dataset_ref(root, version), config, dispatch="deployment", shard_size=2
        )

    executed = [runs_executed_by(log.read_text()) for log in logs]
    tails = "\n".join(
        f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:]) for log in logs
    )
    assert all(executed), f"each worker should have run shards: {executed}\n{tails}"
    assert not executed[0] & executed[1], f"a shard ran on both workers: {executed}"
    n_units = config.sampling.n_splits * config.sampling.n_subsets
    assert len(executed[0] | executed[1]) == n_units // 2

    reference = ArtifactStore((tmp_path / "in-process").as_uri())
    reference_labels = generate_labels(
        reference, import_dataset(reference, [corpus_file], "corpus"), config
    )
    ours = read_table(store, store.get(LABELS_STAGE, labels.key), LOSSES_FILE, "subset_losses")
    theirs = read_table(
        reference,
        reference.get(LABELS_STAGE, reference_labels.labels_key),
        LOSSES_FILE,
        "subset_losses",
    )
    assert ours.equals(theirs)
    assert len(read_examples(store, version)) == 80


def test_data_import_event_triggers_the_rebuild_deployment(
    server: LocalPrefectServer, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    data = tmp_path / "fresh.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2+2?", "response": "4"}) + "\n")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("airrep")),
            "data",
            "import",
            str(data),
            "--name",
            "fresh",
            "--root",
            server.env["AIRREP_STORAGE_ROOT"],
        ],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "emitted airrep.dataset.updated" in result.stdout
    version = ArtifactStore(server.env["AIRREP_STORAGE_ROOT"])
    deadline = time.monotonic() + 120
    runs = []
    with client_for(server) as client:
        while time.monotonic() < deadline and not runs:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["rebuild"]))
            )
            time.sleep(2)
    assert runs, "no rebuild flow run was created by the trigger within 120 s"
    assert runs[0].parameters["dataset"] == "fresh"
    from storage.dataset_heads import latest_version

    assert runs[0].parameters["version"] == latest_version(version, "fresh").version
