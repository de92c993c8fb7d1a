"""Evaluation indexes, built once per dataset and embedder and reused from a cache dir.

Layout under ``index_dir``::

    <dataset>-<corpus fingerprint>-<embedder version>/
        vectors.npy, ids.json      document vectors of the whole corpus (embedded once)
        global/                    store over the whole corpus (global pool)
        test-<pool fingerprint>/   store over the test pool of one qrels split

Both stores are filled from the same vectors, so the test pool costs no extra embedding.
A store is reused when its ``rankwise-eval.json`` stamp matches what would be built
(document count, fingerprints, embedder version); otherwise it is rebuilt from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankwise.catalog import Catalog
from rankwise.data import document_text
from rankwise.store import open_store

if TYPE_CHECKING:
    from rankwise.models import Embedder

STAMP = "rankwise-eval.json"


def fingerprint(items: Mapping[str, Any] | list[str]) -> str:
    """Short stable hash of a corpus (ids and texts) or a list of ids."""
    h = hashlib.sha1()
    if isinstance(items, Mapping):
        for doc_id in sorted(items):
            h.update(f"{doc_id}\x1f{document_text(items[doc_id])}\x1e".encode())
    else:
        for doc_id in sorted(items):
            h.update(f"{doc_id}\x1e".encode())
    return h.hexdigest()[:12]


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def corpus_vectors(
    corpus: Mapping[str, Mapping[str, str]],
    embedder: Embedder,
    root: Path,
    *,
    show_progress: bool = True,
    log=print,
) -> tuple[list[str], np.ndarray]:
    """Document vectors of ``corpus`` (float32 (n, dim), rows in ``ids`` order), cached."""
    ids_path, vec_path = root / "ids.json", root / "vectors.npy"
    ids = sorted(corpus)
    if ids_path.exists() and vec_path.exists() and json.loads(ids_path.read_text()) == ids:
        return ids, np.load(vec_path)
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    vectors = embedder.encode_documents(
        [document_text(corpus[i]) for i in ids], show_progress=show_progress
    )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    log(f"embedded {len(ids)} documents in {time.perf_counter() - t:.1f}s")
    tmp = root / "vectors.tmp.npy"
    np.save(tmp, vectors)
    os.replace(tmp, vec_path)
    _atomic_json(ids_path, ids)
    return ids, vectors


def corpus_side(
    corpus: Mapping[str, Mapping[str, str]],
    embedder: Embedder,
    root: Path,
    outputs: tuple[str, ...],
    *,
    log=print,
):
    """bge-m3's sparse weights / ColBERT vectors of ``corpus`` in a side index under
    ``root/m3-<outputs>``, embedded once and reused (the run's cascades read them by id)."""
    from rankwise.store.side import SideIndex

    folder = root / ("m3-" + "-".join(outputs))
    side = SideIndex(folder)
    ids = sorted(corpus)
    if SideIndex.exists(folder) and all(
        json.loads((folder / "side.json").read_text()).get(o) == len(ids) for o in outputs
    ):
        return side
    t = time.perf_counter()
    for start in range(0, len(ids), 1024):
        chunk = ids[start : start + 1024]
        out = embedder.encode_multi([document_text(corpus[i]) for i in chunk], "document", outputs)
        side.upsert(chunk, out.sparse, out.colbert)
    side.save()
    log(f"embedded {'/'.join(outputs)} of {len(ids)} documents in {time.perf_counter() - t:.1f}s")
    return side


def pool_catalog(
    corpus: Mapping[str, Mapping[str, str]],
    doc_ids: list[str] | None,
    embedder: Embedder,
    root: Path,
    name: str,
    *,
    ids: list[str],
    vectors: np.ndarray,
    log=print,
) -> Catalog:
    """A Catalog over ``doc_ids`` (None = all of ``ids``) under ``root/name``, reused if stamped."""
    wanted = ids if doc_ids is None else sorted(doc_ids)
    stamp = {
        "count": len(wanted),
        "pool": fingerprint(wanted),
        "embedder": embedder.version,
    }
    path = root / name
    stamp_path = path / STAMP
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return Catalog(open_store(str(path), create=False), embedder)
    if path.exists():
        shutil.rmtree(path)
    t = time.perf_counter()
    row = {d: i for i, d in enumerate(ids)}
    records = [{"id": d, **{k: corpus[d].get(k) or "" for k in ("title", "text")}} for d in wanted]
    store = open_store(str(path))
    store.upsert(records, vectors[[row[d] for d in wanted]])
    _atomic_json(stamp_path, stamp)
    log(f"indexed {len(wanted)} documents into {path} in {time.perf_counter() - t:.1f}s")
    return Catalog(store, embedder)


def dataset_root(index_dir: str | Path, name: str, corpus: Mapping, embedder: Embedder) -> Path:
    """The cache folder for one dataset (by corpus fingerprint) and one embedder version."""
    return Path(index_dir) / f"{name}-{fingerprint(corpus)}-{embedder.version}"
