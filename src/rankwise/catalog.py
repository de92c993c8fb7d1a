"""Catalog: a store plus the embedder that fills it.

``Catalog.ingest`` streams a catalog file into the store in batches (embed, then upsert):

1. **Validate first.** The whole file is read once and validated (cheap next to
   embedding); a bad line aborts before anything is written, unless ``skip_invalid``
   is set, in which case bad lines are skipped and listed in the report.
2. **Embed and upsert per batch**, with a progress bar and throughput.
3. **Resume.** After each committed batch a checkpoint records the source file's
   identity and how many records are done; a rerun of the same command skips them.
   Upserts are idempotent by id, so a batch that was written but not yet checkpointed
   when the process died is simply written again: no duplicates, nothing lost.
4. **Per-batch failures** (a store write that fails) are retried once, then reported
   and the run continues; the checkpoint does not advance past a failed batch, so a
   rerun retries it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from rankwise.data import FieldMapping, Record, document_text, read_catalog
from rankwise.errors import RankwiseError, SchemaMismatch, StoreError
from rankwise.ingest_checkpoint import IngestCheckpoint
from rankwise.store import Store, open_store
from rankwise.store.schema import MetaSchema, resolve_schema, scan_types
from rankwise.store.side import SideIndex, claim, side_path

if TYPE_CHECKING:
    from rankwise.models import Embedder


@dataclass
class IngestReport:
    count: int = 0  # records written in this run
    skipped_done: int = 0  # records skipped because a checkpoint said they were done
    invalid: list[str] = field(default_factory=list)  # messages of skipped bad rows
    failed_batches: list[str] = field(default_factory=list)
    seconds: float = 0.0
    total_in_store: int = 0

    @property
    def docs_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "skipped_done": self.skipped_done,
            "invalid": self.invalid,
            "failed_batches": self.failed_batches,
            "seconds": round(self.seconds, 3),
            "docs_per_s": round(self.docs_per_s, 1),
            "total_in_store": self.total_in_store,
        }


def _served(embedder: Any) -> dict[str, str]:
    served = getattr(embedder, "served_model", None)
    return {"served_model": served} if isinstance(served, str) and served else {}


def native_outputs(store: Store, outputs: Sequence[str] | None = None) -> tuple[str, ...]:
    """The bge-m3 outputs ``store`` keeps itself (by its ``"sparse"`` capability): ``sparse``
    when an existing index holds it, or a new one is asked for it (``outputs``)."""
    if "sparse" not in store.capabilities:
        return ()
    return ("sparse",) if store.dim is not None or "sparse" in (outputs or ()) else ()


def side_index(
    store: Store, outputs: Sequence[str] | None = None, native: Sequence[str] = ()
) -> SideIndex | None:
    """The sparse/ColBERT :class:`SideIndex` beside ``store``: the one it has, or a new one
    when ``outputs`` ask for sparse or colbert that the store does not keep (``native``);
    ``None`` when nothing is kept beside it."""
    side_dir = getattr(store, "side_dir", None)
    folder = side_path(store.uri, side_dir)
    extra = tuple(o for o in (outputs or ()) if o not in ("dense", *native))
    if not (extra or SideIndex.exists(folder)):
        return None
    if folder is not None and side_dir and "://" in store.uri:
        claim(folder, store.uri, getattr(store, "collection", ""))
    if folder is None:
        version = getattr(store, "server_version", "")
        need = {
            "sparse": f"learned sparse weights need Milvus >= 2.4 (SPARSE_FLOAT_VECTOR; this "
            f"server runs {version or 'an older version'})",
            "colbert": "ColBERT vectors are kept in files beside the index (rankwise does not "
            "store Milvus embedding lists)",
        }
        raise StoreError(
            f"{store.uri} is a server URI and cannot keep {'/'.join(extra)} itself: "
            + "; ".join(need[o] for o in extra if o in need)
            + ". Fix: name a local folder for them with side_dir (--side-dir, "
            "RANKWISE_SIDE_DIR), use a LanceDB directory or a Milvus Lite file"
            + (", or a newer Milvus server." if "sparse" in extra else ".")
        )
    return SideIndex(folder)


class Catalog:
    """A store and its embedder. ``Catalog.open("./index", embedder)`` to start.

    ``embedder=None`` opens a catalog for lexical search only (no model is loaded); dense
    search and writes then say an embedder is needed.
    """

    def __init__(self, store: Store, embedder: Embedder | None, side: SideIndex | None = None):
        self.store = store
        self.embedder = embedder
        #: bge-m3's sparse weights / ColBERT vectors beside the store (``None``: dense only).
        self.side = side
        self.side_outputs: tuple[str, ...] = side.outputs if side is not None else ()
        #: bge-m3 outputs the store keeps itself (``("sparse",)`` on Milvus >= 2.4 / Lite).
        self.native_outputs: tuple[str, ...] = native_outputs(store)
        self._defer_side = False
        #: Bumped by every write through this catalog; part of the Searcher's cache key.
        self.generation = 0
        self._meta_written = False
        self._check_embedder()

    def close(self) -> None:
        """Flush and release the store (Milvus seals and indexes segments; Lance compacts)."""
        self.store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def open(
        cls,
        uri: str,
        embedder: Embedder | None,
        *,
        create: bool = True,
        outputs: Sequence[str] | None = None,
        **store_options: Any,
    ) -> Catalog:
        """``outputs`` (any of ``sparse``, ``colbert`` besides dense) keeps bge-m3's other
        outputs in a :class:`SideIndex` beside the store; an index that has one opens it."""
        store = open_store(uri, create=create, **store_options)
        native = native_outputs(store, outputs)
        try:
            catalog = cls(store, embedder, side_index(store, outputs, native))
        except BaseException:  # a refused embedder or side index: release the store first
            store.close()
            raise
        catalog.native_outputs = native
        extra = tuple(o for o in (outputs or ()) if o not in ("dense", *native))
        if extra:
            catalog.side_outputs = tuple(dict.fromkeys(catalog.side_outputs + extra))
        return catalog

    @property
    def stamp(self) -> dict[str, Any] | None:
        """The embedder stamp kept inside the store (``model``, ``version``, ``dim``)."""
        return self.store.read_stamp()

    def require_embedder(self) -> Embedder:
        if self.embedder is None:
            raise StoreError(
                f"this catalog of {self.store.uri} was opened without an embedder (lexical "
                "search only); open it with the embedder it was built with"
            )
        return self.embedder

    # -- embedder bookkeeping: an index embedded with one model must not be searched with
    # another. The stamp lives inside every store (Store.read_stamp), so this holds for
    # LanceDB directories, Milvus Lite files and Milvus servers alike.
    def _check_embedder(self) -> None:
        if self.embedder is None:
            return
        dim = self.store.dim
        if dim is not None and dim != self.embedder.dim:
            raise StoreError(
                f"index {self.store.uri} holds {dim}-dim vectors but embedder "
                f"{self.embedder.model_id} makes {self.embedder.dim}-dim vectors; "
                "use the embedder the index was built with, or re-index into a new directory"
            )
        meta = self.store.read_stamp()
        if meta is not None and meta.get("version") != self.embedder.version:
            raise StoreError(
                f"index {self.store.uri} was built with embedder {meta.get('model')} "
                f"(version {meta.get('version')}), not {self.embedder.model_id} "
                f"(version {self.embedder.version}); vectors from two models do not compare. "
                "Search with the embedder the index was built with (same model and revision), "
                "or re-index into a new directory"
            )
        self._meta_written = meta is not None and meta.get("version") == self.embedder.version

    def _write_meta(self) -> None:
        """Stamp the index with the embedder once per catalog, not once per batch."""
        if self._meta_written or self.embedder is None:
            return
        self.store.write_stamp(
            {
                "model": self.embedder.model_id,
                "version": self.embedder.version,
                "dim": self.embedder.dim,
                # a remote embedder: the model name its server reports
                **_served(self.embedder),
            }
        )
        self._meta_written = True

    # -- writes
    def upsert(self, records: Sequence[Record], *, schema: MetaSchema | None = None) -> int:
        """Embed and upsert already-validated records.

        ``schema`` (field → type) types a new store from the whole catalog rather than
        from this first batch; :meth:`ingest` computes it in its validation pass.
        """
        if not records:
            return 0
        texts = [document_text(r) for r in records]
        embedder = self.require_embedder()
        side = self.side_outputs if self.side is not None else ()
        sparse = None
        if side or self.native_outputs:  # one forward pass for all outputs
            out = embedder.encode_multi(texts, "document", ("dense", *self.native_outputs, *side))
            vectors = out.dense
            sparse = out.sparse if "sparse" in self.native_outputs else None
        else:
            vectors = embedder.encode_documents(texts)
        n = self.store.upsert(list(records), vectors, schema=schema, sparse=sparse)
        if side:
            self.side.upsert(
                [r["id"] for r in records],
                out.sparse if "sparse" in side else None,
                out.colbert if "colbert" in side else None,
            )
            if not self._defer_side:
                self.side.save()
        self.generation += 1
        self._write_meta()
        return n

    def add(
        self, products: Iterable[Mapping[str, Any]], mapping: FieldMapping | None = None
    ) -> int:
        """Validate and upsert products given as dicts."""
        records = [r for _, r in read_catalog(products, mapping)]
        return self.upsert(records, schema=self._catalog_schema(records))

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        n = self.store.delete(ids)
        if self.side is not None and self.side.delete(ids):
            self.side.save()
        self.generation += 1
        return n

    def _catalog_schema(self, records: Sequence[Record]) -> MetaSchema:
        return self._check_schema(resolve_schema(scan_types(records)))

    def _check_schema(self, schema: MetaSchema) -> MetaSchema:
        """Fail before writing when the catalog does not fit an existing store's fields."""
        existing = getattr(self.store, "schema", None) if self.store.dim is not None else None
        if not existing:
            return schema
        for name, ftype in schema.items():
            have = existing.get(name)
            if have is None:
                raise SchemaMismatch(
                    f"catalog field '{name}' is not in index {self.store.uri} "
                    f"(its fields: {', '.join(sorted(existing)) or 'none'}); "
                    "drop it with --fields metadata=..., or re-index into a new directory"
                )
            if have != ftype and not (have == "float" and ftype == "int"):
                raise SchemaMismatch(
                    f"catalog field '{name}' holds {ftype} values but index {self.store.uri} "
                    f"stores {have}; convert the values, or re-index into a new directory"
                )
        return existing

    def ingest(
        self,
        source: str | Path | Iterable[Mapping[str, Any]],
        mapping: FieldMapping | None = None,
        *,
        batch_size: int = 256,
        show_progress: bool = True,
        skip_invalid: bool = False,
        resume: bool = True,
        checkpoint: str | Path | None = None,
    ) -> IngestReport:
        """Stream ``source`` into the store; see the module docstring for the guarantees."""
        report = IngestReport()
        t0 = time.perf_counter()
        if not isinstance(source, str | Path):
            source = list(source)  # two passes below: a generator would be empty the second time
        # Pass 1: validate everything and type every metadata field over the whole catalog
        # before writing anything (strict), or collect the skipped rows' messages.
        types: dict[str, set[str]] = {}
        total = 0
        for _, record in read_catalog(
            source, mapping, skip_invalid=skip_invalid, errors=report.invalid
        ):
            scan_types([record], types)
            total += 1
        schema = self._check_schema(resolve_schema(types))
        identity = {
            "mapping": repr(mapping),
            "skip_invalid": skip_invalid,
            "embedder": self.require_embedder().version,
        }
        # The side index (sparse/colbert) is written once at the end of an ingest (rewriting
        # it per batch would cost O(n²)), so such an ingest does not checkpoint per batch.
        side = self.side is not None and bool(self.side_outputs)
        ckpt = (
            IngestCheckpoint.for_source(source, self.store.uri, checkpoint, identity)
            if resume and not side
            else None
        )
        self._defer_side = side
        done = ckpt.load() if ckpt else 0
        done = min(done, total)
        report.skipped_done = done
        bar = tqdm(
            total=total,
            initial=done,
            unit="doc",
            desc="index",
            disable=not show_progress,
            smoothing=0.1,
        )
        batch: list[Record] = []
        position = 0

        def flush() -> None:
            nonlocal batch
            for attempt in (1, 2):
                try:
                    report.count += self.upsert(batch, schema=schema)
                    break
                except RankwiseError:
                    raise
                except Exception as e:  # a store/IO failure: retry once, then report the batch
                    if attempt == 2:
                        report.failed_batches.append(
                            f"records {position - len(batch) + 1}-{position}: {type(e).__name__}: {e}"
                        )
                        batch = []
                        return
            if ckpt and not report.failed_batches:
                ckpt.save(position)
            bar.update(len(batch))
            batch = []

        for _, record in read_catalog(source, mapping, skip_invalid=skip_invalid, errors=[]):
            position += 1
            if position <= done:
                continue
            batch.append(record)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        bar.close()
        if side:
            self._defer_side = False
            self.side.save()
        if ckpt and not report.failed_batches:
            ckpt.clear()
        report.seconds = time.perf_counter() - t0
        report.total_in_store = self.store.count()
        return report
