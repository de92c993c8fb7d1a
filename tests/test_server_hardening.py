"""The service under hostile input: no 5xx from any body, and the OpenAPI schema agrees
with the server (a bounded schemathesis run against a real uvicorn server on 127.0.0.1).

Also: nested product fields refused, per-response ids, echoed model names, no paths on
unauthenticated endpoints, Weaviate's own auth switch, a stalled body timed out, and a
request over the cost limit answered 413 naming the limit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import PRODUCTS, build_sharp_reranker, running_server, settings

from rankwise.cache import MemoryCache
from rankwise.catalog import Catalog
from rankwise.models import Embedder, Reranker
from rankwise.server import Components

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def models(tiny_embedder_dir, tiny_reranker_dir, tmp_path_factory):
    emb = Embedder(str(tiny_embedder_dir))
    rr = Reranker(str(build_sharp_reranker(tiny_reranker_dir, tmp_path_factory.mktemp("sharp"))))
    return emb, rr


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    emb, rr = models
    root = tmp_path_factory.mktemp("hard")
    catalog = Catalog.open(str(root / "index"), emb)
    catalog.add(PRODUCTS)
    s = settings(
        api_keys=KEY,
        judgments=str(root / "judgments" / "qrels.tsv"),  # every route is served (workbench too)
        compare_reranker=str(rr.model_id),
        weaviate_auth=False,
        body_timeout=1.0,
        header_timeout=1.0,
        max_request_tokens=4000,
    )
    comps = Components(embedder=emb, reranker=rr, catalog=catalog, cache=MemoryCache())
    with running_server(s, comps) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as c:
        yield c


def _raw(body: bytes) -> dict:
    return {"content": body, "headers": {"content-type": "application/json"}}


def _lone(template: str) -> dict:
    """A JSON body with a lone surrogate escape where ``@`` stands (as a client would send
    it: valid JSON grammar, not valid Unicode)."""
    return _raw(template.replace("@", "\\ud800").encode())


NUL = "a\u0000b"
# (what, method, path, request kwargs, status, field named in the message)
BATTERY = [
    (
        "surrogate document",
        "POST",
        "/v1/rerank",
        _lone('{"query":"q","documents":["x@"]}'),
        422,
        "documents[0]",
    ),
    (
        "surrogate query",
        "POST",
        "/v2/rerank",
        _lone('{"query":"q@","documents":["x"]}'),
        422,
        "query",
    ),
    (
        "surrogate TEI text",
        "POST",
        "/rerank",
        _lone('{"query":"q","texts":["@"]}'),
        422,
        "texts[0]",
    ),
    (
        "surrogate weaviate",
        "POST",
        "/weaviate/rerank",
        _lone('{"query":"q","documents":["@"]}'),
        422,
        "documents[0]",
    ),
    ("surrogate search", "POST", "/v1/search", _lone('{"query":"@"}'), 422, "query"),
    (
        "surrogate filter value",
        "POST",
        "/v1/search",
        _lone('{"query":"q","filters":{"brand":"@"}}'),
        422,
        "filters.brand",
    ),
    (
        "surrogate filter key",
        "POST",
        "/v1/search",
        _lone('{"query":"q","filters":{"@":"x"}}'),
        422,
        "filters",
    ),
    (
        "surrogate product field",
        "PUT",
        "/v1/products",
        _lone('{"products":[{"id":"s1","title":"t","brand":"@"}]}'),
        422,
        "products[0].brand",
    ),
    (
        "surrogate embeddings",
        "POST",
        "/v1/embeddings",
        _lone('{"input":["ok","@"]}'),
        422,
        "input[1]",
    ),
    (
        "surrogate object document",
        "POST",
        "/v1/rerank",
        _lone('{"query":"q","documents":[{"text":"@"}]}'),
        422,
        "documents[0].text",
    ),
    (
        "NUL document",
        "POST",
        "/v1/rerank",
        {"json": {"query": "q", "documents": [NUL]}},
        422,
        "documents.0",
    ),
    ("NUL query", "POST", "/v1/search", {"json": {"query": NUL}}, 422, "query"),
    (
        "NUL filter value",
        "POST",
        "/v1/search",
        {"json": {"query": "q", "filters": {"brand": {"in": [NUL]}}}},
        422,
        "filters.brand.in[0]",
    ),
    (
        "NUL product title",
        "PUT",
        "/v1/products",
        {"json": {"products": [{"id": "n1", "title": NUL}]}},
        422,
        "products.0.title",
    ),
    ("NUL embeddings", "POST", "/v1/embeddings", {"json": {"input": NUL}}, 422, "input"),
    (
        "invalid UTF-8",
        "POST",
        "/v1/rerank",
        _raw(b'{"query":"q","documents":["\xff\xfe"]}'),
        400,
        "UTF-8",
    ),
    (
        "invalid UTF-8 product",
        "PUT",
        "/v1/products",
        _raw(b'{"products":[{"id":"u","title":"caf\xe9"}]}'),
        400,
        "UTF-8",
    ),
    (
        "empty embeddings list",
        "POST",
        "/v1/embeddings",
        {"json": {"input": [], "dimensions": 1}},
        422,
        "input",
    ),
    (
        "nested product field",
        "PUT",
        "/v1/products",
        {"json": {"products": [{"id": "x", "title": "t", "spec": {"a": 1}}]}},
        422,
        "products.0.spec",
    ),
    (
        "list product field",
        "PUT",
        "/v1/products",
        {"json": {"products": [{"id": "x", "title": "t", "tags": ["a"]}]}},
        422,
        "products.0.tags",
    ),
    (
        "boolean product id",
        "PUT",
        "/v1/products",
        {"json": {"products": [{"id": True, "title": "t"}]}},
        422,
        "products.0.id",
    ),
    (
        "over the cost limit",
        "POST",
        "/v1/rerank",
        {"json": {"query": "q", "documents": ["word " * 100] * 60}},
        413,
        "max_request_tokens",
    ),
]


def _message(body: dict) -> str:
    err = body.get("error")
    return err["message"] if isinstance(err, dict) else body.get("message") or err


@pytest.mark.parametrize(
    ("what", "method", "path", "kwargs", "status", "field"), BATTERY, ids=[b[0] for b in BATTERY]
)
def test_bad_input_battery_answers_4xx_naming_the_field(
    http, what, method, path, kwargs, status, field
):
    r = http.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert field in _message(r.json()), r.text
    assert (
        http.post("/v1/rerank", json={"query": "alive?", "documents": ["yes"]}).status_code == 200
    )


def test_nothing_nulled_scalar_fields_stored_faithfully(http):
    prod = {"id": "f1", "title": "faithful drill", "brand": "tool", "price": 12.5}
    assert http.put("/v1/products", json={"products": [prod]}).status_code == 200
    hits = http.post("/v1/search", json={"query": "faithful drill", "rerank": False}).json()
    rec = next(h["record"] for h in hits["results"] if h["id"] == "f1")
    assert rec["brand"] == "tool" and rec["price"] == 12.5


def test_ids_unique_model_echoed_even_from_the_cache(http):
    body = {"model": "my-client-model", "query": "apple", "documents": ["apple phone", "shoe"]}
    a, b = http.post("/v1/rerank", json=body), http.post("/v1/rerank", json=body)
    assert b.headers["x-rankwise-cache"] == "hit"
    assert a.json()["id"] != b.json()["id"]
    assert a.json()["model"] == b.json()["model"] == "my-client-model"
    assert http.post("/v1/rerank", json={**body, "model": "other"}).json()["model"] == "other"
    v2 = http.post("/v2/rerank", json=body).json()
    assert v2["meta"]["api_version"]["version"] == "2" and "billed_units" in v2["meta"]
    emb = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert emb.json()["model"] == "text-embedding-3-small"


def test_no_paths_on_unauthenticated_endpoints(server, models):
    for path in ("/ready", "/health", "/weaviate/meta"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200
        for model in models:
            assert str(Path(model.model_id).parent) not in r.text, (path, r.text)


def test_weaviate_routes_follow_their_own_auth_setting(server, models):
    body = {"query": "q", "documents": ["a"]}
    assert httpx.post(f"{server.url}/weaviate/rerank", json=body).status_code == 200
    assert httpx.get(f"{server.url}/weaviate/.well-known/ready").status_code == 204
    assert httpx.post(f"{server.url}/v1/rerank", json=body).status_code == 401
    s = settings(api_keys=KEY)  # default weaviate_auth=True: the key applies there too
    with running_server(s, Components(reranker=models[1])) as srv:
        assert httpx.post(f"{srv.url}/weaviate/rerank", json=body).status_code == 401
        assert httpx.get(f"{srv.url}/weaviate/.well-known/ready").status_code == 401
        ok = httpx.post(f"{srv.url}/weaviate/rerank", json=body, headers=AUTH)
        assert ok.status_code == 200


def test_a_stalled_body_is_timed_out(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b'\r\nContent-Length: 100\r\n\r\n{"query"'
        )
        start = time.monotonic()
        reply = sock.recv(65536)
        waited = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert waited < 5


def test_partial_headers_are_timed_out_and_the_connection_closed(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Ty")  # never finished
        start = time.monotonic()
        reply = sock.recv(65536)  # b"" once the server closes
        waited = time.monotonic() - start
    assert reply == b"" and waited < 5, (reply[:200], waited)
    # a normal keep-alive client is unaffected by the timer
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        for _ in range(3):
            assert c.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
            time.sleep(0.6)


def test_405_allow_header_lists_every_method(http):
    r = http.request("PATCH", "/v1/products", json={})
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"PUT", "DELETE"}


@pytest.mark.skipif(
    shutil.which("schemathesis") is None
    and not (Path(sys.executable).parent / "schemathesis").exists(),
    reason="schemathesis is not installed (the test extra pins it)",
)
def test_schemathesis_finds_no_failures(server, tmp_path):
    """Every check schemathesis has, over every operation, a few examples each (bounded
    for CI). Its config (written here) allows 413 for schema-valid requests: the limits
    that depend on the deployment (token cost, counts, characters) are not in the schema
    by design. Product writes and searches are left out of "positive data acceptance":
    which metadata fields and filters are valid depends on the catalog's own fields, which
    a schema for every catalog cannot state (they answer 422 naming the field)."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "429"]\n'
        "[[operations]]\n"
        'include-path-regex = "^/v1/(products|search)"\n'
        "checks.positive_data_acceptance.enabled = false\n"
    )
    exe = Path(sys.executable).parent / "schemathesis"
    cmd = [
        str(exe if exe.exists() else shutil.which("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--max-examples",
        "8",
        "--workers",
        "2",
        "--generation-deterministic",
        "--no-color",
        "-H",
        f"Authorization: Bearer {KEY}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    tail = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    assert "No issues found" in out.stdout or "passed" in out.stdout, tail


def test_searches_pass_admission_and_get_429_at_once_when_full(models, tmp_path):
    """Searches used to queue without bound in the thread pool (no 429 ever); now at most
    ``max_queue`` are in flight and the rest are answered 429 with Retry-After at once."""
    import threading

    emb, rr = models
    catalog = Catalog.open(str(tmp_path / "index"), emb)
    catalog.add(PRODUCTS)
    s = settings(max_queue=1, cache_url="off")
    with running_server(s, Components(embedder=emb, reranker=rr, catalog=catalog)) as srv:
        out: list = []
        barrier = threading.Barrier(12)

        def call(i: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                barrier.wait()
                t = time.monotonic()
                r = c.post("/v1/search", json={"query": f"shoes {i}", "top_k": 8})
                out.append((r, time.monotonic() - t))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        codes = sorted(r.status_code for r, _ in out)
        assert 200 in codes and 429 in codes, codes
        busy = [(r, sec) for r, sec in out if r.status_code == 429]
        assert all(int(r.headers["retry-after"]) >= 1 for r, _ in busy)
        assert busy[0][0].json()["error_type"] == "overloaded"
        slowest_ok = max(sec for r, sec in out if r.status_code == 200)
        assert min(sec for _, sec in busy) < slowest_ok  # refused, not queued behind them
