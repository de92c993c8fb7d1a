"""Stores: the embedded LanceDB default and Milvus (Lite file or server), one protocol.

>>> store = open_store("./index")                    # LanceDB directory (default)
>>> store = open_store("./catalog.db")               # Milvus Lite file
>>> store = open_store("http://localhost:19530")     # Milvus server (token: option or
...                                                  # RANKWISE_MILVUS_TOKEN)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from rankwise.store.base import RESERVED_FIELDS, Hit, Store
from rankwise.store.filters import Condition, Filter, build_filter

__all__ = [
    "RESERVED_FIELDS",
    "Condition",
    "Filter",
    "Backend",
    "Hit",
    "Store",
    "backend",
    "backend_for",
    "register_backend",
    "store_options",
    "build_filter",
    "migrate",
    "open_store",
]


@dataclass(frozen=True)
class Backend:
    """One store backend in the registry, chosen by the URI it is opened with.

    Attributes:
        name: ``info()["backend"]`` and what :func:`backend_for` returns.
        target: ``"module:Class"``, imported only when a store of this kind is opened.
        schemes: URI prefixes it answers to (``"http://"``); matched case-insensitively.
        suffixes: path endings it answers to (``".db"``).
        options: backend options a generic caller may pass (the CLI's ``--collection``).
    """

    name: str
    target: str
    schemes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()

    def matches(self, uri: str) -> bool:
        u = uri.lower()
        return u.startswith(self.schemes) or (bool(self.suffixes) and u.endswith(self.suffixes))

    def load(self) -> type:
        module, _, cls = self.target.partition(":")
        return getattr(import_module(module), cls)


#: Backends by URI, first match wins; :data:`DEFAULT_BACKEND` takes anything else (a
#: directory). A new backend is one :func:`register_backend` call (its module implements
#: :class:`Store`) plus a row in ``tests/store_backends.py``: the store suite runs on it.
BACKENDS: list[Backend] = []
DEFAULT_BACKEND = Backend("lance", "rankwise.store.lance:LanceStore")


def register_backend(backend: Backend) -> Backend:
    BACKENDS.append(backend)
    return backend


register_backend(
    Backend(
        "milvus",
        "rankwise.store.milvus:MilvusStore",
        schemes=("http://", "https://", "milvus://", "tcp://", "grpc://"),
        options=frozenset({"collection", "token", "side_dir"}),
    )
)
register_backend(
    Backend(
        "milvus-lite",
        "rankwise.store.milvus:MilvusStore",
        suffixes=(".db",),
        options=frozenset({"collection"}),
    )
)


def backend(uri: str) -> Backend:
    """The registry entry a URI names (the default for a plain directory)."""
    return next((b for b in BACKENDS if b.matches(str(uri))), DEFAULT_BACKEND)


def backend_for(uri: str) -> str:
    """``"milvus"`` for a server URI, ``"milvus-lite"`` for a ``*.db`` file, else ``"lance"``."""
    return backend(uri).name


def open_store(uri: str, *, create: bool = True, **options: Any) -> Store:
    """Open (or create) the store a URI names (see :data:`BACKENDS`).

    Args:
        uri: a directory → embedded LanceDB store; a ``*.db`` path → Milvus Lite;
            ``http(s)://host:port`` or ``milvus://host:port`` → Milvus server.
        create: if False, a store that does not exist yet raises
            :class:`rankwise.errors.StoreError` instead of being created.
        **options: backend options (see ``LanceStore`` / ``MilvusStore``).
    """
    uri = str(uri)
    return backend(uri).load()(uri, create=create, **options)


def settings_store_options(settings: Any) -> dict[str, Any]:
    """The backend options a :class:`rankwise.config.Settings` gives its ``index``."""
    token = getattr(settings, "milvus_token", None)
    return store_options(
        settings.index,
        token=token.get_secret_value() if token else None,
        side_dir=getattr(settings, "side_dir", None),
    )


def store_options(uri: str, **wanted: Any) -> dict[str, Any]:
    """Of ``wanted`` (e.g. ``collection=``, ``token=`` from settings), the options the
    backend of ``uri`` takes, None values dropped."""
    accepted = backend(uri).options
    return {k: v for k, v in wanted.items() if v is not None and k in accepted}


def migrate(src: Store, dst: Store, batch_size: int = 1000, *, show_progress: bool = True) -> int:
    """Copy every record and vector from ``src`` into ``dst`` (upsert by id); returns
    the number copied. Idempotent: rerunning after an interruption finishes the copy."""
    from rankwise.store.migrate import migrate as _migrate

    return _migrate(src, dst, batch_size, show_progress=show_progress)
