"""Redis cache against a real ``redis-server`` started here on a free port."""

from __future__ import annotations

import time

import httpx
import pytest
from server_helpers import PRODUCTS, redis_server, running_server, settings

from rankwise.cache import RedisCache, make_cache
from rankwise.catalog import Catalog
from rankwise.models import Embedder, Reranker
from rankwise.server import Components


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


def test_get_set_ttl_and_stats(redis_url):
    c = make_cache(redis_url, ttl=0.2)
    assert isinstance(c, RedisCache) and c.ping()
    assert c.get("k") is None
    c.set("k", b"\x00binary\xff")
    assert c.get("k") == b"\x00binary\xff"
    time.sleep(0.3)
    assert c.get("k") is None  # expired
    assert (c.stats.hits, c.stats.misses, c.stats.errors) == (1, 2, 0)


def test_generation_is_shared_by_replicas(redis_url):
    a = RedisCache(redis_url, namespace="replicas")
    b = RedisCache(redis_url, namespace="replicas")
    a.set("q", b"old")
    assert b.get("q") == b"old"
    b.invalidate_all()  # a product update seen by replica b ...
    assert a.get("q") is None  # ... invalidates replica a too
    assert a.generation == b.generation


@pytest.fixture(scope="module")
def redis_backed_server(redis_url, tiny_embedder_dir, tiny_reranker_dir, tmp_path_factory):
    embedder = Embedder(str(tiny_embedder_dir))
    reranker = Reranker(str(tiny_reranker_dir))
    catalog = Catalog.open(str(tmp_path_factory.mktemp("redis-srv") / "index"), embedder)
    catalog.add(PRODUCTS)
    s = settings(cache_url=redis_url)  # the server builds its cache from the URL
    with running_server(
        s, Components(embedder=embedder, reranker=reranker, catalog=catalog)
    ) as srv:
        assert isinstance(srv.app.state.rankwise.cache, RedisCache)
        yield srv


def test_server_rerank_hit_returns_the_same_body(redis_backed_server):
    body = {"query": "apple", "documents": ["apple iphone", "red apples", "drill"], "top_n": 2}
    with httpx.Client(base_url=redis_backed_server.url) as http:
        first = http.post("/v1/rerank", json=body)
        second = http.post("/v1/rerank", json=body)
    assert first.status_code == 200
    assert (first.headers["x-rankwise-cache"], second.headers["x-rankwise-cache"]) == (
        "miss",
        "hit",
    )
    a, b = first.json(), second.json()
    assert a.pop("id") != b.pop("id")  # each response has its own id, cached or not
    assert a == b


def test_server_product_update_invalidates(redis_backed_server):
    q = {"query": "espresso machine", "top_k": 8, "top_n": 3}
    with httpx.Client(base_url=redis_backed_server.url) as http:
        before = http.post("/v1/search", json=q)
        assert before.headers["x-rankwise-cache"] == "miss"
        assert http.post("/v1/search", json=q).headers["x-rankwise-cache"] == "hit"
        put = http.put(
            "/v1/products",
            json={"products": [{"id": "esp", "title": "espresso machine", "price": 300}]},
        )
        assert put.status_code == 200
        after = http.post("/v1/search", json=q)
    assert after.headers["x-rankwise-cache"] == "miss"
    assert "esp" in [r["id"] for r in after.json()["results"]]
    assert "esp" not in [r["id"] for r in before.json()["results"]]


def test_server_keeps_serving_when_redis_goes_away(tiny_reranker_dir):
    reranker = Reranker(str(tiny_reranker_dir))
    with redis_server() as url:
        s = settings(cache_url=url)
        with running_server(s, Components(reranker=reranker)) as srv:
            body = {"query": "q", "documents": ["a", "b"]}
            assert httpx.post(f"{srv.url}/v1/rerank", json=body).status_code == 200
            cache = srv.app.state.rankwise.cache
            cache._redis.shutdown(nosave=True)  # the real server stops
            time.sleep(0.1)
            r = httpx.post(f"{srv.url}/v1/rerank", json=body)
            assert r.status_code == 200 and r.headers["x-rankwise-cache"] == "miss"
            assert cache.stats.errors >= 1
