"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager

from fastapi import Depends, FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rankwise import __version__
from rankwise.config import Settings, load_settings
from rankwise.errors import Overloaded
from rankwise.server.admission import WARM_UP
from rankwise.server.auth import require_api_key
from rankwise.server.errors import error_body, install_error_handlers
from rankwise.server.heap import HeapTrimmer
from rankwise.server.metrics import Metrics
from rankwise.server.routes import models, ops, search, workbench
from rankwise.server.routes.common import dumps
from rankwise.server.state import Components, ServerState


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", ()) if k == name), None)


@contextmanager
def _warm_up() -> Iterator[None]:
    token = WARM_UP.set(True)
    try:
        yield
    finally:
        WARM_UP.reset(token)


def _content_length(scope: Scope) -> int | None:
    """The declared body size (None when absent or not a number: chunked bodies)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimitMiddleware:
    """413 ``payload_too_large`` (JSON body) for requests over ``max_bytes``.

    Hand-written rather than FastAPI's ``max_body_size`` because Starlette's limiter
    replaces the response with a plain-text 413, breaking the ``{error, error_type}``
    contract. Checks ``Content-Length`` first, then counts streamed (chunked) bytes.

    Before answering it reads and discards the rest of the body (up to ``DRAIN_BYTES``):
    closing a socket with unread request bytes makes the kernel send a TCP reset, and
    the client then sees "connection reset" instead of the 413 (the lingering close
    that nginx does for the same reason).
    """

    DRAIN_BYTES = 64 * 1024 * 1024

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout: float | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"request body is larger than the limit of {self.max_bytes:,} bytes"
        body = dumps(error_body(scope["path"], 413, message, "payload_too_large"))
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            if length <= self.DRAIN_BYTES:
                await _drain(receive, self.DRAIN_BYTES)
            await self._reject(scope, send)
            return
        received = 0
        started = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come: no timeout
                return await receive()
            try:  # a client that stops sending its body must not hold a connection forever
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                raise _SlowBody(self.body_timeout) from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, self.DRAIN_BYTES - received)
                    raise _TooLarge
            return message

        async def track_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, track_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop request body messages until the body ends, the client goes away
    or ``budget`` bytes have been read."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class _TooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException so that FastAPI's body parsing passes it on
    (it turns other exceptions into a 400) and the error handlers answer a JSON 413."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class _SlowBody(HTTPException):
    """408 when no body bytes arrived for ``body_timeout`` seconds; the connection closes."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__(
            408,
            f"the request body stalled: nothing received for {seconds:g}s (body_timeout)",
            headers={"Connection": "close"},
        )


class LoadShedMiddleware:
    """Admission from the request line, before the body is read, parsed or tokenised.

    A model route (rerank, embeddings) takes its place in the batcher's queue here
    (:meth:`Admission.admission`, held until the response is sent; the route's own
    ``admission()`` inside is then a no-op): under a 600-request burst the route-level
    check answered its 429s after a median 21 s, every request's body being parsed and
    validated on the event loop first. A search only gets a look at the queues' fullness
    here (its model calls queue jobs of their own, admitted when they run). A 429 reads
    and drops the body first (a reset connection would hide it, see
    :class:`BodyLimitMiddleware`) and has the route's error shape and Retry-After.
    """

    RERANK = frozenset({"/v1/rerank", "/v2/rerank", "/rerank", "/weaviate/rerank"})

    def __init__(self, app: ASGIApp, state: ServerState):
        self.app = app
        self.state = state

    async def _reject(self, scope: Scope, receive: Receive, send: Send, exc: Overloaded) -> None:
        await _drain(receive, BodyLimitMiddleware.DRAIN_BYTES)
        scope["rankwise.endpoint"] = scope["path"]  # the metrics label
        body = dumps(error_body(scope["path"], 429, str(exc), exc.error_type))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(max(1, round(exc.retry_after))).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path, s = scope["path"], self.state
        model = s.rerank_batcher if path in self.RERANK else None
        model = s.embed_batcher if path == "/v1/embeddings" else model
        if model is not None:
            with ExitStack() as place:
                if _header(scope, b"x-rankwise-warm-up") == s.warm_up_token.encode():
                    place.enter_context(_warm_up())  # the server's own (run.warm_up_http)
                try:
                    place.enter_context(model.admission(_content_length(scope)))
                except Overloaded as exc:
                    await self._reject(scope, receive, send, exc)
                    return
                await self.app(scope, receive, send)
            return
        if path == "/v1/search":
            for b in (s.embed_batcher, s.rerank_batcher):
                if b is not None and b.is_full():
                    await self._reject(scope, receive, send, b.overloaded())
                    return
        await self.app(scope, receive, send)


class MetricsMiddleware:
    """Counts requests and times them per route template (``/v1/rerank``, never raw paths,
    so unknown URLs cannot blow up label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or scope.get("rankwise.endpoint") or "unmatched"
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def create_app(
    settings: Settings | None = None,
    components: Components | None = None,
    *,
    background_load: bool = True,
) -> FastAPI:
    """Build the rankwise HTTP app.

    Args:
        settings: server and model settings (default: :func:`rankwise.config.load_settings`,
            i.e. ``rankwise.toml`` and ``RANKWISE_*`` environment variables).
        components: ready-made models / catalog / searcher / cache to serve instead of
            loading them from the settings (tests, embedding rankwise in another process).
        background_load: load models in a thread after startup (``/ready`` is 503 until
            done); False loads them during startup, before the first request is accepted.

    Endpoints: ``POST /v1/embeddings`` (OpenAI), ``POST /v1/rerank`` and ``/v2/rerank``
    (Cohere / Jina), ``POST /rerank`` (TEI), ``POST /weaviate/rerank`` (Weaviate module),
    ``POST /v1/search``, ``PUT|DELETE /v1/products``, ``GET /health``, ``/ready``,
    ``/metrics``; the workbench page at ``/`` with ``/v1/workbench``, ``/v1/judgments`` and
    ``/v1/compare``; OpenAPI at ``/openapi.json``, docs at ``/docs``.
    """
    settings = settings or load_settings()
    state = ServerState(settings, components)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start(background=background_load)
        trimmer = HeapTrimmer().start()  # native memory back to the kernel (server/heap.py)
        try:
            yield
        finally:
            trimmer.stop()
            state.stop()

    app = FastAPI(
        title="rankwise",
        version=__version__,
        summary="Two-stage product search: embeddings, reranking and search over HTTP.",
        lifespan=lifespan,
    )
    app.state.rankwise = state
    install_error_handlers(app)
    app.include_router(models.router)
    # Weaviate's module sends no API key: its routes have their own switch (weaviate_auth)
    weaviate_deps = [Depends(require_api_key)] if settings.weaviate_auth else []
    app.include_router(models.weaviate, dependencies=weaviate_deps)
    app.include_router(search.router)
    app.include_router(ops.router)
    workbench.install(app)  # the page at /, /v1/judgments, /v1/compare
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_payload_bytes,
        body_timeout=settings.body_timeout,
    )
    app.add_middleware(LoadShedMiddleware, state=state)  # inside metrics: its 429s count
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    _state_model_limits(app, state)
    return app


def _state_model_limits(app: FastAPI, state: ServerState) -> None:
    """The schema states what depends on the served embedder: ``dimensions`` ≤ its size
    (a larger one is a 422). FastAPI caches the schema; it is cached here only once the
    models are loaded, so a schema fetched during a background load is not frozen short."""
    base = app.openapi

    def openapi() -> dict:
        app.openapi_schema = None
        schema = base()
        dim = getattr(state.embedder, "dim", None)
        props = schema.get("components", {}).get("schemas", {}).get("EmbeddingRequest", {})
        for branch in props.get("properties", {}).get("dimensions", {}).get("anyOf", []):
            if dim and branch.get("type") == "integer":
                branch["maximum"] = int(dim)
        app.openapi_schema = schema if state.ready else None
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
