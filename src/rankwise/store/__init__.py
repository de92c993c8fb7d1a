"""Stores: the embedded LanceDB default and Milvus (Lite file or server), one protocol.

>>> store = open_store("./index")                    # LanceDB directory (default)
>>> store = open_store("./catalog.db")               # Milvus Lite file
>>> store = open_store("http://localhost:19530")     # Milvus server (token: option or
...                                                  # RANKWISE_MILVUS_TOKEN)
"""

from __future__ import annotations

from typing import Any

from rankwise.store.base import RESERVED_FIELDS, Hit, Store
from rankwise.store.filters import Condition, Filter, build_filter

__all__ = [
    "RESERVED_FIELDS",
    "Condition",
    "Filter",
    "Hit",
    "Store",
    "backend_for",
    "build_filter",
    "migrate",
    "open_store",
]

_SERVER_SCHEMES = ("http://", "https://", "milvus://", "tcp://", "grpc://")


def backend_for(uri: str) -> str:
    """``"milvus"`` for a server URI, ``"milvus-lite"`` for a ``*.db`` file, else ``"lance"``."""
    if uri.lower().startswith(_SERVER_SCHEMES):
        return "milvus"
    if uri.lower().endswith(".db"):
        return "milvus-lite"
    return "lance"


def open_store(uri: str, *, create: bool = True, **options: Any) -> Store:
    """Open (or create) the store a URI names.

    Args:
        uri: a directory → embedded LanceDB store; a ``*.db`` path → Milvus Lite;
            ``http(s)://host:port`` or ``milvus://host:port`` → Milvus server.
        create: if False, a store that does not exist yet raises
            :class:`rankwise.errors.StoreError` instead of being created.
        **options: backend options (see ``LanceStore`` / ``MilvusStore``).
    """
    uri = str(uri)
    if backend_for(uri) == "lance":
        from rankwise.store.lance import LanceStore

        return LanceStore(uri, create=create, **options)
    from rankwise.store.milvus import MilvusStore

    return MilvusStore(uri, create=create, **options)


def migrate(src: Store, dst: Store, batch_size: int = 1000, *, show_progress: bool = True) -> int:
    """Copy every record and vector from ``src`` into ``dst`` (upsert by id); returns
    the number copied. Idempotent: rerunning after an interruption finishes the copy."""
    from rankwise.store.migrate import migrate as _migrate

    return _migrate(src, dst, batch_size, show_progress=show_progress)
