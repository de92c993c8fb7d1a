"""The Store contract every backend implements (embedded LanceDB, Milvus).

A store keeps products: an ``id`` (string primary key), a ``title``, a ``text``
(description, may be empty), scalar metadata fields (str, int, float, bool) and one dense
vector per product. It knows nothing about models: callers hand it vectors.

Scores in :class:`Hit` are "higher is better": cosine similarity for dense search
(vectors are L2-normalised by the embedder), BM25 for lexical search.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rankwise.store.filters import Filter

#: Columns every store has; everything else in a record is metadata.
RESERVED_FIELDS = ("id", "title", "text", "vector")


@dataclass(frozen=True)
class Hit:
    """One first-stage result: product id, score (higher is better), stored fields."""

    id: str
    score: float
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteBatch:
    """A write :meth:`StoreHandle.upsert` has checked, for a backend's ``_write``: records
    normalised (duplicate ids collapsed to the last), float32 (n, dim) vectors, the store's
    schema, and learned sparse weights aligned with the records (or ``None``)."""

    records: list[dict[str, Any]]
    vectors: np.ndarray
    schema: dict[str, str]
    sparse: list[Mapping[int, float]] | None = None


@runtime_checkable
class Store(Protocol):
    """What ``search.py``, ``Catalog`` and the server rely on.

    ``capabilities`` tells callers what the backend does natively: ``"dense"`` always;
    ``"lexical"`` when :meth:`lexical_search` works; ``"filters"`` when filters are
    pushed down (prefiltered); ``"sparse"`` when it stores learned sparse weights itself
    (``upsert(..., sparse=)`` and ``sparse_search``, Milvus >= 2.4 / Milvus Lite). A missing capability raises
    :class:`rankwise.errors.UnsupportedFeature` with a message naming the backend.
    """

    uri: str
    capabilities: frozenset[str]

    @property
    def dim(self) -> int | None:
        """Vector dimension, or None for a store that holds nothing yet."""

    def upsert(
        self,
        records: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        schema: dict[str, str] | None = None,
        *,
        sparse: Sequence[Mapping[int, float]] | None = None,
    ) -> int:
        """Insert or replace records by ``id``. ``vectors``: float32 (n, dim). Returns n.

        ``schema`` (metadata field → "str"|"int"|"float"|"bool") types a *new* store from a
        whole catalog instead of this first batch; ignored once the store has a schema.
        ``sparse`` (one ``{token_id: weight}`` per record) only with the ``"sparse"``
        capability. Atomic per call: after a crash the store shows either the old or the new
        state.
        """

    def delete(self, ids: Iterable[str]) -> int:
        """Delete by id; returns how many existed."""

    def count(self, filters: Filter | None = None) -> int: ...

    def get(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records (without vectors) for the ids that exist, in the order asked."""

    def dense_search(self, vector: np.ndarray, k: int, filters: Filter | None = None) -> list[Hit]:
        """Top-k by cosine similarity, filters applied before the top-k cut."""

    def lexical_search(self, query: str, k: int, filters: Filter | None = None) -> list[Hit]:
        """Top-k by BM25, filters applied before the top-k cut."""

    def iter_records(
        self, batch_size: int = 1000, with_vectors: bool = False
    ) -> Iterable[list[dict[str, Any]]]:
        """All records in batches (used by migrate, evaluation and mining)."""

    def optimize(self) -> None:
        """Bring indexes up to date after bulk writes (ANN index over new rows, file
        compaction, Milvus flush). ``close()`` does it when the handle wrote; call it
        after a large ingest to pay the cost then rather than at the first search."""

    def read_stamp(self) -> dict[str, Any] | None:
        """The embedder stamp kept inside the store (``model``, ``version``, ``dim``, ...), or
        None before the first write. :class:`~rankwise.catalog.Catalog` checks it so that an
        index is never searched with vectors of another model, whatever the backend."""

    def write_stamp(self, stamp: dict[str, Any]) -> None:
        """Keep ``stamp`` (JSON-serialisable) inside the store; after the first write."""

    def info(self) -> dict[str, Any]:
        """Backend name, uri, count, dim, index parameters: for ``rankwise store info``."""

    def close(self) -> None: ...


class StoreHandle:
    """What every backend's handle shares: ``with store:`` closes it (flush, index, release),
    and :meth:`upsert`'s checks before a backend's ``_write`` (the one home of that logic)."""

    capabilities: frozenset[str]
    uri: str

    def upsert(
        self,
        records: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        schema: dict[str, str] | None = None,
        *,
        sparse: Sequence[Mapping[int, float]] | None = None,
    ) -> int:
        """Insert or replace by ``id`` (see :meth:`Store.upsert`). Validates the whole call
        before writing: the schema (the store's, else ``schema``, else inferred from this
        batch), the dimension, and ``sparse`` (one mapping per record, duplicates of an id
        collapsing to the last like the records). Returns the number of records written."""
        # imported here: store/schema.py imports this module
        from rankwise.errors import StoreError, UnsupportedFeature
        from rankwise.store.schema import infer_schema, validate_batch

        if len(records) == 0:
            return 0
        created = self._created()
        schema = self.schema if created else (schema or infer_schema(records))
        recs, vecs = validate_batch(records, vectors, schema, self.dim)
        weights = None
        if sparse is not None:
            if "sparse" not in self.capabilities:
                raise UnsupportedFeature(
                    f"{self!r} does not store learned sparse weights; keep them beside it"
                )
            if len(sparse) != len(records):
                raise StoreError(f"{len(records)} records but {len(sparse)} sparse vectors")
            by_id = {r["id"]: w for r, w in zip(records, sparse, strict=True)}
            weights = [by_id[r["id"]] for r in recs]
        return self._write(WriteBatch(recs, vecs, schema, weights))

    def _created(self) -> bool:  # pragma: no cover - each backend defines it
        """True once the first write has created the table/collection."""
        raise NotImplementedError

    def _write(self, batch: WriteBatch) -> int:  # pragma: no cover - each backend defines it
        """Write a checked batch; returns how many records were written."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - each backend defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
