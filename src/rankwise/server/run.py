"""Running the app: in the foreground (``rankwise serve``) or in a background thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from rankwise.config import Settings
from rankwise.errors import ConfigError
from rankwise.server.heap import prepare_heap
from rankwise.server.timeouts import protocol_with_header_timeout


def serve(settings: Settings, *, log_level: str = "info") -> None:
    """Serve until interrupted, on ``settings.host:settings.port``.

    One process holds one copy of each model; scale out with replicas behind a load
    balancer (share the cache with ``RANKWISE_CACHE_URL=redis://...``), not with uvicorn
    workers, which would each load the models again.
    """
    from rankwise.server.app import create_app

    prepare_heap()  # arena cap, pinned mmap threshold (heap.py)
    app = create_app(settings)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            http=protocol_with_header_timeout(settings.header_timeout),
        )
    except OSError as e:  # port in use, permission denied
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {e}") from None


class BackgroundServer:
    """A real uvicorn server in a daemon thread, on a free port (tests, benchmarks, notebooks).

    >>> with BackgroundServer(create_app(settings, components)) as srv:
    ...     httpx.post(f"{srv.url}/v1/rerank", json=...)
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ):
        self.app = app
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
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background rankwise server did not start")
            time.sleep(0.01)
        return self

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
