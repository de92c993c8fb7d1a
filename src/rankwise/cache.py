"""Hot-query cache for rerank and search responses.

Two backends behind one tiny interface (``get`` / ``set`` / ``invalidate_all``):

- :class:`MemoryCache`: in-process LRU with a TTL (the default; per server process);
- :class:`RedisCache`: shared by every replica, chosen with ``RANKWISE_CACHE_URL=redis://...``.

Values are opaque ``bytes`` (the serialised response) so a hit returns byte-for-byte the
body that was cached. Keys come from :func:`cache_key`, which hashes everything that
decides a result: model version, query, candidate ids or texts, and parameters.

Invalidation uses a *generation* counter instead of deleting keys: every stored key is
prefixed with the current generation, and :meth:`Cache.invalidate_all` (called when a
product changes) bumps it, so older entries can never be read again and simply age out
(TTL for Redis, LRU eviction in memory). With Redis the counter lives in Redis, so a product
update seen by one replica invalidates all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable

from rankwise.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "Cache",
    "CacheStats",
    "MemoryCache",
    "RedisCache",
    "cache_key",
    "make_cache",
]


def cache_key(kind: str, model_version: str, query: str, candidates: Any, params: Any) -> str:
    """A stable key: ``kind:sha256(json([model_version, query, candidates, params]))``.

    Args:
        kind: what is cached ("rerank", "search", ...): keeps namespaces apart.
        model_version: ``Reranker.version`` / ``Embedder.version`` (or both, joined), so a
            new model never serves old scores.
        query: the query text.
        candidates: candidate ids or texts, in request order (JSON-serialisable).
        params: every parameter that changes the result (top_n, threshold, mode, ...),
            JSON-serialisable; dicts are key-sorted so argument order does not matter.
    """
    payload = json.dumps(
        [model_version, query, candidates, params],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return f"{kind}:{hashlib.sha256(payload.encode('utf-8')).hexdigest()}"


class CacheStats:
    """Thread-safe hit/miss counters; read by the server's Prometheus collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def record(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1


@runtime_checkable
class Cache(Protocol):
    """What ``search.py`` and the server rely on."""

    stats: CacheStats
    default_ttl: float | None

    def get(self, key: str) -> bytes | None:
        """The cached value, or None on a miss (or an expired entry)."""

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (None: the cache's default TTL; 0: no expiry)."""

    def invalidate_all(self) -> None:
        """Make every stored entry unreachable (bump the generation)."""

    @property
    def generation(self) -> int:
        """Current generation; changes on every :meth:`invalidate_all`."""

    def describe(self) -> str:
        """Backend and location, for logs (no credentials)."""

    def close(self) -> None: ...


class MemoryCache:
    """In-process LRU with per-entry TTL. Thread-safe (one lock; operations are O(1)).

    Args:
        max_entries: LRU capacity (default 10,000); 0 disables caching.
        default_ttl: seconds an entry lives when ``set`` gets no ttl (default 300; 0 or
            None: no expiry).
    """

    def __init__(self, max_entries: int = 10_000, default_ttl: float | None = 300.0):
        if max_entries < 0:
            raise ConfigError(f"cache size must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._generation = 0
        # key -> (expires_at monotonic or None, value)
        self._data: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()

    @property
    def generation(self) -> int:
        return self._generation

    def _full_key(self, key: str) -> str:
        return f"{self._generation}:{key}"

    def get(self, key: str) -> bytes | None:
        with self._lock:
            full = self._full_key(key)
            item = self._data.get(full)
            if item is not None and item[0] is not None and item[0] <= time.monotonic():
                del self._data[full]
                item = None
            if item is not None:
                self._data.move_to_end(full)
        self.stats.record(item is not None)
        return None if item is None else item[1]

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if self.max_entries == 0:
            return
        ttl = self.default_ttl if ttl is None else ttl
        expires = time.monotonic() + ttl if ttl else None
        with self._lock:
            full = self._full_key(key)
            self._data[full] = (expires, bytes(value))
            self._data.move_to_end(full)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def invalidate_all(self) -> None:
        with self._lock:
            self._generation += 1
            # Old-generation entries can never be read again: free them now.
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        # An empty cache is still a cache: ``if searcher.cache:`` must not skip it.
        return True

    def describe(self) -> str:
        return f"memory (LRU {self.max_entries} entries, ttl {self.default_ttl}s)"

    def close(self) -> None:
        with self._lock:
            self._data.clear()


class RedisCache:
    """Redis-backed cache shared across replicas.

    Keys are ``{namespace}:{generation}:{key}`` with the generation counter stored in Redis
    at ``{namespace}:generation``. A Redis outage never fails a request: errors are logged
    (once per outage), counted in ``stats.errors`` and treated as misses / no-ops.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://`` for TLS).
        default_ttl: seconds an entry lives when ``set`` gets no ttl (default 300; 0 or
            None: no expiry).
        namespace: key prefix, so several rankwise deployments can share one Redis.
        timeout: socket timeout in seconds (default 0.5): a slow Redis must not stall search.
    """

    def __init__(
        self,
        url: str,
        default_ttl: float | None = 300.0,
        namespace: str = "rankwise",
        timeout: float = 0.5,
    ):
        import redis

        try:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except ValueError as e:
            raise ConfigError(f"invalid cache URL {_redact(url)!r}: {e}") from None
        self.url = url
        self.default_ttl = default_ttl
        self.namespace = namespace
        self.stats = CacheStats()
        self._gen_key = f"{namespace}:generation"
        self._failing = False

    def _ok(self) -> None:
        if self._failing:
            log.warning("cache: Redis at %s is reachable again", _redact(self.url))
            self._failing = False

    def _failed(self, err: Exception) -> None:
        self.stats.record_error()
        if not self._failing:
            log.warning(
                "cache: Redis at %s failed (%s); serving without cache", _redact(self.url), err
            )
            self._failing = True

    def ping(self) -> bool:
        """True when Redis answers (used by ``/ready`` details and tests)."""
        try:
            return bool(self._redis.ping())
        except Exception as e:  # noqa: BLE001 - any client error means "not reachable"
            self._failed(e)
            return False

    @property
    def generation(self) -> int:
        try:
            raw = self._redis.get(self._gen_key)
        except Exception as e:  # noqa: BLE001
            self._failed(e)
            return -1
        return int(raw or 0)

    def get(self, key: str) -> bytes | None:
        import redis

        try:
            gen = int(self._redis.get(self._gen_key) or 0)
            value = self._redis.get(f"{self.namespace}:{gen}:{key}")
        except redis.RedisError as e:
            self._failed(e)
            self.stats.record(False)
            return None
        self._ok()
        self.stats.record(value is not None)
        return value

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        import redis

        ttl = self.default_ttl if ttl is None else ttl
        try:
            gen = int(self._redis.get(self._gen_key) or 0)
            # px: millisecond TTL keeps fractional seconds; None/0 -> no expiry.
            self._redis.set(
                f"{self.namespace}:{gen}:{key}", value, px=int(ttl * 1000) if ttl else None
            )
        except redis.RedisError as e:
            self._failed(e)
            return
        self._ok()

    def invalidate_all(self) -> None:
        import redis

        try:
            self._redis.incr(self._gen_key)
        except redis.RedisError as e:
            # Cannot invalidate: say so loudly; stale results would be served until TTL.
            log.error("cache: could not invalidate Redis cache at %s: %s", _redact(self.url), e)
            self.stats.record_error()

    def describe(self) -> str:
        return f"redis {_redact(self.url)} (ttl {self.default_ttl}s)"

    def close(self) -> None:
        self._redis.close()


def _redact(url: str) -> str:
    """Hide a password in ``redis://user:password@host`` for logs and messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def make_cache(
    url: str | None, *, ttl: float | None = 300.0, max_entries: int = 10_000
) -> Cache | None:
    """Build the cache a URL names.

    Args:
        url: None or ``"memory"`` → :class:`MemoryCache`; ``redis://`` / ``rediss://`` /
            ``unix://`` → :class:`RedisCache`; ``"off"`` / ``"none"`` → no cache (None).
        ttl: default entry lifetime in seconds (default 300).
        max_entries: capacity of the in-process LRU (default 10,000).

    Raises:
        ConfigError: an unknown scheme.
    """
    if url is None or url.strip().lower() in ("", "memory", "memory://"):
        return MemoryCache(max_entries=max_entries, default_ttl=ttl)
    if url.strip().lower() in ("off", "none", "disabled"):
        return None
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache(url, default_ttl=ttl)
    raise ConfigError(
        f"unsupported cache URL {_redact(url)!r}: use 'memory', 'off' or redis://host:port/db"
    )
