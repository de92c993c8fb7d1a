"""The blend stage and chunked rerank over HTTP: a real server on 127.0.0.1."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from server_helpers import PRODUCTS, running_server, settings

from rankwise.blend import BlendModel, BlendSpec, BlendStage
from rankwise.cache import MemoryCache
from rankwise.catalog import Catalog
from rankwise.models.chunking import ChunkPolicy, score_chunked
from rankwise.search import Searcher
from rankwise.server import Components

LONG = " ".join(f"cordless drill battery kit part {i}" for i in range(40))


@pytest.fixture(scope="module")
def models(tiny_embedder_dir, tiny_reranker_dir):
    from rankwise.models import Embedder, Reranker

    return Embedder(str(tiny_embedder_dir)), Reranker(str(tiny_reranker_dir), max_length=32)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    embedder, reranker = models
    tmp = tmp_path_factory.mktemp("blend-srv")
    catalog = Catalog.open(str(tmp / "index"), embedder)
    catalog.add([{**p, "stock": float(i)} for i, p in enumerate(PRODUCTS)])
    events = tmp / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps({"query": "shoes", "product_id": pid, "event": ev, "ts": t, "user_id": "u1"})
            for t, (pid, ev) in enumerate([("p3", "click"), ("p3", "purchase"), ("p4", "click")])
        )
    )
    spec = BlendSpec(
        numeric_fields=("price", "stock"), behaviour=True, events=str(events),
        monotone={"stock": 1}, max_move=2,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(spec.feature_names))).astype(np.float32)
    y = (X[:, 2] + X[:, 4] > 0).astype(int) + (X[:, 5] > 1).astype(int)
    model = BlendModel.fit(X, y, [20] * 20, spec, num_rounds=20)
    searcher = Searcher(
        catalog, reranker, top_k=8, top_n=5, mode="hybrid", chunking=ChunkPolicy(3),
        blend=BlendStage(model, records=catalog.store.get),
    )  # fmt: skip
    comps = Components(searcher=searcher, cache=MemoryCache())
    with running_server(settings(), comps) as srv:
        yield srv


def test_search_explain_returns_each_features_contribution(server):
    body = {"query": "running shoes", "user_id": "u1"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        plain = c.post("/v1/search", json=body).json()
        explained = c.post("/v1/search", params={"explain": "true"}, json=body).json()
        cold = c.post("/v1/search", params={"explain": "true"}, json={**body, "user_id": "new"})
    assert plain["reranked"] and all(r["explain"] is None for r in plain["results"])
    assert [r["id"] for r in plain["results"]] == [r["id"] for r in explained["results"]]
    names = BlendSpec(numeric_fields=("price", "stock"), behaviour=True, events="x").feature_names
    for r in explained["results"]:
        e = r["explain"]
        assert list(e["contributions"]) == names and list(e["features"]) == names
        assert sum(e["contributions"].values()) + e["bias"] == pytest.approx(
            r["blend_score"], abs=1e-5
        )
        assert abs(r["rank"] - e["base_rank"]) <= 2  # the movement cap, as served
        assert e["features"]["rerank_logit"] == pytest.approx(r["rerank_score"], abs=1e-6)
        assert e["features"]["stock"] == r["record"]["stock"]
    assert "blend" in explained["timings"]
    # the user's history changes their affinity features; a new user gets the population's
    by_id = {r["id"]: r["explain"]["features"] for r in cold.json()["results"]}
    mine = {r["id"]: r["explain"]["features"] for r in explained["results"]}
    common = set(by_id) & set(mine)
    assert any(by_id[i]["user_events"] != mine[i]["user_events"] for i in common)


def test_rerank_chunks_long_documents_and_bills_each_window(server, models):
    _, reranker = models
    docs = ["wireless headphones", "drill kit\n" + LONG]
    with httpx.Client(base_url=server.url, timeout=60) as c:

        def call(**extra):
            body = {"query": "cordless drill", "documents": docs, "raw_scores": True, **extra}
            r = c.post("/v1/rerank", json=body)
            assert r.status_code == 200, r.text
            return r.json()

        trunc, chunked = call(), call(max_chunks_per_doc=3)
        short = call(max_chunks_per_doc=3, max_tokens_per_doc=4)
        bad = c.post("/v1/rerank", json={"query": "q", "documents": ["a"], "max_chunks_per_doc": 0})
    assert chunked["usage"]["total_tokens"] > trunc["usage"]["total_tokens"]  # 3 windows billed
    assert short["usage"]["total_tokens"] < trunc["usage"]["total_tokens"]
    want = score_chunked(reranker, "cordless drill", docs, ChunkPolicy(3)).scores
    got = {r["index"]: r["relevance_score"] for r in chunked["results"]}
    assert [got[0], got[1]] == pytest.approx(want.tolist(), abs=1e-5)
    assert bad.status_code == 422 and "max_chunks_per_doc" in bad.text


def _metric(text: str, name: str) -> float:
    """A sample's value from the Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if 'model="rerank"' in line or "{" not in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_search_prices_every_window_in_the_rerank_batcher(models, tmp_path):
    """Chunked rerank in /v1/search: each window goes through the batcher as one pair,
    priced by its own tokens (the admission's unit), not one price per product."""
    from rankwise.models.chunking import split_windows
    from rankwise.templates import _title_and_text

    embedder, reranker = models
    catalog = Catalog.open(str(tmp_path / "index"), embedder)
    rows = [{"id": "long", "title": "drill kit", "text": LONG}, *PRODUCTS[:2]]
    catalog.add(rows)
    policy = ChunkPolicy(3)
    searcher = Searcher(catalog, reranker, top_k=3, top_n=3, mode="dense", chunking=policy)
    with running_server(settings(), Components(searcher=searcher, cache=MemoryCache())) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            before = c.get("/metrics").text
            r = c.post("/v1/search", json={"query": "cordless drill"})
            after = c.get("/metrics").text
    assert r.status_code == 200 and {x["id"] for x in r.json()["results"]} == {"long", "p1", "p2"}
    docs = [_title_and_text(x) for x in rows]
    windows = [w for ws in split_windows(reranker, "cordless drill", docs, policy) for w in ws]
    assert len(windows) == 3 + 2  # the long page is 3 windows
    counts = reranker.count_tokens([t for w in windows for t in ("cordless drill", w)])
    cost = sum(min(counts[2 * i] + counts[2 * i + 1], reranker.max_length) for i in range(5))
    items = "rankwise_batch_items_sum"
    tokens = "rankwise_batch_tokens_sum"
    assert _metric(after, items) - _metric(before, items) == len(windows)
    assert _metric(after, tokens) - _metric(before, tokens) == cost
