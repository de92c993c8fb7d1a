"""The cascade and bge-m3's outputs through eval, the CLI and the HTTP server (tiny M3)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from server_helpers import PRODUCTS, running_server, settings
from test_cli import run
from test_eval_runner import write_beir
from tiny_m3 import build_tiny_m3

from rankwise.catalog import Catalog
from rankwise.evaluate import evaluate
from rankwise.models import Embedder, Reranker
from rankwise.server import Components


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory):
    return build_tiny_m3(tmp_path_factory.mktemp("m3s"))


@pytest.fixture(scope="module")
def m3(m3_dir):
    return Embedder(str(m3_dir), device="cpu")


def test_eval_lists_each_prefix_of_the_cascade(tmp_path, m3, tiny_reranker_dir):
    report = evaluate(
        write_beir(tmp_path / "beir"),
        systems="hybrid",
        embedder=m3,
        reranker=Reranker(str(tiny_reranker_dir)),
        cascade="fused:8,colbert:4,rerank:2",
        ks=(1, 2),
        index_dir=tmp_path / "cache",
        show_progress=False,
    )
    names = {(r.system, r.pool) for r in report.results}
    for pool in ("test", "global"):
        for prefix in ("fused:8", "fused:8,colbert:4", "fused:8,colbert:4,rerank:2"):
            assert (f"cascade {prefix}", pool) in names
    by = {(r.system, r.pool): r for r in report.results}
    last = by[("cascade fused:8,colbert:4,rerank:2", "test")]
    assert last.metrics is not None and all(len(d) <= 2 for d in last.run.values())
    assert "rerank" in last.latency and "colbert" in last.latency
    # the test pool's sparse recall stays inside the pool although the side index has all docs
    pool_docs = {"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10"}
    assert all(set(d) <= pool_docs for d in by[("cascade fused:8", "test")].run.values())


def test_cli_eval_cascade_lists_each_prefix(tmp_path, m3_dir, tiny_reranker_dir):
    r = run("eval", "--data", write_beir(tmp_path / "beir"), "--embedder", m3_dir,
            "--reranker", tiny_reranker_dir, "--systems", "lexical", "--cascade",
            "sparse:8,colbert:4,rerank:2", "--k", "1,2", "--pools", "test",
            "--index-dir", tmp_path / "cache", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["results"]
    names = [row["system"] for row in rows]
    for prefix in ("sparse:8", "sparse:8,colbert:4", "sparse:8,colbert:4,rerank:2"):
        assert f"cascade {prefix}" in names
    assert "lexical" in names
    r = run(
        "eval", "--data", tmp_path / "beir", "--embedder", m3_dir, "--cascade", "sparse:8,bogus:2"
    )
    assert r.returncode != 0 and "bogus" in r.stderr and "Traceback" not in r.stderr


def test_cli_index_outputs_and_search_cascade(tmp_path, m3_dir):
    catalog = tmp_path / "products.jsonl"
    catalog.write_text("\n".join(json.dumps(p) for p in PRODUCTS) + "\n")
    idx = tmp_path / "index"
    r = run("index", catalog, "--index", idx, "--embedder", m3_dir, "--outputs",
            "dense,sparse,colbert", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (idx / "m3" / "side.json").is_file()
    r = run("search", "running shoes", "--index", idx, "--cascade", "sparse:6,colbert:3", "--json")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert [s["stage"] for s in body["stages"]] == ["sparse", "colbert"]
    assert len(body["results"]) <= 3 and all(
        x["colbert_score"] is not None for x in body["results"]
    )
    r = run("store", "info", idx, "--json")  # disk and memory per product, as stored
    assert r.returncode == 0, r.stderr
    side = json.loads(r.stdout)["side_index"]
    assert side["counts"]["colbert"] == len(PRODUCTS) and side["disk_bytes_per_product"] > 0
    r = run("search", "shoes", "--index", idx, "--cascade", "colbert:5")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "first (recall) stage 'colbert'" in r.stderr + r.stdout


@pytest.fixture(scope="module")
def server(m3, tiny_reranker_dir, tmp_path_factory):
    catalog = Catalog.open(
        str(tmp_path_factory.mktemp("m3srv") / "index"), m3, outputs=("sparse", "colbert")
    )
    catalog.add(PRODUCTS)
    comps = Components(embedder=m3, reranker=Reranker(str(tiny_reranker_dir)), catalog=catalog)
    with running_server(settings(batch_wait_ms=5), comps) as srv:
        yield srv


def test_server_search_cascade_and_embeddings_extension(server, m3):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        r = http.post(
            "/v1/search", json={"query": "running shoes", "cascade": "hybrid:6,colbert:4,rerank:2"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(s["stage"], s["scored"]) for s in body["stages"]] == [
            ("hybrid", 6), ("colbert", 6), ("rerank", 4)
        ]  # fmt: skip
        assert body["reranked"] and len(body["results"]) == 2
        bad = http.post("/v1/search", json={"query": "x", "cascade": "hybrid:5,colbert:9"})
        assert bad.status_code in (400, 422) and "deeper" in bad.text
        texts = ["apple iphone", "cordless drill battery"]
        r = http.post(
            "/v1/embeddings",
            json={
                "input": texts,
                "input_type": "query",
                "return_sparse": True,
                "return_colbert": True,
            },
        )
        assert r.status_code == 200, r.text
        want = m3.encode_multi(texts, "query")
        for item, i in zip(r.json()["data"], range(2), strict=True):
            np.testing.assert_allclose(item["embedding"], want.dense[i], atol=1e-5)
            assert {int(t): w for t, w in item["sparse"].items()} == pytest.approx(want.sparse[i])
            np.testing.assert_allclose(item["colbert"], want.colbert[i], atol=1e-5)
        plain = http.post("/v1/embeddings", json={"input": texts}).json()["data"][0]
        assert "sparse" not in plain or plain["sparse"] is None
