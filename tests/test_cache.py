"""In-process cache: keys, LRU, TTL, generation invalidation, URL parsing."""

from __future__ import annotations

import time

import pytest

from rankwise.cache import MemoryCache, RedisCache, cache_key, make_cache
from rankwise.errors import ConfigError


def test_cache_key_is_stable_and_sensitive_to_every_part():
    base = cache_key("rerank", "v1", "shoes", ["a", "b"], {"top_n": 3, "raw": False})
    assert base == cache_key("rerank", "v1", "shoes", ["a", "b"], {"raw": False, "top_n": 3})
    assert base.startswith("rerank:")
    variants = [
        cache_key("search", "v1", "shoes", ["a", "b"], {"top_n": 3, "raw": False}),
        cache_key("rerank", "v2", "shoes", ["a", "b"], {"top_n": 3, "raw": False}),
        cache_key("rerank", "v1", "shoe", ["a", "b"], {"top_n": 3, "raw": False}),
        cache_key("rerank", "v1", "shoes", ["b", "a"], {"top_n": 3, "raw": False}),
        cache_key("rerank", "v1", "shoes", ["a", "b"], {"top_n": 4, "raw": False}),
    ]
    assert len({base, *variants}) == 6


def test_memory_cache_lru_eviction_and_stats():
    c = MemoryCache(max_entries=2, default_ttl=None)
    c.set("a", b"1")
    c.set("b", b"2")
    assert c.get("a") == b"1"  # a is now most recent
    c.set("c", b"3")  # evicts b
    assert c.get("b") is None
    assert c.get("a") == b"1" and c.get("c") == b"3"
    assert (c.stats.hits, c.stats.misses) == (3, 1)


def test_memory_cache_ttl_expires():
    c = MemoryCache(default_ttl=0.05)
    c.set("k", b"v")
    c.set("forever", b"v", ttl=0)
    assert c.get("k") == b"v"
    time.sleep(0.08)
    assert c.get("k") is None
    assert c.get("forever") == b"v"


def test_an_empty_cache_is_truthy():
    assert MemoryCache() and len(MemoryCache()) == 0


def test_invalidate_all_bumps_generation():
    c = MemoryCache()
    c.set("k", b"v")
    g = c.generation
    c.invalidate_all()
    assert c.generation == g + 1
    assert c.get("k") is None
    c.set("k", b"w")
    assert c.get("k") == b"w"


def test_make_cache_urls():
    assert isinstance(make_cache(None), MemoryCache)
    assert isinstance(make_cache("memory"), MemoryCache)
    assert make_cache("off") is None
    assert isinstance(make_cache("redis://127.0.0.1:1/0"), RedisCache)  # lazy: no connection yet
    with pytest.raises(ConfigError, match="unsupported cache URL"):
        make_cache("memcached://x")


def test_unreachable_redis_degrades_to_misses_with_password_hidden(caplog):
    c = RedisCache("redis://:s3cret@127.0.0.1:1/0", timeout=0.2)
    c.set("k", b"v")  # no exception
    assert c.get("k") is None
    assert c.stats.errors >= 2
    assert "s3cret" not in caplog.text and "***" in caplog.text
    assert "s3cret" not in c.describe()
