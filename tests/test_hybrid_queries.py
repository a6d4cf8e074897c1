"""A hybrid encoder (lexical_weight > 0) is served with the same score everywhere: the embedding
store's attribute, group-influence and select (CLI) and the evaluation's AirRep attributor all use
h(x, z) = ẑ_dot + λ·ẑ_bm25 over the pool (brute force here, from the stored embeddings)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.stats
import typer
from airrep_cli import select_from_pool
from typer.testing import CliRunner

from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.methods.airrep import AirRepAttributor
from airrep_core.methods.lexical import Bm25Attributor
from flows.cli_query import register
from storage.artifacts import ArtifactStore
from storage.dataset_heads import latest_version
from storage.datasets import import_dataset, read_examples
from storage.embedding_store import find_view, load_view
from storage.sample_data import sample_data_dir
from storage.shapes import FieldMapping
from tasks.embeddings import open_index

WEIGHT = 0.75
POOL = 40


def _lines(relative: str, n: int) -> list[dict]:
    with open(sample_data_dir() / relative, encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("hybrid")
    root = f"file://{base / 'store'}"
    store = ArtifactStore(root)
    rows = [
        {"id": f"d{r['id']}", "prompt": r["instruction"], "response": r["text"]}
        for r in _lines("dolly/dolly_6400.jsonl", POOL // 2)
    ] + [
        {"id": f"g{i}", "prompt": r["question"], "response": r["answer"]}
        for i, r in enumerate(_lines("gsm8k/train.jsonl", POOL // 2))
    ]
    pool_file = base / "pool.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_dataset(store, pool_file, "pool", mapping=FieldMapping(id_field="id"))
    targets = base / "targets.jsonl"
    targets.write_text(
        "".join(json.dumps(r) + "\n" for r in _lines("gsm8k/test.jsonl", 3)), encoding="utf-8"
    )
    encoder = AirRepEncoder.from_backbone(
        "all-MiniLM-L6-v2", max_length=96, projection_init="identity", normalize=True
    )
    encoder.lexical_weight = WEIGHT
    saved = encoder.save(base / "encoder")
    store.build(
        "encoder",
        "feedc0de0002",
        config={"test": "hybrid"},
        inputs=[],
        writer=lambda d: shutil.copytree(saved, d / "encoder") and None,
    )
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["embed", "--dataset", "pool", "--preset", "tiny", "--root", root])
    assert result.exit_code == 0, result.output
    return {"root": root, "store": store, "targets": targets, "app": app, "runner": runner}


def _brute_force(workspace, queries: list[Example]) -> tuple[np.ndarray, list[str], list[Example]]:
    store = workspace["store"]
    version = latest_version(store, "pool")
    matrix = load_view(store, find_view(store, "feedc0de0002", version.version))
    ids = [str(i) for i in matrix.example_ids]
    by_id = {
        r["example_id"]: Example(r["example_id"], r["prompt"], r["response"])
        for r in read_examples(store, version).to_pylist()
    }
    pool = [by_id[i] for i in ids]
    index, _ = open_index(store, store.get("encoder", "feedc0de0002"), version)
    dots = index.embed(queries) @ np.asarray(matrix.embeddings, dtype=np.float32).T
    bm25 = Bm25Attributor(index.encoder.lexical, tokenizer=index.encoder.lexical_tokenizer)
    bm25.fit(pool)
    h = scipy.stats.zscore(dots, axis=1) + WEIGHT * scipy.stats.zscore(bm25.score(queries), axis=1)
    return h, ids, pool


def _targets(workspace) -> list[Example]:
    return [
        Example(f"q{i}", r["question"], r["answer"])
        for i, r in enumerate(_lines("gsm8k/test.jsonl", 3))
    ]


def test_attribute_and_group_influence_use_the_hybrid_score(workspace, tmp_path):
    queries = _targets(workspace)
    h, ids, pool = _brute_force(workspace, queries)
    store = workspace["store"]
    index, _ = open_index(
        store, store.get("encoder", "feedc0de0002"), latest_version(store, "pool")
    )
    records = index.attribute(queries, k=5)
    for q, query in enumerate(queries):
        helpful = [
            r for r in records if r["query_id"] == query.example_id and r["direction"] == "helpful"
        ]
        expected = np.argsort(-h[q], kind="stable")[:5]
        assert [r["example_id"] for r in helpful] == [ids[i] for i in expected]
        np.testing.assert_allclose([r["score"] for r in helpful], h[q, expected], atol=1e-4)
    subset = ids[3:11]
    influence = index.group_influence(subset, queries)
    np.testing.assert_allclose([r["score"] for r in influence], h[:, 3:11].sum(axis=1), atol=1e-3)
    assert {r["pooling"] for r in influence} == {"hybrid sum"}
    # The evaluation's attributor scores the same pool with the same h.
    attributor = AirRepAttributor(index.encoder, "attention", batch_size=8)
    attributor.fit(pool)
    np.testing.assert_allclose(attributor.score(queries), h, atol=1e-4)


def test_cli_select_ranks_by_the_hybrid_score(workspace, tmp_path):
    output = tmp_path / "selected.jsonl"
    select_from_pool(workspace, 6, output)
    chosen = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    queries = [
        Example(f"t{i}", r["question"], r["answer"])
        for i, r in enumerate(_lines("gsm8k/test.jsonl", 3))
    ]
    h, ids, _ = _brute_force(workspace, queries)
    order = np.argsort(-h, axis=1, kind="stable")
    expected: list[str] = []
    for rank in range(order.shape[1]):
        for target in range(order.shape[0]):
            row = ids[order[target, rank]]
            if row not in expected:
                expected.append(row)
    assert chosen == expected[:6]
