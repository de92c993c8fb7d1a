"""Prometheus metrics for one app instance (own registry, so several apps can coexist).

Exposed at ``GET /metrics``:

- ``rankwise_requests_total{endpoint,method,status}``: requests served;
- ``rankwise_request_seconds{endpoint}``: end-to-end latency;
- ``rankwise_stage_seconds{stage}``: per-stage latency (``queue_wait``, ``embed_batch``,
  ``rerank_batch``, and the search stages ``embed``, ``recall``, ``rerank``);
- ``rankwise_batch_requests{model}`` / ``rankwise_batch_items{model}`` /
  ``rankwise_batch_tokens{model}``: requests, items (texts or pairs) and tokens per model
  call, to see that cross-request batches form;
- ``rankwise_queue_depth{model}``: requests waiting for a model;
- ``rankwise_cache_hits_total`` / ``rankwise_cache_misses_total`` /
  ``rankwise_cache_errors_total``: read from the cache's own counters, so hits inside
  ``Searcher`` are counted too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from rankwise.cache import Cache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
ITEM_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072)


class _CacheCollector(Collector):
    def __init__(self, cache: Cache):
        self.cache = cache

    def collect(self) -> Iterable[CounterMetricFamily]:
        s = self.cache.stats
        for name, value, doc in (
            ("rankwise_cache_hits", s.hits, "Cache lookups that found an entry."),
            ("rankwise_cache_misses", s.misses, "Cache lookups that found nothing."),
            ("rankwise_cache_errors", s.errors, "Cache backend errors (served without cache)."),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class Metrics:
    """All metric objects of one app, registered in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rankwise_requests", "HTTP requests.", ["endpoint", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "rankwise_request_seconds",
            "End-to-end request latency.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "rankwise_stage_seconds",
            "Latency per stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "rankwise_batch_requests",
            "Requests grouped into one model call.",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_items = Histogram(
            "rankwise_batch_items",
            "Texts or pairs in one model call.",
            ["model"],
            buckets=ITEM_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "rankwise_batch_tokens",
            "Tokens in one model call.",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "rankwise_queue_depth", "Requests waiting for a model.", ["model"], registry=r
        )
        self.request_cost = Gauge(
            "rankwise_request_cost_seconds",
            "Measured seconds a request takes outside the model (median of requests served "
            "alone; NaN before any); part of every 429's Retry-After.",
            ["model"],
            registry=r,
        )
        self.drain_rate = Gauge(
            "rankwise_drain_rate_tokens_per_second",
            "Measured tokens per second of the model worker's busy time (NaN before any "
            "batch); the other part of every 429's Retry-After.",
            ["model"],
            registry=r,
        )
        self.rejected = Counter(
            "rankwise_rejected",
            "Requests rejected because a queue was full.",
            ["model"],
            registry=r,
        )

    def watch_cache(self, cache: Cache | None) -> None:
        if cache is not None:
            self.registry.register(_CacheCollector(cache))

    def watch_queue(
        self,
        model: str,
        depth: Callable[[], int],
        cost: Callable[[], float | None],
        rate: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.queue_depth.labels(model).set_function(depth)
        self.request_cost.labels(model).set_function(
            lambda: float("nan") if (c := cost()) is None else c
        )
        self.drain_rate.labels(model).set_function(
            lambda: float("nan") if (v := rate()) is None else v
        )

    def observe_batch(
        self, model: str, requests: int, items: int, tokens: int, seconds: float
    ) -> None:
        self.batch_requests.labels(model).observe(requests)
        self.batch_items.labels(model).observe(items)
        self.batch_tokens.labels(model).observe(tokens)
        self.stage.labels(f"{model}_batch").observe(seconds)

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            if stage != "total":
                self.stage.labels(stage).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
