"""Attribution queries, group influence and data selection: the Python API on arrays, and the
``airrep embed | attribute | group-influence | select`` commands (typer's CliRunner) on real Dolly
and GSM8K rows embedded by the real MiniLM encoder."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from airrep_cli import airrep, invoke, select_from_pool
from typer.testing import CliRunner

from airrep_core.attribution.index import AttributionIndex, attribute, group_influence, select
from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from flows.cli_query import read_queries, register
from storage.artifacts import ArtifactStore
from storage.dataset_heads import latest_version
from storage.datasets import import_dataset, read_examples
from storage.embedding_store import find_view, load_view
from storage.sample_data import sample_data_dir

MAX_LENGTH = 32
POOL_PER_SOURCE = 24


# ---- the API on arrays -------------------------------------------------------------------------


def test_attribute_on_arrays_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((4, 16)).astype(np.float32)
    helpful, harmful = attribute(queries, train, 7, chunk_rows=50)
    scores = queries @ train.T
    np.testing.assert_array_equal(helpful.indices, np.argsort(-scores, axis=1)[:, :7])
    np.testing.assert_array_equal(harmful.indices, np.argsort(scores, axis=1)[:, :7])


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_group_influence_equals_the_formula(pooling: str) -> None:
    rng = np.random.default_rng(1)
    train = rng.standard_normal((50, 8)).astype(np.float32)
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    members = [7, 3, 41, 12]
    got = group_influence(queries, train, members, pooling=pooling)
    for q, query in enumerate(queries):
        s = np.array([float(query @ train[m]) for m in members])
        if pooling == "attention":  # f = Σ softmax(|s|)ᵢ sᵢ (DESIGN.md §2)
            weights = np.exp(np.abs(s)) / np.exp(np.abs(s)).sum()
            expected = float((weights * s).sum())
        else:
            expected = float(s.mean())
        assert got[q] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    with pytest.raises(ValueError, match="distinct"):
        group_influence(queries, train, [1, 1])


def test_select_on_arrays_rejects_a_budget_larger_than_the_pool() -> None:
    pool = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"budget=5 is invalid; allowed: 1\.\.4"):
        select(pool[:1], pool, 5)


# ---- the CLI on real data ----------------------------------------------------------------------


def _lines(relative: str, n: int) -> list[dict]:
    with open(sample_data_dir() / relative, encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def encoder() -> AirRepEncoder:
    return AirRepEncoder.from_backbone("all-MiniLM-L6-v2", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, encoder, app) -> dict:
    """A store with a Dolly + GSM8K pool, an encoder artifact, the pool embedded by ``airrep
    embed``, and a file of GSM8K test targets."""
    base = tmp_path_factory.mktemp("attribution")
    root = f"file://{base / 'store'}"
    store = ArtifactStore(root)
    pool_rows = [
        {
            "id": f"dolly-{r['id']}",
            "prompt": r["instruction"],
            "response": r["text"],
            "group": "dolly",
        }
        for r in _lines("dolly/dolly_6400.jsonl", POOL_PER_SOURCE)
    ] + [
        {"id": f"gsm8k-{i}", "prompt": r["question"], "response": r["answer"], "group": "gsm8k"}
        for i, r in enumerate(_lines("gsm8k/train.jsonl", POOL_PER_SOURCE))
    ]
    pool_file = base / "pool.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in pool_rows), encoding="utf-8")
    from storage.shapes import FieldMapping

    import_dataset(
        store, pool_file, "pool", mapping=FieldMapping(id_field="id", group_field="group")
    )
    targets = base / "targets.jsonl"
    targets.write_text(
        "".join(json.dumps(r) + "\n" for r in _lines("gsm8k/test.jsonl", 4)), encoding="utf-8"
    )
    saved = encoder.save(base / "encoder")
    store.build(
        "encoder",
        "feedc0de0001",
        config={"test": True},
        inputs=[],
        writer=lambda d: shutil.copytree(saved, d / "encoder") and None,
    )
    runner = CliRunner()
    result = runner.invoke(app, ["embed", "--dataset", "pool", "--preset", "tiny", "--root", root])
    assert result.exit_code == 0, result.output
    assert f"{2 * POOL_PER_SOURCE} rows, {2 * POOL_PER_SOURCE} encoded, 0 reused" in result.output
    return {
        "root": root,
        "store": store,
        "targets": targets,
        "base": base,
        "runner": runner,
        "app": app,
    }


def _attribute(workspace, *args: str):
    """``airrep attribute --dataset pool ARGS...``, exit status 0 checked."""
    result = invoke(workspace, "attribute", "--dataset", "pool", *args)
    assert result.exit_code == 0, result.output
    return result


def _stored(workspace) -> tuple[np.ndarray, np.ndarray]:
    store = workspace["store"]
    view = find_view(store, "feedc0de0001", latest_version(store, "pool").version)
    matrix = load_view(store, view)
    return np.asarray(matrix.embeddings), matrix.example_ids


def test_cli_embed_again_encodes_nothing(app, workspace) -> None:
    result = invoke(workspace, "embed", "--dataset", "pool", "--preset", "tiny")
    assert result.exit_code == 0, result.output
    assert "0 encoded, 48 reused, 0 parts written; view exists" in result.output


def test_cli_attribute_matches_brute_force_in_every_format(app, workspace, encoder) -> None:
    targets = workspace["targets"]
    result = _attribute(workspace, "--queries", str(targets), "--k", "5", "--format", "jsonl")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    queries = read_queries(targets)
    embeddings, ids = _stored(workspace)
    scores = encoder.encode_examples(queries) @ embeddings.T
    for q, query in enumerate(queries):
        helpful = [
            r for r in records if r["query_id"] == query.example_id and r["direction"] == "helpful"
        ]
        harmful = [
            r for r in records if r["query_id"] == query.example_id and r["direction"] == "harmful"
        ]
        assert [r["example_id"] for r in helpful] == ids[np.argsort(-scores[q])[:5]].tolist()
        assert [r["example_id"] for r in harmful] == ids[np.argsort(scores[q])[:5]].tolist()
        np.testing.assert_allclose(
            [r["score"] for r in helpful], np.sort(scores[q])[::-1][:5], rtol=1e-4, atol=1e-4
        )
        assert all(r["prompt"] and r["response"] for r in helpful)
    # GSM8K targets find GSM8K pool examples most helpful
    top1 = [r["example_id"] for r in records if r["direction"] == "helpful" and r["rank"] == 1]
    assert all(e.startswith("gsm8k-") for e in top1)

    parquet = workspace["base"] / "attribution.parquet"
    result = _attribute(
        workspace,
        "--queries",
        str(targets),
        "--k",
        "5",
        "--format",
        "parquet",
        "--output",
        str(parquet),
    )
    assert pq.read_table(parquet).to_pylist() == records

    result = _attribute(
        workspace, "--prompt", queries[0].prompt, "--response", queries[0].response, "--k", "3"
    )
    assert "helpful" in result.output and "harmful" in result.output
    assert records[0]["example_id"] in result.output


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_cli_k_above_the_pool_lists_each_example_once(workspace, index: str) -> None:
    """The real ``airrep attribute`` (a subprocess) with ``--k`` above the 48-example pool: k is
    clamped to half the pool with a note on stderr, and no example is both helpful and harmful;
    an approximate search that finds fewer says so."""
    pool = 2 * POOL_PER_SOURCE
    result = airrep(
        "attribute",
        "--dataset",
        "pool",
        "--queries",
        str(workspace["targets"]),
        "--k",
        "100",
        "--index",
        index,
        "--preset",
        "tiny",
        "--format",
        "jsonl",
        "--root",
        workspace["root"],
    )
    assert result.returncode == 0, result.stderr
    assert f"note: --k 100 is more than half of the {pool} pool examples: listing 24 per " in (
        result.stderr
    )
    records = [json.loads(line) for line in result.stdout.splitlines()]
    fewer = False
    for query in read_queries(workspace["targets"]):
        lists = {
            direction: [
                r["example_id"]
                for r in records
                if r["query_id"] == query.example_id and r["direction"] == direction
            ]
            for direction in ("helpful", "harmful")
        }
        assert not set(lists["helpful"]) & set(lists["harmful"])
        if index == "exact":
            assert len(lists["helpful"]) == len(lists["harmful"]) == pool // 2
        fewer |= min(len(ids) for ids in lists.values()) < pool // 2
    assert fewer == ("fewer than 24 examples" in result.stderr)


def test_cli_group_influence_matches_the_formula(app, workspace, encoder) -> None:
    embeddings, ids = _stored(workspace)
    members = [ids[1], ids[30], ids[45], ids[7]]
    subset = workspace["base"] / "subset.txt"
    subset.write_text("\n".join(members) + "\n", encoding="utf-8")
    result = invoke(
        workspace,
        "group-influence",
        "--dataset",
        "pool",
        "--subset",
        str(subset),
        "--targets",
        str(workspace["targets"]),
        "--format",
        "jsonl",
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    query_embeddings = encoder.encode_examples(read_queries(workspace["targets"]))
    rows = [list(ids).index(m) for m in members]
    for record, query in zip(records, query_embeddings, strict=True):
        s = embeddings[rows] @ query
        weights = np.exp(np.abs(s) - np.abs(s).max())
        expected = float((weights / weights.sum() * s).sum())
        assert record["score"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert (record["members"], record["pooling"]) == (4, "attention")


def test_cli_select_writes_an_importable_dataset(app, workspace, encoder) -> None:
    output = workspace["base"] / "selected.jsonl"
    select_from_pool(workspace, 10, output, "--import-as", "selected")
    embeddings, ids = _stored(workspace)
    scores = encoder.encode_examples(read_queries(workspace["targets"])) @ embeddings.T
    rankings = [np.argsort(-row, kind="stable").tolist() for row in scores]
    expected: list[str] = []
    for rank, ranking in itertools.product(range(len(ids)), rankings):
        if len(expected) < 10 and ids[ranking[rank]] not in expected:
            expected.append(str(ids[ranking[rank]]))
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in written] == expected
    imported = read_examples(workspace["store"], latest_version(workspace["store"], "selected"))
    assert imported.column("example_id").to_pylist() == expected
    pool = read_examples(workspace["store"], latest_version(workspace["store"], "pool"))
    pool_hash = dict(
        zip(
            pool.column("example_id").to_pylist(),
            pool.column("content_hash").to_pylist(),
            strict=True,
        )
    )
    assert imported.column("content_hash").to_pylist() == [pool_hash[e] for e in expected]
    assert sum(e.startswith("gsm8k-") for e in expected) >= 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["attribute", "--dataset", "pool", "--prompt", "x", "--encoder", "0badc0de"],
            "unknown encoder '0badc0de'",
        ),
        (["attribute", "--dataset", "nosuch", "--prompt", "x"], "no dataset 'nosuch'"),
        (
            ["attribute", "--dataset", "other", "--prompt", "x"],
            "has no embeddings by encoder feedc0de0001",
        ),
        (["attribute", "--dataset", "pool", "--prompt", " ", "--response", ""], "empty query"),
        (["attribute", "--dataset", "pool"], "give a query"),
        (
            ["select", "--dataset", "pool", "--target", "TARGETS", "--budget", "49"],
            r"budget=49 is invalid; allowed: 1..48",
        ),
        (
            ["attribute", "--dataset", "pool", "--queries", "BAD"],
            "bad.jsonl, row 2, field 'answer': missing field",
        ),
        (
            ["group-influence", "--dataset", "pool", "--subset", "SUBSET", "--prompt", "x"],
            "1 id(s) not in the store (e.g. ['no-such-id']); the store holds the dataset's example "
            "ids: the data's `id` field, the field named by --id-field at import",
        ),
        (
            ["attribute", "--dataset", "pool", "--prompt", "x", "--format", "xml"],
            "--format 'xml' is invalid",
        ),
    ],
)
def test_cli_bad_input_exits_with_a_clear_error(app, workspace, args, message) -> None:
    base = workspace["base"]
    if "other" in args and not (base / "other.jsonl").exists():
        (base / "other.jsonl").write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
        import_dataset(workspace["store"], base / "other.jsonl", "other")
    (base / "bad.jsonl").write_text(
        json.dumps({"question": "q", "answer": "a"}) + "\n" + json.dumps({"question": "q2"}) + "\n"
    )
    (base / "unknown-ids.txt").write_text("dolly-1\nno-such-id\n")
    replace = {
        "TARGETS": str(workspace["targets"]),
        "BAD": str(base / "bad.jsonl"),
        "SUBSET": str(base / "unknown-ids.txt"),
    }
    result = invoke(workspace, *[replace.get(a, a) for a in args])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()), result.output


def test_attribution_index_api_matches_the_cli_records(workspace, encoder) -> None:
    embeddings, ids = _stored(workspace)
    index = AttributionIndex(encoder, embeddings, ids)
    query = Example("q", "How many apples are left?", "There are 3 apples left. #### 3")
    records = index.attribute([query], k=4)
    assert [r["rank"] for r in records] == [1, 2, 3, 4, 1, 2, 3, 4]
    chosen = index.select([query], 6)
    assert [c.example_id for c in chosen] == [r["example_id"] for r in records[:4]] + [
        str(ids[i]) for i in np.argsort(-(encoder.encode_examples([query]) @ embeddings.T)[0])[4:6]
    ]
    with pytest.raises(ValueError, match="no queries given"):
        index.attribute([])
