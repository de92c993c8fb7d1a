"""The embedded default store: one LanceDB table in a directory, BM25 kept beside it.

Layout of an index directory::

    <dir>/rankwise.json        manifest: backend, format, dim, options (written atomically)
    <dir>/products.lance/      LanceDB table: id, title, text, typed metadata, vector
    <dir>/lexical/             bm25s index stamped with the table version it reflects

Writes are single Lance commits (``merge_insert`` on ``id``, ``delete``), so a process
killed mid-write leaves the previous table version readable. The BM25 index is derived
data: it is rebuilt lazily (first lexical search after a write, or on ``close()``) when
its stamp differs from the table version, including after a crash.

Search is exact (flat) below ``ann_threshold`` rows. Above it an ``IVF_HNSW_SQ`` index
is built and queried with ``nprobes``/``ef``/``refine_factor`` chosen so recall@10 stays
>= 0.95 (LanceDB's query defaults lose recall once new rows are merged into the index by
``optimize()``; ``tests/test_store.py`` checks recall after such a merge). A filter that
keeps few rows (``exact_filter_below``) is answered exactly over the matching rows, so
rare values are never lost in unprobed partitions.

Why this module is over 400 lines: it is one class, the whole embedded backend (one LanceDB
table, its ANN index maintenance and the BM25 index beside it, sharing one handle's state);
split into mixins, each part would reach into the others' fields. The shared parts of the
backends live in ``store/base.py``, ``filters.py`` and ``schema.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree, IvfFlat, IvfHnswFlat, IvfHnswSq, IvfPq, IvfSq

from rankwise.errors import StoreError
from rankwise.lexical import LexicalIndex, atomic_write_json
from rankwise.store.base import Hit, StoreHandle, WriteBatch
from rankwise.store.filters import FilterSpec, build_filter, quote_sql, to_sql
from rankwise.store.schema import MetaSchema, check_filter

log = logging.getLogger(__name__)

TABLE = "products"
MANIFEST = "rankwise.json"
#: The embedder stamp (see Store.read_stamp).
STAMP = "rankwise-embedder.json"
FORMAT_VERSION = 1
VECTOR_INDEX = "vector_idx"

_INDEX_CONFIGS = {
    "IVF_HNSW_SQ": IvfHnswSq,
    "IVF_HNSW_FLAT": IvfHnswFlat,
    "IVF_PQ": IvfPq,
    "IVF_SQ": IvfSq,
    "IVF_FLAT": IvfFlat,
}
_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}

#: Defaults, stored in the manifest at creation; any can be overridden when opening.
DEFAULT_OPTIONS: dict[str, Any] = {
    "ann_threshold": 50_000,  # rows; below: exact search, above: ANN index
    # optimize() deletes table versions older than this (LanceDB keeps 7 days by default:
    # a 1M-row ingest in 10k batches left 7 GB on disk for 1.5 GB of vectors). The
    # current version is never touched; readers pinned to an older one lose it.
    "keep_versions_s": 600,
    "index_type": "IVF_HNSW_SQ",
    # None: n / 32768 (min 1). With n / 4096 (244 partitions at 1M) nprobes=20 probed 8%
    # of them and recall@10 fell to 0.56 (benchmarks/results/store_scale.md)
    "num_partitions": None,
    "m": 16,
    "ef_construction": 100,  # 300 (LanceDB's default) builds ~5x slower, same recall here
    "nprobes": 20,
    # HNSW breadth inside each probed partition: the recall limiter (200k x 384, 30
    # partitions, 20 probed: ef 200 → recall@10 0.91, 400 → 0.935, 800 → 1.0 at ~40 ms
    # on a loaded 2-core box; nprobes 30 or refine_factor 10 changed nothing)
    "ef": 800,
    "refine_factor": 5,  # re-rank nprobes' SQ candidates with full vectors
    # a filter keeping fewer rows than this is answered exactly (the index's probed
    # partitions may hold none of them); above it the ANN prefilter is faster and as
    # accurate (100k x 384, 1% filter: 134 ms recall 1.0 vs exact 894 ms, loaded CPU)
    "exact_filter_below": 1_000,
    # Rows added after the index was built are searched exactly (flat) until the index is
    # rebuilt over all rows. LanceDB's incremental merge (optimize_indices) is not used: on
    # IVF_HNSW_SQ it dropped recall@10 from 1.0 to 0.685 (800k indexed + 200k merged,
    # 1,000 clusters x 384; benchmarks/results/lance_index_merge.json).
    "optimize_fraction": 0.5,  # while writing: rebuild once unindexed rows pass this share
    "rest_fraction": 0.1,  # optimize() / close(): rebuild once they pass this share
    "read_consistency_interval": None,  # seconds; 0 = always see other writers at once
}


def _arrow_type_name(t: pa.DataType) -> str:
    for name, at in _ARROW.items():
        if t == at:
            return name
    raise StoreError(f"unsupported column type {t} in the index table")


class LanceStore(StoreHandle):
    """Embedded store on LanceDB. See the module docstring for layout and guarantees.

    Args:
        path: index directory (created on first write when ``create`` is True).
        create: if False, a missing index raises :class:`StoreError`.
        **options: overrides of :data:`DEFAULT_OPTIONS`.
    """

    backend = "lance"
    capabilities = frozenset({"dense", "lexical", "filters"})

    def __init__(self, path: str | Path, *, create: bool = True, **options: Any):
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise StoreError(
                f"unknown LanceStore option(s) {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}"
            )
        self.path = Path(path)
        self.uri = str(self.path)
        manifest = self._read_manifest()
        if manifest is None and not self._table_dir().exists():
            if not create:
                raise StoreError(
                    f"no rankwise index at {self.uri}; build one with `rankwise index` "
                    "or open it with create=True"
                )
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self.uri} is a file, not an index directory")
        self.options = {**DEFAULT_OPTIONS, **(manifest or {}).get("options", {}), **options}
        self._manifest_dim = (manifest or {}).get("dim")
        # rows when the ANN index was (re)built: past 4x that, it is rebuilt, not extended
        self._index_built_rows = (manifest or {}).get("index_built_rows") or 0
        rci = self.options["read_consistency_interval"]
        try:
            self.path.mkdir(parents=True, exist_ok=True) if create else None
            self._db = lancedb.connect(
                self.path, read_consistency_interval=None if rci is None else timedelta(seconds=rci)
            )
            self._table = self._db.open_table(TABLE) if self._table_dir().exists() else None
        except (OSError, ValueError, RuntimeError) as e:
            raise StoreError(f"cannot open the index at {self.uri}: {e}") from e
        self._lexical: LexicalIndex | None = None
        self._lexical_version: int | None = None
        self._written = False

    # -- helpers -----------------------------------------------------------------------

    def _table_dir(self) -> Path:
        return self.path / f"{TABLE}.lance"

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StoreError(f"the manifest {self.path / MANIFEST} is unreadable: {e}") from e

    def _write_manifest(self) -> None:
        atomic_write_json(
            self.path / MANIFEST,
            {
                "backend": self.backend,
                "format": FORMAT_VERSION,
                "dim": self.dim,
                "options": self.options,
                "index_built_rows": self._index_built_rows,
            },
        )

    # -- the embedder stamp: a file in the index directory (where it has always been) ------
    def read_stamp(self) -> dict[str, Any] | None:
        try:
            stamp = json.loads((self.path / STAMP).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StoreError(
                f"{self.path / STAMP} is unreadable ({e}); delete it to re-stamp"
            ) from e
        return stamp if isinstance(stamp, dict) else None

    def write_stamp(self, stamp: dict[str, Any]) -> None:
        atomic_write_json(self.path / STAMP, stamp)

    @property
    def schema(self) -> MetaSchema:
        """Metadata field → type name (``str``/``int``/``float``/``bool``)."""
        if self._table is None:
            return {}
        return {
            f.name: _arrow_type_name(f.type)
            for f in self._table.schema
            if f.name not in ("id", "title", "text", "vector")
        }

    @property
    def dim(self) -> int | None:
        if self._table is None:
            return self._manifest_dim
        return self._table.schema.field("vector").type.list_size

    def _dataset(self):
        return self._table.to_lance()

    def _where(self, filters: FilterSpec) -> str | None:
        return to_sql(check_filter(build_filter(filters), self.schema))

    def _record_columns(self) -> list[str]:
        return [f.name for f in self._table.schema if f.name != "vector"]

    def _arrow_schema(self, schema: MetaSchema, dim: int) -> pa.Schema:
        return pa.schema(
            [("id", pa.string()), ("title", pa.string()), ("text", pa.string())]
            + [(k, _ARROW[t]) for k, t in schema.items()]
            + [("vector", pa.list_(pa.float32(), dim))]
        )

    def _has_vector_index(self) -> bool:
        return any(VECTOR_INDEX == ix.name for ix in self._table.list_indices())

    # -- writes ------------------------------------------------------------------------

    def _created(self) -> bool:
        return self._table is not None

    def _write(self, batch: WriteBatch) -> int:
        """One commit (``merge_insert`` by id) of a batch :meth:`StoreHandle.upsert` checked
        (learned sparse weights never come here: this store has no ``"sparse"`` capability)."""
        recs, vecs, schema = batch.records, batch.vectors, batch.schema
        arrow_schema = self._arrow_schema(schema, vecs.shape[1])
        columns = {name: [r[name] for r in recs] for name in arrow_schema.names[:-1]}
        columns["vector"] = pa.FixedSizeListArray.from_arrays(
            pa.array(vecs.reshape(-1), pa.float32()), vecs.shape[1]
        )
        data = pa.table(columns, schema=arrow_schema)
        try:
            if self._table is None:
                self.path.mkdir(parents=True, exist_ok=True)
                self._table = self._db.create_table(TABLE, schema=arrow_schema)
                self._write_manifest()
            (
                self._table.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(data)
            )
            self._written = True
            self._maintain_index()
        except (OSError, RuntimeError, ValueError) as e:
            raise StoreError(f"writing to {self.uri} failed: {e}") from e
        return len(recs)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete by id in one commit; returns how many of ``ids`` existed."""
        ids = list(dict.fromkeys(ids))
        if not ids or self._table is None:
            return 0
        where = f"id IN ({', '.join(quote_sql(i) for i in ids)})"
        existing = self._table.count_rows(where)
        if existing:
            self._table.delete(where)
            self._written = True
        return existing

    def _maintain_index(self) -> None:
        """After a write: build the ANN index past ``ann_threshold``; rebuild it once rows
        added since exceed ``optimize_fraction`` of the table (geometric, so a bulk ingest
        builds O(log n) times, ~2n rows of work in all). Unindexed rows are searched exactly."""
        self._refresh_index(self.options["optimize_fraction"])

    def _refresh_index(self, fraction: float) -> None:
        """Build the index past ``ann_threshold``, or rebuild it over all rows once the
        unindexed ones exceed ``fraction`` of the table."""
        n = self._table.count_rows()
        if not self._has_vector_index():
            if n >= self.options["ann_threshold"]:
                self.build_index()
            return
        stats = self._table.index_stats(VECTOR_INDEX)
        if stats is not None and stats.num_unindexed_rows > fraction * n:
            self.build_index()

    def optimize(self) -> None:
        """Done by ``close()`` after writes: (re)build the ANN index when more than
        ``rest_fraction`` of the rows are outside it, and delete table versions older than
        ``keep_versions_s``."""
        if self._table is None:
            return
        self._refresh_index(self.options["rest_fraction"])
        keep = timedelta(seconds=self.options["keep_versions_s"])
        self._table.to_lance().cleanup_old_versions(older_than=keep)
        self._table.checkout_latest()

    def build_index(self) -> None:
        """(Re)build the ANN index over all rows now (also done automatically). Small data
        files are compacted first: the index is replaced right after, so nothing relies on
        compaction's remapping of the old one."""
        self._table.to_lance().optimize.compact_files()
        self._table.checkout_latest()
        n = self._table.count_rows()
        o = self.options
        parts = o["num_partitions"] or max(1, n // 32768)
        log.info("building %s index over %d vectors (%d partitions)", o["index_type"], n, parts)
        config_cls = _INDEX_CONFIGS.get(o["index_type"])
        if config_cls is None:
            raise StoreError(
                f"unknown index_type {o['index_type']!r}; use one of {sorted(_INDEX_CONFIGS)}"
            )
        params = {"distance_type": "cosine", "num_partitions": parts}
        if "HNSW" in o["index_type"]:
            params |= {"m": o["m"], "ef_construction": o["ef_construction"]}
        self._table.create_index("vector", config=config_cls(**params), name=VECTOR_INDEX)
        self._table.create_index("id", config=BTree(), replace=True)
        self._index_built_rows = n
        self._write_manifest()

    # -- reads -------------------------------------------------------------------------

    def count(self, filters: FilterSpec = None) -> int:
        if self._table is None:
            self._where(filters)  # still validate
            return 0
        return self._table.count_rows(self._where(filters))

    def get(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records (without vectors) for the ids that exist, in the order asked."""
        if self._table is None or not ids:
            return []
        ds, cols, found = self._dataset(), self._record_columns(), {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 1000):
            chunk = unique[start : start + 1000]
            where = f"id IN ({', '.join(quote_sql(i) for i in chunk)})"
            for row in ds.to_table(columns=cols, filter=where).to_pylist():
                found[row["id"]] = row
        return [found[i] for i in ids if i in found]

    def iter_records(
        self, batch_size: int = 1000, with_vectors: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Every record in batches; with ``with_vectors`` each carries ``"vector"``
        (float32 numpy array of shape (dim,))."""
        if self._table is None:
            return
        cols = self._record_columns() + (["vector"] if with_vectors else [])
        for batch in self._dataset().to_batches(batch_size=batch_size, columns=cols):
            rows = batch.drop_columns(["vector"]).to_pylist() if with_vectors else batch.to_pylist()
            if with_vectors:
                dim = batch.schema.field("vector").type.list_size
                vecs = batch.column("vector").flatten().to_numpy().reshape(-1, dim)
                for row, vec in zip(rows, vecs, strict=True):
                    row["vector"] = vec
            if rows:
                yield rows

    def dense_search(
        self,
        vector: np.ndarray,
        k: int,
        filters: FilterSpec = None,
    ) -> list[Hit]:
        """Top-k by cosine similarity (score = 1 - cosine distance), prefiltered.

        ``vector``: float32 (dim,) or (1, dim), L2-normalised.
        """
        where = self._where(filters)
        if self._table is None or k <= 0:
            return []
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise StoreError(
                f"query vector has dimension {vec.shape[0]}, the index holds {self.dim}"
            )
        q = (
            self._table.search(vec, vector_column_name="vector")
            .distance_type("cosine")
            .select([*self._record_columns(), "_distance"])
            .limit(k)
        )
        if where:
            q = q.where(where, prefilter=True)
        if self._has_vector_index():
            if where and self._table.count_rows(where) < self.options["exact_filter_below"]:
                q = q.bypass_vector_index()
            else:
                o = self.options
                # HNSW needs ef >= the candidates it returns (k * refine_factor with refine)
                ef = max(o["ef"], k * (o["refine_factor"] or 1))
                q = q.nprobes(o["nprobes"]).ef(ef).refine_factor(o["refine_factor"])
        rows = q.to_arrow().to_pylist()
        return [Hit(r["id"], 1.0 - float(r.pop("_distance")), r) for r in rows]

    def lexical_search(
        self,
        query: str,
        k: int,
        filters: FilterSpec = None,
    ) -> list[Hit]:
        """Top-k by BM25 over ``title + " " + text``; the filter restricts scoring
        (bm25s weight mask) before the top-k cut. Only products sharing a term return."""
        where = self._where(filters)
        if self._table is None or k <= 0:
            return []
        index = self._lexical_index()
        allowed = None
        if where:
            allowed = self._dataset().to_table(columns=["id"], filter=where).column("id")
            allowed = allowed.to_pylist()
            if not allowed:
                return []
        pairs = index.search(query, k, allowed)
        records = {r["id"]: r for r in self.get([i for i, _ in pairs])}
        return [Hit(i, s, records[i]) for i, s in pairs if i in records]

    def _lexical_dir(self) -> Path:
        return self.path / "lexical"

    def _lexical_index(self) -> LexicalIndex:
        """The BM25 index for the current table version: in memory, from disk if its
        stamp matches, else rebuilt from the table and saved atomically."""
        version = self._table.version
        if self._lexical is not None and self._lexical_version == version:
            return self._lexical
        loaded = LexicalIndex.load(self._lexical_dir())
        if loaded is not None and loaded[1].get("version") == version:
            self._lexical, self._lexical_version = loaded[0], version
            return self._lexical
        self.rebuild_lexical()
        return self._lexical  # type: ignore[return-value]

    def rebuild_lexical(self) -> None:
        """Rebuild the BM25 index from the table and save it stamped with its version."""
        version = self._table.version
        table = self._dataset().to_table(columns=["id", "title", "text"])
        ids = table.column("id").to_pylist()
        texts = [
            f"{t} {x}"
            for t, x in zip(
                table.column("title").to_pylist(), table.column("text").to_pylist(), strict=True
            )
        ]
        index = LexicalIndex.build(ids, texts, show_progress=len(ids) > 50_000)
        try:
            index.save(self._lexical_dir(), {"version": version})
        except OSError as e:  # a concurrent builder or a read-only dir: keep it in memory
            log.warning("could not save the lexical index under %s: %s", self._lexical_dir(), e)
        self._lexical, self._lexical_version = index, version

    # -- ops ---------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Backend, uri, count, dim, fields, index parameters, lexical index state."""
        indexed = self._table is not None and self._has_vector_index()
        stamp = LexicalIndex.load(self._lexical_dir())
        version = self._table.version if self._table is not None else None
        return {
            "backend": self.backend,
            "uri": self.uri,
            "count": self.count(),
            "dim": self.dim,
            "fields": self.schema,
            "capabilities": sorted(self.capabilities),
            "table_version": version,
            "search": "ann" if indexed else "exact",
            "index": {
                k: self.options[k]
                for k in ("index_type", "ann_threshold", "nprobes", "ef", "refine_factor")
            }
            | (
                {"unindexed_rows": self._table.index_stats(VECTOR_INDEX).num_unindexed_rows}
                if indexed
                else {}
            ),
            "lexical": {
                "engine": "bm25s",
                "up_to_date": bool(stamp and stamp[1].get("version") == version),
            },
        }

    def close(self) -> None:
        """If this handle wrote: compact, index new rows (:meth:`optimize`) and bring the
        lexical index up to date, so the next open is fast. Then release."""
        if self._written and self._table is not None:
            self.optimize()
            self._lexical_index()
            self._written = False

    def __repr__(self) -> str:
        return f"LanceStore({self.uri!r})"
