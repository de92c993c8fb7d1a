"""Running the app: in the foreground (``rankwise serve``) or in a background thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from rankwise.config import Settings
from rankwise.errors import ConfigError
from rankwise.server.heap import prepare_heap
from rankwise.server.timeouts import protocol_with_header_timeout

log = logging.getLogger(__name__)


#: tiny requests per model route that a started server sends itself (see :func:`warm_up_http`)
WARM_UP_REQUESTS = 8


def serve(settings: Settings, *, log_level: str = "info") -> None:
    """Serve until interrupted, on ``settings.host:settings.port``.

    One process holds one copy of each model; scale out with replicas behind a load
    balancer (share the cache with ``RANKWISE_CACHE_URL=redis://...``), not with uvicorn
    workers, which would each load the models again.
    """
    from rankwise.server.app import create_app

    prepare_process()
    serve_app(create_app(settings), settings.host, settings.port, log_level=log_level)


def prepare_process() -> None:
    """What a serving process sets before it loads models or starts threads: the native
    heap (arena cap, pinned mmap threshold: heap.py) and no ONNX Runtime spin-waiting, as
    the embedder's and the reranker's sessions share the cores (models/onnx.py:
    session_options). Each is skipped where its environment variable is already set."""
    prepare_heap()
    os.environ.setdefault("RANKWISE_ONNX_SPIN", "0")


def serve_app(app: FastAPI, host: str, port: int, *, log_level: str = "info", **options) -> None:
    """Run ``app`` under uvicorn in the foreground (what ``rankwise serve`` runs; ``options``
    go to ``uvicorn.Config``), and send it :func:`warm_up_http` once it listens."""
    settings: Settings = app.state.rankwise.settings
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_with_header_timeout(settings.header_timeout),
        **options,
    )
    server = uvicorn.Server(config)
    app.state.rankwise.warming.set()  # /ready waits for the warm-up
    threading.Thread(
        target=_warm_up_when_started, args=(server, loopback_url(host, port), app), daemon=True
    ).start()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit:  # uvicorn exits when it cannot bind; say why without a traceback
        if not server.started:
            raise ConfigError(
                f"cannot listen on {host}:{port} (in use, or not an address of this machine)"
            ) from None
        raise


def loopback_url(host: str, port: int) -> str:
    """The URL this machine reaches a server listening on ``host:port`` at."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _warm_up_when_started(server: uvicorn.Server, url: str, app: FastAPI) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    warm_up_http(url, app)


def warm_up_http(url: str, app: FastAPI, n: int = WARM_UP_REQUESTS) -> int:
    """Once the models are ready, send the server at ``url`` ``n`` tiny ``/v1/rerank`` and
    ``/v1/embeddings`` requests of its own, one at a time, over loopback; returns how many
    were answered 200.

    Why: a request costs more than its model time (HTTP, JSON, validation, tokenising,
    the response), and on 2 cores a burst of small reranks drains at that speed. Admission
    measures the cost on requests served alone (``Admission.request_cost``) and adds it to
    every 429's Retry-After, but a cold server's first burst had none measured: Retry-After
    said 1 s for a queue that took 6.9 s to drain (benchmarks/serve_pressure.py, phase b on a
    fresh server). These requests are served alone, through the real socket, the real HTTP
    stack and admission, so the first burst is priced like any later one. Their model calls
    (two pairs each) stay out of the drain rate (``admission.WARM_UP``): a first version's
    put it at a tenth of a full batch's, and a cold burst's Retry-After at 45 s for a 5.8 s
    drain. Each carries its
    own text (no cache answers it) and counts in the metrics like any request. A failure is
    logged, never raised: the server serves with or without them. ``/ready`` answers 503
    until they are done (``ServerState.warming``): a burst sent on its first 200 had met
    the first, cold request's cost (0.55 s) as every request's, and got Retry-After 148 s
    for a 14.9 s drain."""
    state = app.state.rankwise
    try:
        return _warm_up(url, state, n)
    finally:
        state.warming.clear()  # /ready turns 200, with or without a warm-up


def _warm_up(url: str, state, n: int) -> int:
    import secrets

    import httpx

    if not state.wait_ready():
        return 0
    keys = state.settings.api_keys
    headers = {"X-Rankwise-Warm-Up": state.warm_up_token}
    if keys:
        headers["Authorization"] = f"Bearer {keys[0]}"
    paths = []
    if state.rerank_batcher is not None:
        paths.append(("/v1/rerank", lambda t: {"query": t, "documents": [t + " a", t + " b"]}))
    if state.embed_batcher is not None:
        paths.append(("/v1/embeddings", lambda t: {"input": [t]}))
    ok = 0
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60.0, trust_env=False) as client:
            for _ in range(n):
                for path, body in paths:
                    tag = f"rankwise warm-up {secrets.token_hex(4)}"
                    ok += client.post(path, json=body(tag)).status_code == 200
    except httpx.HTTPError as e:
        log.warning("warm-up requests to %s failed: %s", url, e)
    return ok


class BackgroundServer:
    """A real uvicorn server in a daemon thread, on a free port (tests, benchmarks, notebooks).

    >>> with BackgroundServer(create_app(settings, components)) as srv:
    ...     httpx.post(f"{srv.url}/v1/rerank", json=...)
    """

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        warm_up: bool = False,
    ):
        """``warm_up``: send :func:`warm_up_http` once started, as ``rankwise serve`` does (off
        by default: tests count their own requests)."""
        self.app = app
        self.warm_up = warm_up
        self.warmed = threading.Event()
        self.warmed_up = 0  # warm-up requests answered 200
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        header_timeout = app.state.rankwise.settings.header_timeout
        config = uvicorn.Config(
            app,
            log_level=log_level,
            timeout_keep_alive=30,
            backlog=512,
            http=protocol_with_header_timeout(header_timeout),
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        if self.warm_up:
            self.app.state.rankwise.warming.set()  # /ready waits for the warm-up
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background rankwise server did not start")
            time.sleep(0.01)
        if self.warm_up:
            threading.Thread(target=self._warm_up, daemon=True).start()
        return self

    def _warm_up(self) -> None:
        try:
            self.warmed_up = warm_up_http(self.url, self.app)
        finally:
            self.warmed.set()

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Block until the app's models are loaded (True) or failed to load (False)."""
        return self.app.state.rankwise.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
