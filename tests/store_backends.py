"""Store backends the store tests are parametrised over, plus vector helpers.

Each backend is a fixture ``<name>_factory`` returning a :class:`StoreFactory`: calling it
opens the same store (so tests can close and reopen), ``ann=True`` asks for the ANN path
on small data, and ``subprocess_spec`` lets a child process open it too (SIGKILL test).
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rankwise.store import Store, open_store

BACKENDS = ["lance", "milvus-lite", "milvus-server"]


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 random unit vectors."""
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, dim: int, seed: int = 0, centers: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) unit vectors around ``centers`` cluster centres, and their cluster labels."""
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(12345).normal(size=(centers, dim))
    labels = rng.integers(0, centers, n)
    x = (c[labels] + 0.35 * rng.normal(size=(n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


class StoreFactory:
    """Opens one store location with fixed base options."""

    def __init__(
        self,
        uri: str,
        options: dict[str, Any],
        ann_options: dict[str, Any],
        query_budget: int = 40,
    ):
        self.uri, self.options, self.ann_options = uri, options, ann_options
        self.query_budget = query_budget  # recall-test queries (milvus-lite: ~0.1-0.5 s each)
        self.subprocess_spec: dict[str, Any] | None = {"uri": uri, "options": options}
        self._opened: list[Store] = []

    def __call__(self, *, create: bool = True, ann: bool = False) -> Store:
        opts = {**self.options, **(self.ann_options if ann else {})}
        store = open_store(self.uri, create=create, **opts)
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        for s in self._opened:
            s.close()


def open_for_subprocess(spec: dict[str, Any]) -> Store:
    return open_store(spec["uri"], **spec["options"])


def new_factory(backend: str, base: Path, request: pytest.FixtureRequest) -> StoreFactory:
    """A fresh, empty store location for ``backend`` under ``base``."""
    if backend == "lance":
        return StoreFactory(
            str(base / "index"), {}, {"ann_threshold": 10_000, "exact_filter_below": 1_000}
        )
    if backend == "milvus-lite":
        return StoreFactory(str(base / "catalog.db"), {}, {}, query_budget=12)
    if backend == "milvus-server":
        uri = request.getfixturevalue("milvus_server")
        return StoreFactory(uri, {"collection": f"t_{uuid.uuid4().hex[:12]}"}, {})
    raise ValueError(backend)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> str:
    """A real Milvus 2.3 standalone (PyPI ``milvus``) on free ports, data in a temp dir;
    stopped after the session. Yields its URI. Start-up takes ~15-25 s on 2 cores."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    with socket.socket() as s:  # a free port to start the search from
        s.bind(("127.0.0.1", 0))
        server.listen_port = s.getsockname()[1]
    t = time.perf_counter()
    server.start()
    print(f"milvus server up on port {server.listen_port} in {time.perf_counter() - t:.1f}s")
    yield f"http://127.0.0.1:{server.listen_port}"
    proc = server.server_proc  # MilvusServer.stop waits 1 s, then kill -9 races
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        server.server_proc = None
    server.stop()
