"""Milvus backend: one ``pymilvus.MilvusClient`` for Milvus Lite files and Milvus servers.

URI → deployment: ``*.db`` → Milvus Lite (in-process, ``milvus-lite``); ``http(s)://`` or
``milvus://host:port`` → a Milvus standalone/cluster (token from the ``token`` option or
``RANKWISE_MILVUS_TOKEN``).

Collection layout (created by the first write, from the records)::

    id        VARCHAR(512) primary key
    title     VARCHAR(65535)      text VARCHAR(65535)
    <field>   VARCHAR / INT64 / DOUBLE / BOOL for each metadata field, plus
    <field>__set BOOL             False where the record had None (Milvus < 2.5 has no
                                  nullable fields; one layout serves every version)
    vector    FLOAT_VECTOR(dim), COSINE, index HNSW (M, efConstruction) | IVF_FLAT | AUTOINDEX
    lexical   VARCHAR + BM25 function → sparse   (only where the server has BM25)
    m3_sparse SPARSE_FLOAT_VECTOR, SPARSE_INVERTED_INDEX, IP: bge-m3's learned lexical
              weights (only when the first write brings them, on Milvus >= 2.4 / Lite)

Lexical search, by capability (see ``info()["lexical"]``):

* **native** (Milvus >= 2.5, milvus-lite >= 2.5): BM25 runs inside Milvus. To keep the
  tokenisation identical to the embedded store (jieba for Chinese, Snowball for English),
  ``lexical`` holds rankwise's tokens, each hashed to 16 hex chars so Milvus' ``standard``
  analyser keeps it whole. ``hybrid_search`` is native too (RRF or weighted ranker).
* **beside** (Milvus 2.3/2.4: no BM25, sparse or full-text): rankwise's bm25s index is
  built in memory from the collection at the first lexical search and after this
  handle's writes; ``search.py`` fuses dense and lexical itself.

Filters become Milvus boolean expressions with every string literal escaped
(:func:`quote_expr`), so a product field can never inject an expression.

Writes: ``upsert`` is idempotent by id (rerunning an interrupted ingest converges), but
unlike the embedded store a multi-chunk call is not one transaction.

Learned sparse weights (``upsert(..., sparse=)``, :meth:`MilvusStore.sparse_search`) are
native where the server has SPARSE_FLOAT_VECTOR (the ``"sparse"`` capability); elsewhere the
catalog keeps them in its side index (``store/side.py``), as it does ColBERT vectors always.

Why this module is over 400 lines: it is one class, the whole Milvus client side (connect,
reads, four kinds of search, index waits, info); split into mixins, each part would reach
into the others' fields. What does not need the client lives in ``milvus_schema.py`` (the
layout by server version, rows, expressions); the parts shared with the embedded backend
in ``store/base.py`` (upsert's checks), ``filters.py`` and ``schema.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.errors import StoreError, UnsupportedFeature
from rankwise.lexical import LexicalIndex
from rankwise.store import backend_for
from rankwise.store.base import Hit, StoreHandle, WriteBatch
from rankwise.store.filters import FilterSpec, build_filter
from rankwise.store.milvus_schema import (
    EMPTY_SPARSE_TOKEN,
    INTERNAL,
    LEARNED_SPARSE,
    PRESENT,
    build_rows,
    build_schema,
    hash_tokens,
    needs_version,
    quote_expr,
    server_features,
    sparse_row,
    to_expr,
)
from rankwise.store.schema import MetaSchema, check_filter

log = logging.getLogger(__name__)

#: Collection property holding the embedder stamp (see Store.read_stamp).
STAMP_PROPERTY = "rankwise.embedder"

DEFAULT_OPTIONS: dict[str, Any] = {
    "collection": "products",
    "token": None,  # server auth; falls back to RANKWISE_MILVUS_TOKEN
    "index_type": "HNSW",  # HNSW | IVF_FLAT | AUTOINDEX | FLAT
    "M": 16,
    "efConstruction": 200,
    "nlist": 1024,
    "ef": 128,  # HNSW search breadth (raised to k when k is larger)
    # with a filter: HNSW skips filtered nodes and needs a wider search (Milvus 2.3,
    # 10% filter, sealed segments: ef 128 → recall 0.78, 512 → 0.94, 1024 → 0.97)
    "filtered_ef": 1024,
    "nprobe": 32,  # IVF partitions probed
    "native_lexical": None,  # None: use Milvus BM25 where the server has it
    "write_batch": 2000,  # rows per gRPC upsert call
    # Searches read at "Session" consistency: this client's writes are visible, and there
    # is no wait for the next time tick (Milvus 2.3 "Strong" adds ~200 ms per search).
    # count/get/iter stay "Strong". Others' writes are seen once flushed (optimize/close).
    "search_consistency": "Session",
    "index_wait_s": 600.0,  # optimize(): how long to wait for the index to cover new rows
    "timeout": 60.0,
    # server URIs: a local folder for what the server does not keep (bge-m3's ColBERT
    # vectors, sparse weights before 2.4): the side index, see rankwise.store.side
    "side_dir": None,
}


class MilvusStore(StoreHandle):
    """The Store protocol on Milvus (Lite or server). See the module docstring.

    Args:
        uri: ``path/to/file.db`` (Milvus Lite) or ``http(s)://host:port`` /
            ``milvus://host:port`` (server).
        create: if False, a missing collection (or Lite file) raises :class:`StoreError`.
        **options: overrides of :data:`DEFAULT_OPTIONS`.
    """

    def __init__(self, uri: str, *, create: bool = True, **options: Any):
        from pymilvus import MilvusClient

        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise StoreError(
                f"unknown MilvusStore option(s) {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}"
            )
        self.options = {**DEFAULT_OPTIONS, **options}
        self.uri = str(uri)
        self.collection = self.options["collection"]
        self.side_dir = self.options["side_dir"]
        self.lite = backend_for(self.uri) == "milvus-lite"
        self.backend = "milvus-lite" if self.lite else "milvus"
        if self.lite:
            if not create and not Path(self.uri).exists():
                raise StoreError(
                    f"no rankwise index at {self.uri}; build one with `rankwise index` "
                    "or open it with create=True"
                )
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            client_uri, token = str(Path(self.uri).resolve()), ""
        else:
            client_uri = re.sub(r"^(milvus|tcp|grpc)://", "http://", self.uri, flags=re.I)
            token = self.options["token"] or os.environ.get("RANKWISE_MILVUS_TOKEN", "")
        _quiet_pymilvus()
        try:
            self._client = MilvusClient(
                uri=client_uri, token=token, timeout=self.options["timeout"]
            )
            self.server_version = self._client.get_server_version()
        except Exception as e:  # noqa: BLE001 - pymilvus raises many types; name the cause
            raise StoreError(
                f"cannot connect to Milvus at {self.uri}: {e}. Is the server running and the "
                "token (RANKWISE_MILVUS_TOKEN) right?"
            ) from e
        self.features = server_features(self.server_version)
        self._supports_bm25 = self._detect_bm25()
        self._fields: dict[str, Any] | None = None
        self._dim: int | None = None
        self._native_lexical = False
        self._native_sparse = False  # the collection has the learned sparse field
        if self._client.has_collection(self.collection):
            self._describe()
            self._client.load_collection(self.collection)
        elif not create:
            raise StoreError(
                f"no collection {self.collection!r} at {self.uri}; build one with "
                "`rankwise index` or open it with create=True"
            )
        self._lexical: LexicalIndex | None = None  # bm25s beside, when not native
        self._written = False

    # -- capabilities / schema ---------------------------------------------------------

    def _detect_bm25(self) -> bool:
        want = self.options["native_lexical"]
        has = "bm25" in self.features  # BM25 function + sparse + hybrid: 2.5, milvus-lite 2.5
        if want and not has:
            raise UnsupportedFeature(
                f"Milvus {self.server_version} at {self.uri} has no BM25 full-text search "
                f"(needs {needs_version('bm25')}); open with native_lexical=None to use "
                "rankwise's BM25"
            )
        return has if want is None else bool(want)

    @property
    def capabilities(self) -> frozenset[str]:
        """``dense``, ``lexical``, ``filters`` always; ``hybrid`` with native BM25; ``sparse``
        when learned sparse weights live in Milvus: the collection has the field, or none
        exists yet and the server has SPARSE_FLOAT_VECTOR (Milvus >= 2.4, Milvus Lite)."""
        caps = {"dense", "lexical", "filters"}
        if self._native_lexical or (self._fields is None and self._supports_bm25):
            caps.add("hybrid")
        if self._native_sparse or (self._fields is None and "sparse" in self.features):
            caps.add("sparse")
        return frozenset(caps)

    def _describe(self) -> None:
        desc = self._client.describe_collection(self.collection)
        self._fields = {}
        for f in desc["fields"]:
            self._fields[f["name"]] = f
            if f["name"] == "vector":
                self._dim = int(f["params"]["dim"])
        self._native_lexical = any(fn.get("type") is not None for fn in desc.get("functions", []))
        self._native_sparse = LEARNED_SPARSE in self._fields

    # -- the embedder stamp: a property of the collection (Lite and server alike) ----------
    def read_stamp(self) -> dict[str, Any] | None:
        if self._fields is None:
            return None
        props = self._client.describe_collection(self.collection).get("properties") or {}
        raw = props.get(STAMP_PROPERTY)
        try:
            stamp = json.loads(raw) if raw else None
        except ValueError as e:
            raise StoreError(f"the embedder stamp of {self.uri} is unreadable: {e}") from e
        return stamp if isinstance(stamp, dict) else None

    def write_stamp(self, stamp: dict[str, Any]) -> None:
        if self._fields is None:
            raise StoreError(f"{self.uri}: the embedder stamp is written after the first upsert")
        try:
            self._client.alter_collection_properties(
                self.collection, properties={STAMP_PROPERTY: json.dumps(stamp)}
            )
        except Exception as e:  # noqa: BLE001 - pymilvus raises many types; name the cause
            raise StoreError(
                f"cannot stamp collection {self.collection!r} at {self.uri}: {e}"
            ) from e

    @property
    def schema(self) -> MetaSchema:
        from pymilvus import DataType

        names = {
            DataType.VARCHAR: "str",
            DataType.INT64: "int",
            DataType.DOUBLE: "float",
            DataType.BOOL: "bool",
        }
        if not self._fields:
            return {}
        return {
            name: names[f["type"]]
            for name, f in self._fields.items()
            if name not in ("id", "title", "text", *INTERNAL) and not name.endswith(PRESENT)
        }

    @property
    def dim(self) -> int | None:
        return self._dim

    def _create(self, schema: MetaSchema, dim: int, learned_sparse: bool) -> None:
        s, index = build_schema(
            self._client, schema, dim, self.options, bm25=self._supports_bm25,
            learned_sparse=learned_sparse,
        )  # fmt: skip
        try:
            self._client.create_collection(
                self.collection, schema=s, index_params=index, consistency_level="Strong"
            )
        except Exception as e:  # noqa: BLE001
            raise StoreError(
                f"cannot create collection {self.collection!r} at {self.uri}: {e}"
            ) from e
        self._describe()

    # -- writes ------------------------------------------------------------------------

    def _created(self) -> bool:
        return bool(self._fields)

    def _write(self, batch: WriteBatch) -> int:
        """Milvus ``upsert`` (idempotent by id) in ``write_batch`` chunks; the first write
        creates the collection, with the learned sparse field when ``sparse`` is given."""
        recs, vecs, sparse = batch.records, batch.vectors, batch.sparse
        if not self._fields:
            self._create(batch.schema, vecs.shape[1], learned_sparse=sparse is not None)
        if self._native_sparse and sparse is None:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} holds learned sparse weights; "
                "index with the same outputs (`--outputs dense,sparse,...`)"
            )
        rows = build_rows(
            recs, vecs, self.schema, bm25=self._native_lexical,
            sparse=sparse if self._native_sparse else None,
        )  # fmt: skip
        step = self.options["write_batch"]
        try:
            for start in range(0, len(rows), step):
                self._client.upsert(self.collection, rows[start : start + step])
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"writing to {self.uri} failed: {e}") from e
        finally:
            self._lexical = None
            self._written = True
        return len(rows)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete by id; returns how many existed."""
        ids = list(dict.fromkeys(ids))
        if not ids or not self._fields:
            return 0
        existing = 0
        for start in range(0, len(ids), 1000):
            expr = self._id_expr(ids[start : start + 1000])
            existing += self._count_expr(expr)
            self._client.delete(self.collection, filter=expr)
        self._lexical = None
        return existing

    # -- reads -------------------------------------------------------------------------

    def _query_expr(self, filters: FilterSpec, k: int) -> str | None:
        """The filter expression of a search ("" for none), or None when it finds nothing
        (an empty collection, or k <= 0)."""
        expr = self._where(filters)
        return None if not self._fields or k <= 0 else expr

    def _where(self, filters: FilterSpec) -> str:
        return to_expr(check_filter(build_filter(filters), self.schema))

    @staticmethod
    def _id_expr(ids: Sequence[str]) -> str:
        return f"id in [{', '.join(quote_expr(i) for i in ids)}]"

    def _record_fields(self) -> list[str]:
        return [
            "id",
            "title",
            "text",
            *(n for n in self._fields if n not in ("id", "title", "text", *INTERNAL)),
        ]

    def _record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A Milvus row → a rankwise record (None restored where ``__set`` is False)."""
        rec = {"id": row["id"], "title": row["title"], "text": row["text"]}
        for name in self.schema:
            rec[name] = row[name] if row.get(name + PRESENT) else None
        return rec

    def _count_expr(self, expr: str) -> int:
        res = self._client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def count(self, filters: FilterSpec = None) -> int:
        expr = self._where(filters)
        return self._count_expr(expr) if self._fields else 0

    def get(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records (without vectors) for the ids that exist, in the order asked."""
        return self._get(ids)

    def _get(self, ids: Sequence[str], consistency: str | None = None) -> list[dict[str, Any]]:
        """:meth:`get` at ``consistency`` (None: the collection's, "Strong")."""
        if not self._fields or not ids:
            return []
        unique, found = list(dict.fromkeys(ids)), {}
        fields = self._record_fields()
        extra = {} if consistency is None else {"consistency_level": consistency}
        for start in range(0, len(unique), 1000):
            expr = self._id_expr(unique[start : start + 1000])
            for row in self._client.query(
                self.collection, filter=expr, output_fields=fields, **extra
            ):
                found[row["id"]] = self._record(row)
        return [found[i] for i in ids if i in found]

    def iter_records(
        self, batch_size: int = 1000, with_vectors: bool = False, *, filter_expr: str = ""
    ) -> Iterator[list[dict[str, Any]]]:
        """Every record in batches; with ``with_vectors`` each carries ``"vector"``
        (float32 numpy array of shape (dim,))."""
        if not self._fields:
            return
        fields = self._record_fields() + (["vector"] if with_vectors else [])
        it = self._client.query_iterator(
            self.collection, batch_size=batch_size, filter=filter_expr, output_fields=fields
        )
        try:
            while batch := it.next():
                out = []
                for row in batch:
                    rec = self._record(row)
                    if with_vectors:
                        rec["vector"] = np.asarray(row["vector"], dtype=np.float32)
                    out.append(rec)
                yield out
        finally:
            it.close()

    def _search_params(self, k: int, filtered: bool = False) -> dict[str, Any]:
        o = self.options
        ef = max(o["filtered_ef"] if filtered else o["ef"], k)
        params = {"HNSW": {"ef": ef}, "IVF_FLAT": {"nprobe": o["nprobe"]}}
        # no "metric_type" here: with it, pymilvus 3 + Milvus 2.3 silently drop "params"
        # (measured: nprobe=128 of 128 gave the recall of nprobe=1); the index knows it
        return {"params": params.get(o["index_type"], {})}

    def _search(
        self, field: str, data: Any, k: int, expr: str, params: dict[str, Any]
    ) -> list[Hit]:
        """One native Milvus search on ``field``; scores as "higher is better" (milvus-lite
        reports BM25 as a negative distance, servers as a positive score)."""
        res = self._client.search(
            self.collection, data=[data], anns_field=field, limit=k, filter=expr,
            search_params=params, output_fields=self._record_fields(),
            consistency_level=self.options["search_consistency"],
        )  # fmt: skip
        score = abs if field == "sparse" else float
        return [
            Hit(h["id"], score(float(h["distance"])), self._record(h["entity"])) for h in res[0]
        ]

    def dense_search(self, vector: np.ndarray, k: int, filters: FilterSpec = None) -> list[Hit]:
        """Top-k by cosine similarity, filter pushed into Milvus (prefiltered)."""
        expr = self._query_expr(filters, k)
        if expr is None:
            return []
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self._dim:
            raise StoreError(
                f"query vector has dimension {vec.shape[0]}, the index holds {self._dim}"
            )
        return self._search("vector", vec.tolist(), k, expr, self._search_params(k, bool(expr)))

    def sparse_search(
        self, weights: Mapping[int, float], k: int, filters: FilterSpec = None
    ) -> list[Hit]:
        """Top-k by the inner product of learned sparse weights (``{token_id: weight}``, bge-m3's
        lexical weights) in the ``m3_sparse`` field, prefiltered; only hits scoring > 0.
        Needs the ``"sparse"`` capability (a collection indexed with sparse outputs)."""
        if not self._native_sparse:
            need = "" if "sparse" in self.features else f" (needs {needs_version('sparse')})"
            raise UnsupportedFeature(
                f"{self.backend} {self.server_version} collection {self.collection!r} at "
                f"{self.uri} holds no learned sparse weights{need}"
            )
        expr = self._query_expr(filters, k)
        q = sparse_row(weights, document=False)
        if expr is None or not q:
            return []
        hits = self._search(LEARNED_SPARSE, q, k, expr, {"metric_type": "IP"})
        return [h for h in hits if h.score > 0]

    def lexical_search(self, query: str, k: int, filters: FilterSpec = None) -> list[Hit]:
        """Top-k by BM25 (native Milvus BM25 or rankwise's bm25s beside), prefiltered."""
        expr = self._query_expr(filters, k)
        if expr is None:
            return []
        if self._native_lexical:
            q = hash_tokens(query)
            hits = self._search("sparse", q, k, expr, {"metric_type": "BM25"}) if q else []
            return [h for h in hits if h.score > 0]
        index = self._lexical_index()
        allowed = None
        if expr:
            allowed = [r["id"] for b in self._iter_ids(expr) for r in b]
            if not allowed:
                return []
        pairs = index.search(query, k, allowed)
        # a search's own read: at search consistency, as the dense side (a "Strong" fetch
        # waited for Milvus' next time tick: lexical p50 202 ms at 1M, search_latency.md)
        found = self._get([i for i, _ in pairs], self.options["search_consistency"])
        records = {r["id"]: r for r in found}
        return [Hit(i, s, records[i]) for i, s in pairs if i in records]

    def _iter_ids(self, expr: str) -> Iterator[list[dict[str, Any]]]:
        it = self._client.query_iterator(
            self.collection, batch_size=5000, filter=expr, output_fields=["id"]
        )
        try:
            while batch := it.next():
                yield batch
        finally:
            it.close()

    def _lexical_index(self) -> LexicalIndex:
        if self._lexical is None:
            ids, texts = [], []
            for batch in self.iter_records(batch_size=5000):
                ids += [r["id"] for r in batch]
                texts += [f"{r['title']} {r['text']}" for r in batch]
            self._lexical = LexicalIndex.build(ids, texts, show_progress=len(ids) > 50_000)
        return self._lexical

    def hybrid_search(
        self,
        vector: np.ndarray,
        query: str,
        k: int,
        filters: FilterSpec = None,
        *,
        fusion: str = "rrf",
        rrf_k: int = 60,
        weights: tuple[float, float] = (0.5, 0.5),
    ) -> list[Hit]:
        """Native Milvus hybrid search (dense + BM25, fused by RRF or weighted ranker).

        Only with the ``"hybrid"`` capability; otherwise raises :class:`UnsupportedFeature`
        and callers fuse :meth:`dense_search` and :meth:`lexical_search` themselves.
        """
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        expr = self._where(filters)
        if not self._fields and self._supports_bm25:
            return []  # nothing written yet (the collection is created natively hybrid)
        if not self._native_lexical:
            raise UnsupportedFeature(
                f"{self.backend} {self.server_version} at {self.uri} has no native hybrid "
                "search (needs Milvus >= 2.5 with BM25); fuse dense and lexical results instead"
            )
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        reqs = [
            AnnSearchRequest(
                [vec.tolist()], "vector", self._search_params(k, bool(expr)), k, expr=expr or None
            )
        ]
        q = hash_tokens(query)
        if q:
            reqs.append(
                AnnSearchRequest([q], "sparse", {"metric_type": "BM25"}, k, expr=expr or None)
            )
        ranker = RRFRanker(rrf_k) if fusion == "rrf" else WeightedRanker(*weights[: len(reqs)])
        res = self._client.hybrid_search(
            self.collection, reqs, ranker, limit=k, output_fields=self._record_fields(),
            consistency_level=self.options["search_consistency"],
        )  # fmt: skip
        return [Hit(h["id"], float(h["distance"]), self._record(h["entity"])) for h in res[0]]

    # -- ops ---------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Backend, uri, server version, count, dim, fields, index and lexical path."""
        index: dict[str, Any] = {}
        if self._fields:
            desc = self._client.describe_index(self.collection, "vector")
            index = {
                k: desc.get(k)
                for k in ("index_type", "metric_type", "M", "efConstruction", "nlist")
                if desc.get(k) is not None
            }
            index["search"] = self._search_params(10)["params"]
        lexical = (
            "native Milvus BM25 (rankwise tokens)"
            if self._native_lexical or (not self._fields and self._supports_bm25)
            else f"rankwise bm25s beside Milvus (Milvus {self.server_version} has no BM25)"
        )
        return {
            "backend": self.backend,
            "uri": self.uri,
            "collection": self.collection,
            "server_version": self.server_version,
            "count": self.count(),
            "dim": self._dim,
            "fields": self.schema,
            "capabilities": sorted(self.capabilities),
            "index": index,
            "lexical": {"engine": lexical},
            "sparse": self._sparse_info(),
        }

    def _sparse_info(self) -> dict[str, Any]:
        """Where learned sparse weights live, and their size per product: the raw rows
        (8 bytes a nonzero: uint32 token id + float32 weight, Milvus' sparse row format)
        averaged over up to 1,000 rows; the inverted index adds about as much again. For a
        Milvus Lite file, ``disk_bytes_per_product`` is the whole file per product."""
        out: dict[str, Any] = {}
        if self._native_sparse:
            out["engine"] = f"native Milvus {LEARNED_SPARSE} (SPARSE_FLOAT_VECTOR, IP)"
            rows = self._client.query(
                self.collection, filter="", output_fields=[LEARNED_SPARSE], limit=1000
            )
            nnz = [sum(t != EMPTY_SPARSE_TOKEN for t in r[LEARNED_SPARSE]) for r in rows]
            out["nonzeros_per_product"] = round(float(np.mean(nnz)), 1) if nnz else 0.0
            out["memory_bytes_per_product"] = round(8 * out["nonzeros_per_product"], 1)
        elif "sparse" in self.features:
            out["engine"] = (
                "none in Milvus (collection built without sparse outputs; a side index beside "
                "the store holds them if it was built with them)"
            )
        else:
            out["engine"] = (
                f"none in Milvus: {self.server_version} has no SPARSE_FLOAT_VECTOR (needs "
                f"{needs_version('sparse')}); sparse outputs are kept beside the store where "
                "it is a file, refused for a server URI"
            )
        if self.lite and Path(self.uri).exists() and self._fields:
            p = Path(self.uri)
            disk = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0
            disk = disk or p.stat().st_size
            out["disk_bytes_per_product"] = round(disk / max(self.count(), 1), 1)
        return out

    def _load_lite(self, attempts: int = 6) -> None:
        """``load_collection`` on milvus-lite, retried while its background index writer still
        holds a segment's index file: the load then fails with faiss' "read error ...
        (Resource temporarily unavailable)" (seen right after a flush of a collection with a
        sparse field); the writer finishes within a second or two."""
        import time

        from pymilvus.exceptions import MilvusException

        for attempt in range(attempts):
            try:
                self._client.load_collection(self.collection)
                return
            except MilvusException as e:
                if "temporarily unavailable" not in str(e) or attempt == attempts - 1:
                    raise
                time.sleep(0.1 * 2**attempt)

    def optimize(self) -> None:
        """Flush (seal growing segments) and wait until the vector index covers every row.

        Growing segments are searched through Milvus' interim index, which loses filtered
        recall (measured 0.4-0.7 with 1-10% filters on Milvus 2.3); sealed, indexed
        segments do not. ``close()`` calls this after writes.
        """
        import time

        if not self._fields:
            return
        self._client.flush(self.collection)
        if self.lite:
            # milvus-lite indexes flushed segments in a background thread and, until it
            # has, answers each query with a brute-force index built on the spot (30k rows:
            # 270 ms per query against 43 ms once indexed). release + load builds every
            # segment's index before returning.
            self._client.release_collection(self.collection)
            self._load_lite()
            return
        deadline = time.monotonic() + self.options["index_wait_s"]
        while time.monotonic() < deadline:
            desc = self._client.describe_index(self.collection, "vector")
            done = int(desc.get("indexed_rows", 0) or 0) >= int(desc.get("total_rows", 0) or 0)
            if done and int(desc.get("pending_index_rows", 0) or 0) == 0 and self._served_sealed():
                return
            time.sleep(1.0)
        log.warning(
            "the index on %s is still building; searches use brute force meanwhile", self.uri
        )

    def _served_sealed(self) -> bool:
        """True when the query nodes serve only sealed, indexed segments (after a flush
        they keep serving the growing copies, through the interim index, for a while)."""
        from pymilvus.grpc_gen.common_pb2 import SegmentState

        if self.lite:
            return True
        try:
            infos = self._client._get_connection().get_query_segment_info(self.collection)
        except Exception:  # noqa: BLE001 - older/newer servers: do not block on this
            return True
        return all(i.state == SegmentState.Sealed and i.index_name for i in infos)

    def close(self) -> None:
        """Flush and wait for the index if this handle wrote (:meth:`optimize`), then
        release the connection."""
        if self._written:
            self.optimize()
            self._written = False
        self._client.close()

    def __repr__(self) -> str:
        return f"MilvusStore({self.uri!r}, collection={self.collection!r})"


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "mvccTs" not in msg and "Method not implemented" not in msg


def _quiet_pymilvus() -> None:
    """Every query_iterator against milvus-lite logs a warning (no MVCC timestamp) and an
    in-process gRPC traceback (AllocTimestamp not implemented); both are harmless."""
    for name in (
        "pymilvus.client.iterator.query_iterator",
        "pymilvus.decorators",
        "grpc._server",
    ):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in lg.filters):
            lg.addFilter(_DropNoise())
