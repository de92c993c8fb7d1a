"""An inverted index of learned sparse weights (bge-m3's lexical weights), kept by rankwise.

Documents are rows of a (documents × vocabulary) CSR matrix of weights; a query is a handful
of (token id, weight) pairs, so its score against every document is the product of the
matrix's columns for those ids with the query weights: a column slice of the CSC view is the
posting list of a token. scipy's sparse matrices do that arithmetic (written by hand it would
be the same loops, slower); nothing here knows about models.

Files (in the folder given to :meth:`save`): ``sparse.npz`` (the CSR matrix, scipy's format)
and ``ids.json`` (row → product id), both written to temporary names and renamed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np


class SparseIndex:
    """Product id → ``{token_id: weight}``, searchable by a query's weights (dot product)."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[int, float]] = {}
        self._matrix = None  # CSC (docs × vocab), rebuilt after writes
        self._order: list[str] = []

    def __len__(self) -> int:
        return len(self._rows)

    def upsert(self, ids: Sequence[str], weights: Sequence[Mapping[int, float]]) -> None:
        """Insert or replace the weights of ``ids`` (one dict per id)."""
        for i, w in zip(ids, weights, strict=True):
            self._rows[str(i)] = {int(t): float(v) for t, v in w.items() if v > 0}
        self._matrix = None

    def delete(self, ids: Iterable[str]) -> int:
        n = sum(self._rows.pop(str(i), None) is not None for i in ids)
        if n:
            self._matrix = None
        return n

    def get(self, product_id: str) -> dict[int, float] | None:
        return self._rows.get(product_id)

    def _csr(self):
        from scipy.sparse import csr_matrix

        self._order = list(self._rows)
        indptr = np.zeros(len(self._order) + 1, dtype=np.int64)
        cols, vals = [], []
        for r, pid in enumerate(self._order):
            row = self._rows[pid]
            cols.extend(row.keys())
            vals.extend(row.values())
            indptr[r + 1] = indptr[r] + len(row)
        width = (max(cols) + 1) if cols else 1
        return csr_matrix(
            (np.asarray(vals, np.float32), np.asarray(cols, np.int64), indptr),
            shape=(len(self._order), width),
        )

    def scores(self, query: Mapping[int, float]) -> np.ndarray:
        """float32 (len(self),) dot products with ``query``, rows in :attr:`order`."""
        if self._matrix is None:
            self._matrix = self._csr().tocsc()
        m = self._matrix
        toks = [t for t in query if 0 <= t < m.shape[1]]
        if not toks or not len(self._order):
            return np.zeros(len(self._order), np.float32)
        q = np.asarray([query[t] for t in toks], np.float32)
        return np.asarray(m[:, toks] @ q, dtype=np.float32).ravel()

    @property
    def order(self) -> list[str]:
        """Product ids in the row order of :meth:`scores`."""
        if self._matrix is None:
            self._matrix = self._csr().tocsc()
        return self._order

    def search(
        self, query: Mapping[int, float], k: int, allowed: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top-``k`` (id, score) with score > 0, best first; ``allowed`` restricts the ids
        before the cut (ties: row order)."""
        s = self.scores(query)
        order = self.order
        if allowed is not None:
            s = s * np.fromiter((pid in allowed for pid in order), bool, len(order))
        hits = np.flatnonzero(s > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-s[hits], k - 1)[:k]]
        hits = hits[np.lexsort((hits, -s[hits]))]
        return [(order[i], float(s[i])) for i in hits]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        from scipy.sparse import save_npz

        folder.mkdir(parents=True, exist_ok=True)
        csr = self._csr()
        tmp = folder / "sparse.tmp.npz"
        save_npz(tmp, csr, compressed=False)
        (folder / "ids.tmp.json").write_text(json.dumps(self._order))
        os.replace(tmp, folder / "sparse.npz")
        os.replace(folder / "ids.tmp.json", folder / "ids.json")

    @classmethod
    def load(cls, folder: Path) -> SparseIndex:
        from scipy.sparse import load_npz

        index = cls()
        if not (folder / "sparse.npz").is_file():
            return index
        csr = load_npz(folder / "sparse.npz").tocsr()
        ids = json.loads((folder / "ids.json").read_text())
        for r, pid in enumerate(ids):
            lo, hi = csr.indptr[r], csr.indptr[r + 1]
            index._rows[pid] = dict(
                zip(csr.indices[lo:hi].tolist(), csr.data[lo:hi].tolist(), strict=True)
            )
        return index

    def memory_bytes(self) -> int:
        """Bytes of the searchable matrix (values, column ids, pointers)."""
        nnz = sum(len(r) for r in self._rows.values())
        return nnz * (4 + 8) + (len(self._rows) + 1) * 8
