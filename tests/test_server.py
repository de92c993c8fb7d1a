"""The HTTP service over a real uvicorn server on 127.0.0.1 with tiny models built here.

Official clients (openai, cohere) call it unchanged; results must equal the library's for
the same inputs. Also: aliases (TEI, Weaviate), search and product updates, concurrency
and batching, bad inputs, auth, readiness.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_helpers import PRODUCTS, build_sharp_reranker, free_port, running_server, settings

from rankwise.cache import MemoryCache
from rankwise.catalog import Catalog
from rankwise.models import Embedder, Reranker
from rankwise.server import Components, create_app
from rankwise.server.run import BackgroundServer

DOCS = [
    "apple iphone 15 pro smartphone 256gb black",
    "fresh red apples fruit 1kg bag",
    "summer breathable running shoes mesh lightweight",
    "leather dress shoes for men brown oxford",
    "cordless drill 18v lithium battery kit",
    "wireless bluetooth headphones noise cancelling",
]


@pytest.fixture(scope="module")
def embedder(tiny_embedder_dir) -> Embedder:
    # a query instruction, so that input_type="query" visibly changes the vectors
    return Embedder(str(tiny_embedder_dir), query_instruction="the quick brown fox: ")


@pytest.fixture(scope="module")
def reranker(tiny_reranker_dir, tmp_path_factory) -> Reranker:
    return Reranker(str(build_sharp_reranker(tiny_reranker_dir, tmp_path_factory.mktemp("sharp"))))


@pytest.fixture(scope="module")
def server(embedder, reranker, tmp_path_factory):
    catalog = Catalog.open(str(tmp_path_factory.mktemp("srv") / "index"), embedder)
    catalog.add(PRODUCTS)
    s = settings(batch_wait_ms=20, max_payload_bytes=2_000_000)
    comps = Components(embedder=embedder, reranker=reranker, catalog=catalog, cache=MemoryCache())
    with running_server(s, comps) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


# ----------------------------------------------------------------------------- official clients
def test_openai_client_embeddings_equal_library(server, embedder):
    from openai import OpenAI, UnprocessableEntityError

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    lib_docs = embedder.encode_documents(DOCS)
    resp = client.embeddings.create(model="any", input=DOCS)  # the client asks for base64
    got = np.array(
        [d.embedding for d in sorted(resp.data, key=lambda d: d.index)], dtype=np.float32
    )
    np.testing.assert_allclose(got, lib_docs, atol=1e-6)
    assert resp.usage.prompt_tokens == sum(embedder.count_tokens(DOCS))

    floats = client.embeddings.create(model="any", input=DOCS[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, lib_docs[0], atol=1e-6)

    queries = client.embeddings.create(
        model="any", input=DOCS[:2], extra_body={"input_type": "query"}
    )
    np.testing.assert_allclose(
        [d.embedding for d in queries.data], embedder.encode_queries(DOCS[:2]), atol=1e-6
    )

    short = client.embeddings.create(model="any", input=DOCS[:2], dimensions=8)
    cut = lib_docs[:2, :8] / np.linalg.norm(lib_docs[:2, :8], axis=1, keepdims=True)
    np.testing.assert_allclose([d.embedding for d in short.data], cut, atol=1e-6)

    with pytest.raises(UnprocessableEntityError):
        client.embeddings.create(model="any", input="x", dimensions=embedder.dim + 1)


def test_cohere_v2_client_rerank_equals_library(server, reranker):
    import cohere

    co = cohere.ClientV2(api_key="unused", base_url=server.url)
    query = "apple phone"
    resp = co.rerank(model="any", query=query, documents=DOCS, top_n=4)
    lib = reranker.rank(query, DOCS, top_n=4)
    assert [r.index for r in resp.results] == [r.index for r in lib]
    np.testing.assert_allclose(
        [r.relevance_score for r in resp.results], [r.relevance for r in lib], atol=1e-5
    )


def test_cohere_v1_client_rerank_returns_documents(server, reranker):
    import cohere

    co = cohere.Client(api_key="unused", base_url=server.url)
    resp = co.rerank(query="running shoes", documents=DOCS, return_documents=True)
    lib = reranker.rank("running shoes", DOCS)
    assert [r.index for r in resp.results] == [r.index for r in lib]
    assert [r.document.text for r in resp.results] == [DOCS[r.index] for r in lib]


def test_jina_shape_raw_scores_and_object_documents(http, reranker):
    body = {
        "query": "drill",
        "documents": [{"text": d, "sku": i} for i, d in enumerate(DOCS)],
        "return_documents": True,
        "raw_scores": True,
    }
    r = http.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    logits = reranker.score("drill", DOCS)
    for item in out["results"]:
        assert item["document"] == {"text": DOCS[item["index"]], "sku": item["index"]}
        assert item["relevance_score"] == pytest.approx(float(logits[item["index"]]), abs=1e-5)
    assert out["usage"]["total_tokens"] > 0 and out["model"] == reranker.model_id


def test_tei_and_weaviate_aliases(http, reranker):
    rel = 1 / (1 + np.exp(-reranker.score("shoes", DOCS).astype(np.float64)))
    tei = http.post("/rerank", json={"query": "shoes", "texts": DOCS, "return_text": True})
    assert tei.status_code == 200 and isinstance(tei.json(), list)
    arr = tei.json()
    assert [a["score"] for a in arr] == sorted((a["score"] for a in arr), reverse=True)
    for a in arr:
        assert a["text"] == DOCS[a["index"]] and a["score"] == pytest.approx(
            rel[a["index"]], abs=1e-5
        )

    w = http.post("/weaviate/rerank", json={"query": "shoes", "documents": DOCS})
    assert w.status_code == 200, w.text
    scores = w.json()["scores"]
    assert [s["document"] for s in scores] == DOCS  # input order
    np.testing.assert_allclose([s["score"] for s in scores], rel, atol=1e-5)
    assert http.get("/weaviate/.well-known/ready").status_code == 204
    # open to Weaviate (no key), so the model's name only, not its path
    assert http.get("/weaviate/meta").json()["model"]["name"] == Path(reranker.model_id).name


# ----------------------------------------------------------------------------- cache
def test_rerank_cache_hit_returns_the_same_body(http):
    body = {"query": "headphones for running", "documents": DOCS, "top_n": 2}
    first = http.post("/v1/rerank", json=body)
    second = http.post("/v1/rerank", json=body)
    assert first.headers["x-rankwise-cache"] == "miss"
    assert second.headers["x-rankwise-cache"] == "hit"
    a, b = first.json(), second.json()
    assert a.pop("id") != b.pop("id")  # each response has its own id, cached or not
    assert a == b
    other = http.post("/v1/rerank", json={**body, "top_n": 3})  # parameters are in the key
    assert other.headers["x-rankwise-cache"] == "miss"


# ----------------------------------------------------------------------------- search + products
def test_search_returns_both_scores_and_product_updates_invalidate(http):
    q = {"query": "waterproof hiking boots", "top_n": 3, "top_k": 8}
    r = http.post("/v1/search", json=q)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["reranked"] is True and len(first["results"]) == 3
    top = first["results"][0]
    assert {"recall_score", "recall_rank", "rerank_score", "relevance", "record"} <= top.keys()
    assert 0.0 <= top["relevance"] <= 1.0
    assert http.post("/v1/search", json=q).headers["x-rankwise-cache"] == "hit"

    put = http.put(
        "/v1/products", json={"products": [{"id": "new1", "title": "waterproof hiking boots"}]}
    )
    assert put.status_code == 200 and put.json()["upserted"] == 1
    after = http.post("/v1/search", json=q)
    assert after.headers["x-rankwise-cache"] == "miss"
    assert "new1" in [x["id"] for x in after.json()["results"]]

    bad = http.put("/v1/products", json={"products": [{"title": "no id"}]})
    assert bad.status_code == 422 and "products.0.id" in bad.json()["error"]

    assert http.request("DELETE", "/v1/products", json={"ids": ["new1"]}).json()["deleted"] == 1
    gone = http.post("/v1/search", json=q)
    assert gone.headers["x-rankwise-cache"] == "miss"
    assert "new1" not in [x["id"] for x in gone.json()["results"]]


def test_search_filters_and_skip_rule(http):
    r = http.post(
        "/v1/search", json={"query": "shoes", "filters": {"price": {"lt": 100}}, "top_k": 8}
    )
    assert r.status_code == 200, r.text
    assert all(x["record"]["price"] < 100 for x in r.json()["results"])
    exact = http.post("/v1/search", json={"query": "Cordless drill 18v lithium battery kit"}).json()
    assert exact["reranked"] is False and exact["skipped_reason"] == "exact title match"
    bad = http.post("/v1/search", json={"query": "x", "filters": {"price": {"between": 1}}})
    assert bad.status_code == 422 and bad.json()["error_type"] == "invalid_filter"


# ----------------------------------------------------------------------------- concurrency
def _histogram(metrics: str, name: str, model: str) -> tuple[float, float]:
    """(observations, observations <= 1) of a batch-size histogram."""
    count = re.search(rf'^{name}_count{{model="{model}"}} (\S+)$', metrics, re.M)
    ones = re.search(rf'^{name}_bucket{{le="1.0",model="{model}"}} (\S+)$', metrics, re.M)
    return float(count.group(1)), float(ones.group(1))


def test_32_concurrent_clients_get_their_own_results_and_batches_form(server, reranker):
    n = 32
    jobs = [
        (f"query {i} {DOCS[i % 6]}", [f"client {i} doc {j}: {DOCS[(i + j) % 6]}" for j in range(5)])
        for i in range(n)
    ]
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def client(i: int) -> None:
        q, docs = jobs[i]
        with httpx.Client(base_url=server.url, timeout=120) as c:
            barrier.wait()
            results[i] = c.post(
                "/v1/rerank",
                json={"query": q, "documents": docs, "return_documents": True, "raw_scores": True},
            )

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for (q, docs), r in zip(jobs, results, strict=True):
        assert r is not None and r.status_code == 200, r and r.text
        items = r.json()["results"]
        assert sorted(x["index"] for x in items) == list(range(len(docs)))
        assert all(x["document"]["text"] == docs[x["index"]] for x in items)
        got = np.array([x["relevance_score"] for x in sorted(items, key=lambda x: x["index"])])
        np.testing.assert_allclose(got, reranker.score(q, docs), atol=1e-5)
    metrics = httpx.get(f"{server.url}/metrics").text
    count, singles = _histogram(metrics, "rankwise_batch_requests", "rerank")
    assert count > singles, "every model call served a single request: no batch formed"


# ----------------------------------------------------------------------------- bad inputs
def _raw(payload: bytes) -> dict:
    return {"content": payload, "headers": {"content-type": "application/json"}}


BAD = [
    ("empty query", "/v1/rerank", {"json": {"query": "", "documents": ["a"]}}, 422),
    ("blank query", "/v1/rerank", {"json": {"query": "   ", "documents": ["a"]}}, 422),
    ("no documents", "/v1/rerank", {"json": {"query": "q", "documents": []}}, 422),
    (
        "10,000 documents",
        "/v1/rerank",
        {"json": {"query": "q", "documents": ["doc"] * 10_000}},
        413,
    ),
    ("1 MB document", "/v1/rerank", {"json": {"query": "q", "documents": ["x" * 1_000_000]}}, 413),
    ("query not a string", "/v1/rerank", {"json": {"query": 123, "documents": ["a"]}}, 422),
    ("documents not a list", "/v1/rerank", {"json": {"query": "q", "documents": "a"}}, 422),
    (
        "top_n a word",
        "/v1/rerank",
        {"json": {"query": "q", "documents": ["a"], "top_n": "two"}},
        422,
    ),
    ("top_n zero", "/v1/rerank", {"json": {"query": "q", "documents": ["a"], "top_n": 0}}, 422),
    (
        "object without text",
        "/v1/rerank",
        {"json": {"query": "q", "documents": [{"title": "a"}]}},
        422,
    ),
    ("missing query", "/v1/rerank", {"json": {"documents": ["a"]}}, 422),
    ("invalid JSON", "/v1/rerank", _raw(b'{"query": "q", "documents": ['), 400),
    ("NaN", "/v1/rerank", _raw(b'{"query": "q", "documents": ["a"], "top_n": NaN}'), 400),
    ("Infinity", "/v1/search", _raw(b'{"query": "q", "threshold": Infinity}'), 400),
    ("body over the limit", "/v1/embeddings", {"json": {"input": ["y" * 90_000] * 25}}, 413),
    (
        "too long, no truncation",
        "/v1/rerank",
        {"json": {"query": "q", "documents": ["word " * 600], "truncate": False}},
        413,
    ),
    ("embedding input ints", "/v1/embeddings", {"json": {"input": [[1, 2, 3]]}}, 422),
    ("embedding empty string", "/v1/embeddings", {"json": {"input": ""}}, 422),
    ("search top_k over max_documents", "/v1/search", {"json": {"query": "q", "top_k": 5000}}, 413),
    ("threshold above 1", "/v1/search", {"json": {"query": "q", "threshold": 2}}, 422),
    ("unknown path", "/v1/nothing", {"json": {}}, 404),
]


@pytest.mark.parametrize(("what", "path", "kwargs", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_4xx_with_error_body(http, what, path, kwargs, status):
    r = http.post(path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    if path == "/v1/embeddings":  # OpenAI's error object
        assert body["error"]["message"] and body["error"]["type"] == body["error_type"]
    elif path == "/v1/rerank":  # Cohere's {"message"}, plus rankwise's fields
        assert body["message"] and body["error"] == body["message"] and body["error_type"]
    else:
        assert set(body) == {"error", "error_type"} and body["error"]
    ok = http.post("/v1/rerank", json={"query": "still serving?", "documents": ["yes"]})
    assert ok.status_code == 200


def test_full_queue_answers_429_with_retry_after(embedder, reranker):
    s = settings(max_queue=1, batching=False)
    with running_server(s, Components(embedder=embedder, reranker=reranker)) as srv:
        docs = [f"{d} number {i}" for i, d in enumerate(DOCS * 40)]
        out: list = []
        barrier = threading.Barrier(12)

        def call() -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                barrier.wait()
                out.append(c.post("/v1/rerank", json={"query": "q", "documents": docs}))

        threads = [threading.Thread(target=call) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        codes = sorted(r.status_code for r in out)
        assert 200 in codes and 429 in codes, codes
        busy = next(r for r in out if r.status_code == 429)
        assert int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error_type"] == "overloaded"
        rejected = re.search(
            r'^rankwise_rejected_total{model="rerank"} (\S+)$',
            httpx.get(f"{srv.url}/metrics").text,
            re.M,
        )
        assert rejected and float(rejected.group(1)) == codes.count(429)
        assert (
            httpx.post(f"{srv.url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code
            == 200
        )


def test_full_queue_is_429_before_the_body_is_parsed(embedder, reranker):
    """The 429 comes from the request line (middleware), before the body is parsed or
    tokenised: with the rerank queue full, even a body that is not JSON gets the 429
    (in the route it would have been a 422 first), in each API's error shape; the
    embeddings queue is not full, so its bad body is still a 422."""
    s = settings(max_queue=1)
    with running_server(s, Components(embedder=embedder, reranker=reranker)) as srv:
        batcher = srv.app.state.rankwise.rerank_batcher
        with httpx.Client(base_url=srv.url, timeout=30) as c, batcher.admission():
            for path in ("/v1/rerank", "/v2/rerank", "/rerank", "/weaviate/rerank", "/v1/search"):
                r = c.post(path, content=b"{not json", headers={"content-type": "application/json"})
                assert r.status_code == 429, (path, r.status_code, r.text)
                assert int(r.headers["retry-after"]) >= 1
                assert "queue is full" in r.text
            assert c.post("/v1/rerank", content=b"{").json()["message"]  # Cohere's shape
            assert c.post("/v1/embeddings", content=b"{not json").status_code == 422
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'endpoint="/v1/rerank",method="POST",status="429"' in metrics
        ok = httpx.post(f"{srv.url}/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert ok.status_code == 200  # the place was released: admitted again


# ----------------------------------------------------------------------------- auth, ops
def test_api_keys(embedder, reranker):
    from openai import OpenAI

    s = settings(api_keys="k1,k2")
    with running_server(s, Components(embedder=embedder, reranker=reranker)) as srv:
        body = {"query": "q", "documents": ["a"]}
        none = httpx.post(f"{srv.url}/v1/rerank", json=body)
        assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
        assert none.json()["error_type"] == "unauthorized"
        wrong = httpx.post(
            f"{srv.url}/v1/rerank", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        right = httpx.post(
            f"{srv.url}/v1/rerank", json=body, headers={"Authorization": "Bearer k2"}
        )
        assert right.status_code == 200
        assert httpx.get(f"{srv.url}/health").status_code == 200  # probes stay open
        assert httpx.get(f"{srv.url}/ready").status_code == 200
        client = OpenAI(base_url=f"{srv.url}/v1", api_key="k1", max_retries=0)
        assert (
            len(client.embeddings.create(model="m", input="hi").data[0].embedding) == embedder.dim
        )


def test_openapi_health_ready_metrics(http):
    spec = http.get("/openapi.json").json()
    for path in (
        "/v1/embeddings",
        "/v1/rerank",
        "/v2/rerank",
        "/rerank",
        "/weaviate/rerank",
        "/v1/search",
        "/v1/products",
        "/health",
        "/ready",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready").json()
    assert ready["status"] == "ready" and ready["reranker"]["version"]
    metrics = http.get("/metrics").text
    for name in (
        "rankwise_requests_total",
        "rankwise_request_seconds_bucket",
        "rankwise_stage_seconds",
        "rankwise_queue_depth",
        "rankwise_cache_hits_total",
        "rankwise_batch_items",
    ):
        assert name in metrics, name


def test_readiness_probe_is_a_full_batch_that_prices_nothing(embedder, reranker, monkeypatch):
    """The probe's batch is what admission first measures: a full batch of texts at the
    model's length (a one-pair probe set a cold server's drain rate and batch budget from
    8 tokens), kept out of the mean cost that prices a burst's unread places. Every row
    reaches the model, even for a reranker that has seen the probe before (one repeated,
    cached pair measured a drain rate of 228,000 tokens/s for a model that drains ~4,000)."""
    from rankwise.server.batcher import FIRST_BATCH_TOKENS

    reranker.score_pairs([("readiness probe", "warm")])  # the fixture may be fresh
    scored = []
    infer = reranker._infer
    monkeypatch.setattr(
        reranker, "_infer", lambda enc, *a: scored.append(len(enc)) or infer(enc, *a)
    )
    for _ in range(2):  # the second server meets a reranker that scored the probe already
        scored.clear()
        with running_server(settings(), Components(embedder=embedder, reranker=reranker)):
            pass
        n = FIRST_BATCH_TOKENS // reranker.max_length
        assert scored == [n, n]  # the warm-up call, then the measured batch, all rows scored
    with running_server(settings(), Components(embedder=embedder, reranker=reranker)) as srv:
        state = srv.app.state.rankwise
        for b, model in ((state.embed_batcher, embedder), (state.rerank_batcher, reranker)):
            batches = list(b._meter._batches)
            assert len(batches) == 1, b.name  # the probe's one measured call
            n = FIRST_BATCH_TOKENS // model.max_length
            assert batches[0][0] == n * model.max_length, b.name
            assert b._job_tokens is None and b.drain_rate is not None
        metrics = httpx.get(f"{srv.url}/metrics").text
        for name in ("embed", "rerank"):
            line = f'rankwise_drain_rate_tokens_per_second{{model="{name}"}} '
            rate = float(next(x for x in metrics.splitlines() if x.startswith(line)).split()[-1])
            assert rate == getattr(state, f"{name}_batcher").drain_rate > 0


def test_a_started_server_prices_requests_before_its_first_client(embedder, reranker):
    """A cold server had measured no request's cost outside the model, so its first burst
    got Retry-After 1 s for a 6.9 s drain. Started as `rankwise serve` starts it, it sends
    itself tiny requests over loopback (with its own API key), served alone, and admission
    has a cost before any client came."""
    from rankwise.server.run import WARM_UP_REQUESTS

    app = create_app(settings(api_keys=["k1"]), Components(embedder=embedder, reranker=reranker))
    with BackgroundServer(app, warm_up=True) as srv:
        state = app.state.rankwise
        # /ready (a load balancer's signal) turns 200 only once the warm-up is done: a burst
        # sent on the first 200 met one cold request's cost as every request's
        deadline = time.monotonic() + 120
        while (r := httpx.get(f"{srv.url}/ready")).status_code != 200:
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.01)
        assert srv.warmed.is_set() and not state.warming.is_set()
        for b in (state.embed_batcher, state.rerank_batcher):
            assert len(b._request_costs) == WARM_UP_REQUESTS, b.name
        assert srv.warmed_up == 2 * WARM_UP_REQUESTS  # every one answered 200
        for b in (state.embed_batcher, state.rerank_batcher):
            assert len(b._request_costs) == WARM_UP_REQUESTS, b.name
            assert b.request_cost > 0, b.name
            # their two-pair model calls stay out of the drain rate and the mean cost (they
            # set a cold burst's Retry-After to 45 s for a 5.8 s drain): the probe's alone
            assert len(b._meter._batches) == 1 and b._job_tokens is None, b.name
        guess = {"Authorization": "Bearer k1", "X-Rankwise-Warm-Up": "guess"}
        r = httpx.post(
            f"{srv.url}/v1/rerank", json={"query": "q", "documents": ["a"]}, headers=guess
        )
        assert r.status_code == 200 and len(state.rerank_batcher._meter._batches) == 2
        metrics = httpx.get(f"{srv.url}/metrics").text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith('rankwise_request_cost_seconds{model="rerank"}')
        )
        assert float(line.split()[-1]) == pytest.approx(state.rerank_batcher.request_cost)
    cold = create_app(settings(), Components(embedder=embedder, reranker=reranker))
    with BackgroundServer(cold) as srv:  # tests' default: no warm-up, nothing measured
        assert srv.wait_ready(120)
        assert cold.state.rankwise.rerank_batcher.request_cost is None


def test_model_that_fails_to_load_is_reported_not_fatal(tmp_path):
    s = settings(
        embedder=str(tmp_path / "missing-model"), reranker=None, index=str(tmp_path / "idx")
    )
    app = create_app(s)  # no components: load from settings
    with BackgroundServer(app) as srv:
        assert srv.wait_ready(60) is False
        assert httpx.get(f"{srv.url}/health").status_code == 200
        ready = httpx.get(f"{srv.url}/ready")
        assert ready.status_code == 503 and ready.json()["error_type"] == "model_unavailable"
        assert "missing-model" in ready.json()["error"]
        emb = httpx.post(f"{srv.url}/v1/embeddings", json={"input": "x"})
        assert emb.status_code == 503


def test_embeddings_base64_is_little_endian_float32(http, embedder):
    r = http.post("/v1/embeddings", json={"input": ["hello"], "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    np.testing.assert_allclose(
        np.frombuffer(raw, dtype="<f4"), embedder.encode_documents(["hello"])[0], atol=1e-6
    )
    assert json.loads(r.content)["object"] == "list"


def test_rankwise_serve_command_end_to_end(tiny_embedder_dir, tiny_reranker_dir, tmp_path):
    """`rankwise serve` in a subprocess: env settings, readiness, a rerank, clean shutdown."""
    import os
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    env = {
        **os.environ,
        "RANKWISE_API_KEYS": "secret",
        "RANKWISE_MAX_DOCUMENTS": "3",
    }
    cmd = [
        sys.executable,
        "-m",
        "rankwise.cli",
        "serve",
        "--port",
        str(port),
        "--embedder",
        str(tiny_embedder_dir),
        "--reranker",
        str(tiny_reranker_dir),
        "--index",
        str(tmp_path / "index"),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer secret"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "rankwise serve did not become ready"
            time.sleep(0.25)
        # the server's own warm-up requests (run.warm_up_http) price a request's cost
        cost = float("nan")
        while cost != cost:  # NaN until measured
            assert time.monotonic() < deadline, "no request cost was measured"
            for line in httpx.get(f"{url}/metrics").text.splitlines():
                if line.startswith('rankwise_request_cost_seconds{model="rerank"}'):
                    cost = float(line.split()[-1])
            time.sleep(0.1)
        assert cost > 0
        ok = httpx.post(
            f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, headers=auth
        )
        assert ok.status_code == 200 and len(ok.json()["results"]) == 2
        assert (
            httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code
            == 401
        )
        many = httpx.post(
            f"{url}/v1/rerank", json={"query": "q", "documents": ["a"] * 4}, headers=auth
        )
        assert many.status_code == 413
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_rerank_only_server_from_settings(tiny_reranker_dir):
    """`--embedder none --index none`: rerank served, the rest says it is not configured."""
    s = settings(embedder="none", index="none", reranker=str(tiny_reranker_dir), cache_url="off",
                 batch_ms=40)  # fmt: skip
    app = create_app(s)
    with BackgroundServer(app) as srv:
        assert srv.wait_ready(60), app.state.rankwise.error
        assert app.state.rankwise.rerank_batcher.max_batch_s == 0.04  # the setting reaches it
        ok = httpx.post(f"{srv.url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert ok.status_code == 200 and ok.headers["x-rankwise-cache"] == "off"
        for path, body in (("/v1/embeddings", {"input": "x"}), ("/v1/search", {"query": "x"})):
            r = httpx.post(f"{srv.url}{path}", json=body)
            assert r.status_code == 501 and r.json()["error_type"] == "unsupported"


def test_concurrent_embeddings_mixed_input_types(server, embedder):
    texts = [f"{DOCS[i % 6]} variant {i}" for i in range(16)]
    out: list = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def call(i: int) -> None:
        kind = "query" if i % 2 else "document"
        with httpx.Client(base_url=server.url, timeout=60) as c:
            barrier.wait()
            out[i] = c.post("/v1/embeddings", json={"input": texts[i], "input_type": kind})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    got = np.array([r.json()["data"][0]["embedding"] for r in out], dtype=np.float32)
    assert not np.allclose(embedder.encode_queries(texts[:1]), embedder.encode_documents(texts[:1]))
    np.testing.assert_allclose(got[0::2], embedder.encode_documents(texts[0::2]), atol=1e-6)
    np.testing.assert_allclose(got[1::2], embedder.encode_queries(texts[1::2]), atol=1e-6)


def test_chunked_body_over_the_limit_is_413(http):
    """No Content-Length (chunked upload): the limit is enforced on the bytes streamed."""

    def chunks():
        yield b'{"input": ["'
        for _ in range(40):
            yield b"z" * 60_000
        yield b'"]}'

    r = http.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"


def test_weaviate_legacy_property_form(http, reranker):
    r = http.post("/weaviate/rerank", json={"query": "drill", "property": DOCS[4]})
    assert r.status_code == 200
    expected = 1 / (1 + np.exp(-float(reranker.score("drill", [DOCS[4]])[0])))
    assert r.json()["score"] == pytest.approx(expected, abs=1e-5)
    assert http.post("/weaviate/rerank", json={"query": "drill"}).status_code == 422


def test_over_limit_bodies_get_the_413_not_a_connection_reset(server):
    """The server answers 413 only after reading (and dropping) the rest of the body:
    closing with unread bytes makes the kernel reset the connection, and the client would
    see ``ConnectionResetError`` instead of the 413 (CI hit exactly that)."""
    big = b'{"input": ["' + b"y" * 6_000_000 + b'"]}'

    def chunks():
        for i in range(0, len(big), 64_000):
            yield big[i : i + 64_000]

    for attempt in range(12):
        with httpx.Client(base_url=server.url, timeout=60) as c:  # a fresh connection each
            content = big if attempt % 2 == 0 else chunks()
            r = c.post(
                "/v1/embeddings", content=content, headers={"content-type": "application/json"}
            )
            assert r.status_code == 413, attempt
            assert r.json()["error_type"] == "payload_too_large"
