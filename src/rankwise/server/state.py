"""What one running server holds: settings, models, catalog, searcher, cache, batchers.

Models load in a background thread after the server starts listening, so ``/health``
answers at once and ``/ready`` turns 200 only once every model is loaded and a probe
inference through the batchers succeeded (the truth an orchestrator needs).

The searcher and catalog are given *batched* views of the models
(:class:`BatchedReranker`, :class:`BatchedEmbedder`), so search traffic and direct
``/v1/rerank`` / ``/v1/embeddings`` traffic share one queue per model.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rankwise.cache import Cache, make_cache
from rankwise.config import Settings
from rankwise.errors import (
    ModelLoadError,
    NotReady,
    Overloaded,
    RankwiseError,
    UnsupportedFeature,
)
from rankwise.server.batcher import FIRST_BATCH_TOKENS, Batcher
from rankwise.server.metrics import Metrics
from rankwise.stages import configure_stages

if TYPE_CHECKING:
    from rankwise.catalog import Catalog
    from rankwise.models import Embedder, Reranker
    from rankwise.search import Searcher

log = logging.getLogger(__name__)

InputType = Literal["query", "document"]


def enabled(name: str | None) -> str | None:
    """A model or index named in settings, or None when switched off ("", "none", "off").

    ``rankwise serve --embedder none --index none --reranker X`` serves rerank only.
    """
    from rankwise.config import model_or_none

    return model_or_none(name)


#: tokens per probe text for a model that states no max_length (a remote one)
PROBE_LENGTH = 128


@dataclass
class Components:
    """Ready-made parts for :func:`~rankwise.server.create_app` (tests, embedding apps).

    When components are given, the server serves exactly those (nothing is loaded from
    the settings' model names; a ``searcher`` is built over a given ``catalog``). Without
    components, everything comes from the settings. The cache always comes from
    ``cache`` or else the settings' ``cache_url``.
    """

    embedder: Embedder | None = None
    reranker: Reranker | None = None
    catalog: Catalog | None = None
    searcher: Searcher | None = None
    cache: Cache | None = None


# ----------------------------------------------------------------------------- batched views
class BatchedReranker:
    """A Reranker whose scoring goes through the server's cross-request batcher.

    Everything but ``score`` / ``score_pairs`` is the wrapped model's own attribute.
    """

    def __init__(self, model: Reranker, batcher: Batcher):
        self._model = model
        self._batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def pair_tokens(self, query: str, documents: Sequence[str]) -> list[int]:
        """Tokens of each (query, document) pair before truncation (query + document counts)."""
        counts = self._model.count_tokens([query, *documents])
        return [counts[0] + c for c in counts[1:]]

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        docs = list(documents)
        tokens = self.pair_tokens(query, docs)
        return self._batcher.run_sync([(query, d) for d in docs], self.billed(tokens))

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        pairs = list(pairs)
        counts = self._model.count_tokens([t for p in pairs for t in p])
        tokens = [counts[2 * i] + counts[2 * i + 1] for i in range(len(pairs))]
        return self._batcher.run_sync(pairs, self.billed(tokens))

    def billed(self, tokens: Sequence[int]) -> list[int]:
        """Tokens the model actually runs per pair (each capped at max_length)."""
        return [min(int(t), self._model.max_length) for t in tokens]


class BatchedEmbedder:
    """An Embedder whose encoding goes through the server's cross-request batcher."""

    def __init__(self, model: Embedder, batcher: Batcher):
        self._model = model
        self._batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode(
        self, texts: Sequence[str], input_type: InputType = "document", show_progress: bool = False
    ) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self._model.dim), dtype=np.float32)
        counts = self._model.count_tokens(texts)
        tokens = [min(int(c), self._model.max_length) for c in counts]
        return self._batcher.run_sync([(t, input_type) for t in texts], tokens)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, "query")

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.encode(texts, "document")


def _embed_fn(model: Embedder):
    """Model call for the embed batcher: items are (text, input_type); mixed types allowed."""

    def run(items: list[tuple[str, InputType]]) -> np.ndarray:
        out = np.zeros((len(items), model.dim), dtype=np.float32)
        for kind in ("query", "document"):
            idx = [i for i, (_, t) in enumerate(items) if t == kind]
            if idx:
                out[idx] = model.encode([items[i][0] for i in idx], input_type=kind)
        return out

    return run


# ----------------------------------------------------------------------------- state
def _probe_items(tag: str, n: int, length: int, embed: bool) -> list[tuple[str, str]]:
    """``n`` distinct probe rows of about ``length`` tokens (cut at the model's length):
    (text, "document") for an embedder, (query, text) for a reranker."""
    texts = [f"{tag} {i} " + " ".join(["rankwise readiness probe"] * length) for i in range(n)]
    return [(t, "document") for t in texts] if embed else [("readiness probe", t) for t in texts]


class ServerState:
    """Everything the routes use; one per app (``app.state.rankwise``)."""

    def __init__(self, settings: Settings, components: Components | None = None):
        self.settings = settings
        self.from_settings = components is None
        self.given = components or Components()
        self.metrics = Metrics()
        self.cache: Cache | None = None
        self.embedder: Embedder | None = None
        self.reranker: Reranker | None = None
        self.catalog: Catalog | None = None
        self.searcher: Searcher | None = None
        self.embed_batcher: Batcher | None = None
        self.rerank_batcher: Batcher | None = None
        self.ready = False
        #: marks the server's own warm-up requests (``run.warm_up_http``); not guessable
        self.warm_up_token = secrets.token_hex(16)
        self.error: str | None = None
        self.started_at = time.time()
        self._loader: threading.Thread | None = None
        self._loaded = threading.Event()
        self._search_lock = threading.Lock()
        self._searches = 0
        #: set while the server's own warm-up requests run (``run.warm_up_http``): /ready
        #: says 503 until they are done, so a load balancer's first burst meets a priced
        #: admission (a burst sent on the first 200 met one cold request's cost, 0.55 s, as
        #: every request's: Retry-After 148 s for a 14.9 s drain)
        self.warming = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Load (in a thread unless ``background=False``), start batchers, run the probe."""
        if background:
            self._loader = threading.Thread(target=self._load, name="rankwise-loader", daemon=True)
            self._loader.start()
        else:
            self._load()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loading finished (ok or not); True when ready."""
        self._loaded.wait(timeout)
        return self.ready

    def stop(self) -> None:
        for b in (self.embed_batcher, self.rerank_batcher):
            if b is not None:
                b.stop()
        if self.cache is not None:
            self.cache.close()

    def _load(self) -> None:
        try:
            self._build()
            self._probe()
            self.ready = True
            log.info("rankwise server ready (%s)", self.describe())
        except RankwiseError as e:
            self.error = str(e)
            log.error("rankwise server failed to start: %s", e)
        except Exception as e:  # noqa: BLE001 - reported by /ready, the server keeps running
            self.error = f"{type(e).__name__}: {e}"
            log.exception("rankwise server failed to start")
        finally:
            self._loaded.set()

    def _build(self) -> None:
        s, g = self.settings, self.given
        self.cache = (
            g.cache
            if g.cache is not None
            else make_cache(s.cache_url, ttl=s.cache_ttl, max_entries=s.cache_size)
        )
        self.metrics.watch_cache(self.cache)
        embedder = g.embedder or (g.catalog.embedder if g.catalog is not None else None)
        if embedder is None and g.searcher is not None:
            embedder = g.searcher.catalog.embedder
        if embedder is None and self.from_settings and enabled(s.embedder):
            embedder = self._load_embedder()
        reranker = g.reranker or (g.searcher.reranker if g.searcher is not None else None)
        if reranker is None and self.from_settings and enabled(s.reranker):
            reranker = self._load_reranker()
        self.embedder, self.reranker = embedder, reranker
        if embedder is not None:
            self.embed_batcher = self._batcher("embed", _embed_fn(embedder))
        if reranker is not None:
            self.rerank_batcher = self._batcher("rerank", reranker.score_pairs)
        self._build_search()

    def _batcher(self, name: str, fn) -> Batcher:
        s = self.settings
        b = Batcher(
            name,
            fn,
            max_tokens=s.batch_tokens,
            max_batch_ms=s.batch_ms,
            max_wait_ms=s.batch_wait_ms,
            max_queue=s.max_queue,
            max_queue_tokens=s.max_queue_tokens,
            max_request_tokens=s.max_request_tokens,
            enabled=s.batching,
            on_batch=self.metrics.observe_batch,
            on_wait=self.metrics.stage.labels("queue_wait").observe,
            on_reject=self.metrics.rejected.labels(name).inc,
        ).start()
        self.metrics.watch_queue(
            name, lambda: b.depth, lambda: b.request_cost, lambda: b.drain_rate
        )
        return b

    def _load_embedder(self) -> Embedder:
        from rankwise.models import Embedder

        return Embedder.from_settings(self.settings)

    def _load_reranker(self) -> Reranker:
        from rankwise.models import Reranker

        return Reranker.from_settings(self.settings)

    def _build_search(self) -> None:
        """Searcher and catalog over the batched model views (shallow copies of given ones)."""
        from rankwise.catalog import Catalog
        from rankwise.search import Searcher

        s, g = self.settings, self.given
        emb = BatchedEmbedder(self.embedder, self.embed_batcher) if self.embed_batcher else None
        rr = BatchedReranker(self.reranker, self.rerank_batcher) if self.rerank_batcher else None
        if g.searcher is not None:
            searcher = copy.copy(g.searcher)
            searcher.catalog = copy.copy(g.searcher.catalog)
        else:
            catalog = g.catalog
            if catalog is None and self.from_settings and enabled(s.index) and emb is not None:
                from rankwise.store import settings_store_options

                catalog = Catalog.open(
                    s.index, self.embedder, create=True, **settings_store_options(s)
                )
            if catalog is None:
                return
            searcher = Searcher.from_settings(s, copy.copy(catalog))
        if emb is not None:
            searcher.catalog.embedder = emb
        searcher.reranker = rr
        configure_stages(searcher, s)  # chunked rerank, template, blend (rankwise.stages)
        if searcher.cache is None:
            searcher.cache = self.cache
        self.searcher, self.catalog = searcher, searcher.catalog

    def _probe(self) -> None:
        """Real inference per model (what ``/ready`` vouches for): a warm-up call, then a
        full batch of texts at the model's length through its batcher.

        A full batch, not one short text: the first version's one-pair probe (8 tokens in
        65 ms on a cold model) was the only batch admission had measured when a burst came
        first, so it set the drain rate (Retry-After 17 s for a queue that drained in 6 s)
        and the batch budget (256 tokens). The warm-up call runs outside the batcher, so the
        first call's kernel compilation is not measured as the model's speed. Every row is
        a different text, and the measured batch shares none with the warm-up call: the
        reranker scores identical pairs once and keeps scores in its cache (bypassed here), and
        a probe of one repeated pair measured one pair's work as a full batch's (a drain rate
        of 228,000 tokens/s for a model that drains ~4,000)."""
        for batcher, model in (
            (self.embed_batcher, self.embedder),
            (self.rerank_batcher, self.reranker),
        ):
            if batcher is None or model is None:
                continue
            length = getattr(model, "max_length", None) or PROBE_LENGTH
            n = max(1, FIRST_BATCH_TOKENS // length)
            embed = batcher is self.embed_batcher
            shape = (n, model.dim) if embed else (n,)
            uncached = getattr(model, "score_cache_disabled", nullcontext)
            with uncached():  # no traffic yet: nothing else sees the cache swapped out
                batcher.fn(_probe_items("warm-up", n, length, embed))
                items = _probe_items("probe", n, length, embed)
                out = batcher.run_sync(items, n * length, typical=False)
            if out.shape != shape or not np.isfinite(out).all():
                raise ModelLoadError(
                    f"{batcher.name} probe returned {out.shape} / non-finite values"
                )

    # -- access from routes ------------------------------------------------------------------
    def check_serving(self) -> None:
        """What ``/ready`` vouches for: :meth:`check_ready`, and the warm-up done."""
        self.check_ready()
        if self.warming.is_set():
            raise NotReady("warming up (pricing requests for admission); retry shortly")

    def check_ready(self) -> None:
        if self.error is not None:
            raise ModelLoadError(f"the server failed to load its models: {self.error}")
        if not self.ready:
            raise NotReady("models are still loading; retry shortly (see GET /ready)")

    def require_reranker(self) -> tuple[Reranker, Batcher]:
        self.check_ready()
        if self.reranker is None or self.rerank_batcher is None:
            raise UnsupportedFeature("this server runs no reranker (start it with --reranker)")
        return self.reranker, self.rerank_batcher

    def require_embedder(self) -> tuple[Embedder, Batcher]:
        self.check_ready()
        if self.embedder is None or self.embed_batcher is None:
            raise UnsupportedFeature("this server runs no embedder (start it with --embedder)")
        return self.embedder, self.embed_batcher

    @contextmanager
    def admit_search(self, rerank_candidates: int) -> Iterator[None]:
        """Admission for one search, on the event loop before it takes a worker thread:
        429 at once when ``max_queue`` searches are already in flight or a model queue it
        needs is full (a search's own model calls then pass the batchers' admission too).
        Without this, searches waited unbounded in the thread pool and never got a 429."""
        busy = [b for b in (self.embed_batcher, self.rerank_batcher) if b is not None]
        with self._search_lock:
            if self._searches >= self.settings.max_queue:
                retry = max([b.retry_after() for b in busy] or [1.0])
                if self.rerank_batcher is not None and self.rerank_batcher.on_reject:
                    self.rerank_batcher.on_reject()
                raise Overloaded(
                    f"{self._searches} searches are in flight (max_queue); "
                    f"retry in {math.ceil(retry)}s",
                    retry_after=math.ceil(retry),
                )
            for b in busy:
                b.check_admission(rerank_candidates if b is self.rerank_batcher else 1)
            self._searches += 1
        try:
            yield
        finally:
            with self._search_lock:
                self._searches -= 1

    def require_searcher(self) -> Searcher:
        self.check_ready()
        if self.searcher is None:
            raise UnsupportedFeature("this server has no index (start it with --index)")
        return self.searcher

    def describe(self, public: bool = False) -> dict[str, Any]:
        """Model ids/versions, index, cache and limits: for ``/ready`` and logs.

        ``public=True`` (unauthenticated endpoints): no filesystem paths and no URLs, only
        model names (the last path component of a local model) and the index backend.
        """
        s = self.settings
        name = public_name if public else (lambda x: x)
        index = None
        if self.catalog is not None:
            store = self.catalog.store
            index = type(store).__name__ if public else store.uri
        cache = None if self.cache is None else self.cache.describe()
        if public and cache:
            cache = cache.split()[0]  # the backend only: no host names or URLs
        return {
            "embedder": None
            if self.embedder is None
            else {
                "model": name(self.embedder.model_id),
                "version": self.embedder.version,
                "dim": self.embedder.dim,
            },
            "reranker": None
            if self.reranker is None
            else {"model": name(self.reranker.model_id), "version": self.reranker.version},
            "index": index,
            "cache": cache,
            "batching": s.batching,
        }


_ABS_PATH = re.compile(r"(?<![\w.:-])(?:[A-Za-z]:)?(?:[\\/][^\\/\s'\"]+)+[\\/]?")


def public_name(text: str) -> str:
    """``text`` with absolute filesystem paths cut to their last component
    (``/srv/models/my-reranker`` → ``my-reranker``); hub ids (``BAAI/bge-m3``) are kept."""

    def last(m: re.Match[str]) -> str:
        return m.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]

    return _ABS_PATH.sub(last, text) if text else text
