"""Store backends the store tests are parametrised over, plus vector helpers.

Each backend is a fixture ``<name>_factory`` returning a :class:`StoreFactory`: calling it
opens the same store (so tests can close and reopen), ``ann=True`` asks for the ANN path
on small data, and ``subprocess_spec`` lets a child process open it too (SIGKILL test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rankwise.store import Store, open_store

BACKENDS = ["lance"]


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

    def __init__(self, uri: str, options: dict[str, Any], ann_options: dict[str, Any]):
        self.uri, self.options, self.ann_options = uri, options, ann_options
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


@pytest.fixture
def lance_factory(tmp_path) -> Callable[..., Store]:
    f = StoreFactory(
        str(tmp_path / "index"),
        {},
        {"ann_threshold": 10_000, "exact_filter_below": 1_000},
    )
    yield f
    f.close_all()
