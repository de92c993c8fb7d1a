"""Embedding texts with an on-disk cache, and exact inner-product search with faiss.

Mining and the before/after evaluation both embed the same corpus with the same model;
the cache (``<cache_dir>/<key>.npy``, key = hash of model version, input type and texts)
makes the second pass free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from rankwise.models import Embedder


def texts_key(embedder: Embedder, texts: Sequence[str], input_type: str) -> str:
    """A stable cache key for ``texts`` embedded by ``embedder`` as ``input_type``."""
    h = hashlib.sha1()
    h.update(f"{embedder.version}\x00{input_type}\x00{len(texts)}\x00".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def encode_cached(
    embedder: Embedder,
    texts: Sequence[str],
    input_type: Literal["query", "document"] = "document",
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """float32 (len(texts), dim), L2-normalised; read from / written to ``cache_dir``."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{texts_key(embedder, texts, input_type)}.npy"
        if path.exists():
            return np.load(path)
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    if input_type == "query":
        vecs = embedder.encode_queries(list(texts))
    else:
        vecs = embedder.encode_documents(list(texts), show_progress=show_progress)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vecs)
        tmp.replace(path)
    return vecs


def exact_search(
    doc_vectors: np.ndarray, query_vectors: np.ndarray, k: int, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for normalised vectors) with faiss ``IndexFlatIP``.

    Returns ``(scores, indices)``, both (n_queries, min(k, n_docs)), best first.
    """
    import faiss

    k = min(k, len(doc_vectors))
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(np.ascontiguousarray(doc_vectors, dtype=np.float32))
    scores, indices = [], []
    for start in range(0, len(query_vectors), batch_size):
        s, i = index.search(
            np.ascontiguousarray(query_vectors[start : start + batch_size], dtype=np.float32), k
        )
        scores.append(s)
        indices.append(i)
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.vstack(scores), np.vstack(indices)
