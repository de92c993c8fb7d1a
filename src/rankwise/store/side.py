"""Sparse weights and multi-vectors kept beside a store (bge-m3's second and third outputs).

A :class:`SideIndex` lives in a folder next to the store (``<index>/m3/`` for a LanceDB
directory, ``<file>.m3/`` beside a Milvus Lite file; for a Milvus server, the local folder
its ``side_dir`` option names, owned by one server collection: :func:`claim`) and holds, per
product id:

* ``sparse/``: learned lexical weights in an inverted index (:class:`SparseIndex`);
* ``colbert/``: the per-token vectors, float16, concatenated in ``tokens.npy`` with
  ``offsets.npy`` (row r = tokens[offsets[r]:offsets[r+1]]) and ``ids.json``; loaded
  memory-mapped, so only the rows a query rescores are read.

Why beside and not inside: LanceDB's multivector column needs a fixed per-row layout the rest
of the store does not use, and Milvus only stores embedding lists from 2.6 on; one format for
every backend keeps the cascade's ColBERT stage the same everywhere (the rows it reads are the
K1 candidates, by id). Float16 halves the disk and memory of the vectors; MaxSim over
normalised vectors changes in the fourth decimal. Writes are saved on :meth:`save` (the
catalog calls it per ingest batch) with temporary names and renames.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.store.sparse import SparseIndex

SIDE_DIR = "m3"


def side_path(uri: str, side_dir: str | Path | None = None) -> Path | None:
    """Where a store's side index lives: ``side_dir`` where one is given (the store's
    ``side_dir`` option), else ``<dir>/m3`` or ``<file>.m3``; ``None`` for a server URI
    without one."""
    from rankwise.store import backend_for

    if side_dir:
        return Path(side_dir)
    if "://" in uri:
        return None
    p = Path(uri)
    if backend_for(uri) != "milvus-lite":
        return p / SIDE_DIR
    # by backend, not by is_dir(): a milvus-lite 3.x "file" is a directory it owns, where
    # earlier builds put the side index (still read there if it is there)
    inside = p / SIDE_DIR
    return inside if SideIndex.exists(inside) else p.with_name(p.name + "." + SIDE_DIR)


def claim(folder: Path, uri: str, collection: str) -> None:
    """Mark ``folder`` as the side index of one server collection, or refuse it when it
    already belongs to another (vectors by product id of one catalog must never rescore
    another catalog's candidates). Local stores need no claim: the folder sits beside them."""
    owner = {"uri": uri, "collection": collection}
    path = folder / "store.json"
    if path.is_file():
        had = json.loads(path.read_text())
        if had != owner:
            from rankwise.errors import StoreError

            raise StoreError(
                f"side_dir {folder} holds the side index of {had.get('uri')} collection "
                f"{had.get('collection')!r}, not of {uri} collection {collection!r}: give "
                "each collection its own side_dir"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner) + "\n")


class SideIndex:
    """Sparse weights and ColBERT vectors by product id, persisted in ``folder``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.sparse = SparseIndex.load(self.folder / "sparse")
        self._vecs: dict[str, np.ndarray] = {}
        self._load_colbert()

    @classmethod
    def exists(cls, folder: Path | None) -> bool:
        return folder is not None and (folder / "side.json").is_file()

    def _load_colbert(self) -> None:
        d = self.folder / "colbert"
        if not (d / "tokens.npy").is_file():
            return
        tokens = np.load(d / "tokens.npy", mmap_mode="r")
        offsets = np.load(d / "offsets.npy")
        ids = json.loads((d / "ids.json").read_text())
        self._vecs = {pid: tokens[offsets[r] : offsets[r + 1]] for r, pid in enumerate(ids)}

    @property
    def outputs(self) -> tuple[str, ...]:
        """What this side index holds: any of ``sparse``, ``colbert``."""
        return tuple(
            o for o, n in (("sparse", len(self.sparse)), ("colbert", len(self._vecs))) if n
        )

    def upsert(
        self,
        ids: Sequence[str],
        sparse: Sequence[Mapping[int, float]] | None = None,
        colbert: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Insert or replace the sparse weights and/or ColBERT vectors of ``ids``."""
        if sparse is not None:
            self.sparse.upsert(ids, sparse)
        if colbert is not None:
            for pid, v in zip(ids, colbert, strict=True):
                self._vecs[str(pid)] = np.asarray(v, dtype=np.float16)

    def delete(self, ids: Iterable[str]) -> int:
        ids = [str(i) for i in ids]
        n = self.sparse.delete(ids)
        return max(n, sum(self._vecs.pop(i, None) is not None for i in ids))

    def colbert(self, ids: Sequence[str]) -> list[np.ndarray | None]:
        """The stored vectors of ``ids`` as float32 (tokens, dim), ``None`` where missing."""
        return [
            None if (v := self._vecs.get(i)) is None else np.asarray(v, np.float32) for i in ids
        ]

    def save(self) -> None:
        """Write both parts and ``side.json`` (counts and shapes)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if len(self.sparse):
            self.sparse.save(self.folder / "sparse")
        if self._vecs:
            d = self.folder / "colbert"
            d.mkdir(exist_ok=True)
            ids = list(self._vecs)
            lengths = np.array([len(self._vecs[i]) for i in ids], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            dim = next(iter(self._vecs.values())).shape[1]
            tokens = np.empty((int(offsets[-1]), dim), dtype=np.float16)
            for r, pid in enumerate(ids):
                tokens[offsets[r] : offsets[r + 1]] = self._vecs[pid]
            for name, arr in (("tokens", tokens), ("offsets", offsets)):
                with open(d / f"{name}.tmp.npy", "wb") as f:
                    np.save(f, arr)
            (d / "ids.tmp.json").write_text(json.dumps(ids))
            for name in ("tokens.npy", "offsets.npy", "ids.json"):
                os.replace(d / name.replace(".", ".tmp.", 1), d / name)
            self._load_colbert()  # back to memory-mapped rows
        (self.folder / "side.json").write_text(json.dumps(self.info()["counts"]) + "\n")

    def info(self) -> dict[str, Any]:
        """Counts, disk bytes and memory bytes, each also per product."""
        disk = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        n = max(len(self.sparse), len(self._vecs), 1)
        colbert_tokens = sum(len(v) for v in self._vecs.values())
        dim = next(iter(self._vecs.values())).shape[1] if self._vecs else 0
        sparse_mem = self.sparse.memory_bytes() if len(self.sparse) else 0
        colbert_mem = colbert_tokens * dim * 2
        return {
            "counts": {
                "sparse": len(self.sparse),
                "colbert": len(self._vecs),
                "colbert_tokens": colbert_tokens,
                "colbert_dim": dim,
            },
            "disk_bytes": disk,
            "disk_bytes_per_product": round(disk / n, 1),
            "memory_bytes": {"sparse": sparse_mem, "colbert": colbert_mem},
            "memory_bytes_per_product": {
                "sparse": round(sparse_mem / n, 1),
                "colbert": round(colbert_mem / n, 1),
            },
        }
