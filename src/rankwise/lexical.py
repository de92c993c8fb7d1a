"""BM25 with language-aware tokenisation (jieba for Chinese, stemming for English).

Used by the embedded store (kept beside the LanceDB table) and by the Milvus backend when
the server has no native BM25. The index is a :mod:`bm25s` sparse matrix, rebuilt in full
after writes (bm25s has no incremental update) and saved atomically:

    <dir>/CURRENT          {"dir": "v<table-version>-<nonce>", "stamp": {...}}  (os.replace)
    <dir>/v12-3f2a.../     bm25s files + ids.json

A reader follows ``CURRENT``; a crash while building leaves the previous index in place
and an orphan directory that the next save removes.

Why bm25s and not LanceDB's own full-text index (measured by
``benchmarks/lexical_choice.py``, 300 test queries each, results in
``benchmarks/results/lexical_choice.md``): LanceDB's ``jieba/default`` tokeniser needs a
model downloaded into ``LANCE_LANGUAGE_MODEL_HOME`` (unavailable offline). Its offline
``icu`` tokeniser matches us on Chinese (KUAKE-QTR nDCG@10 0.659 vs 0.643) but loses on
English (Home Depot 0.421 with stemming vs 0.460), its ``simple`` tokeniser is on par in
English (0.455) but useless on Chinese (0.043), and one FTS index has one tokeniser,
whereas ours picks per text run, so mixed catalogs get both. LanceDB FTS builds ~10x
faster (0.4-0.8 s vs 4-5 s) and is incremental, but queries take 3-7 ms vs 0.15 ms here.
bm25s is also what the Milvus 2.3 backend needs (no native BM25 there), so one
tokeniser serves every backend.

Scaling: a rebuild tokenises every product (~20-60k titles/s English, ~5-10k/s Chinese on
one core), so rebuild-after-write is fine up to a few hundred thousand products; past
that, use the Milvus backend with native BM25 (Milvus >= 2.5 / milvus-lite 3.x).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN

#: Bump when tokenisation changes: stored indexes with another version are rebuilt.
TOKENIZER_VERSION = 1

_CJK_RUN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)")
_WORD = re.compile(r"[^\W_]+")
_STOP_EN = frozenset(STOPWORDS_EN)
_STOP_ZH = frozenset(STOPWORDS_CHINESE)


@lru_cache(maxsize=1)
def _stemmer():
    """Snowball English stemmer (PyStemmer, C, offline), or None if not installed."""
    try:
        import Stemmer
    except ImportError:  # pragma: no cover - optional dependency
        return None
    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def has_cjk(text: str) -> bool:
    return bool(_CJK_RUN.search(text))


def tokenize(text: str) -> list[str]:
    """Tokens for BM25, identical for documents and queries.

    CJK runs go through ``jieba.cut_for_search`` (so 苹果手机 yields 苹果, 手机 and
    苹果手机); everything else is lowercased, split on non-alphanumerics, stripped of
    English stopwords and single letters, and Snowball-stemmed. Mixed text (``iPhone 15 苹果手机``) gets both.
    """
    tokens: list[str] = []
    stem = _stemmer()
    for i, part in enumerate(_CJK_RUN.split(text)):
        if not part:
            continue
        if i % 2:  # odd parts are the CJK runs captured by the split
            tokens.extend(
                t for t in _jieba().cut_for_search(part) if t.strip() and t not in _STOP_ZH
            )
        else:
            words = [
                w
                for w in _WORD.findall(part.lower())
                if w not in _STOP_EN and (len(w) > 1 or w.isdigit())
            ]
            tokens.extend(stem.stemWords(words) if stem else words)
    return tokens


class LexicalIndex:
    """An in-memory BM25 index over ``ids`` (row i of the matrix is ``ids[i]``)."""

    def __init__(self, ids: list[str], retriever: bm25s.BM25 | None):
        self.ids = ids
        self._retriever = retriever  # None when the corpus is empty
        self._pos = {doc_id: i for i, doc_id in enumerate(ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls, ids: Sequence[str], texts: Sequence[str], *, show_progress: bool = False
    ) -> LexicalIndex:
        """Tokenise ``texts`` (one per id) and index them with BM25 (Lucene variant)."""
        ids = list(ids)
        if not ids:
            return cls([], None)
        corpus = [tokenize(t) for t in texts]
        if not any(corpus):  # nothing to match (bm25s cannot index an empty vocabulary)
            return cls(ids, None)
        retriever = bm25s.BM25()
        retriever.index(corpus, show_progress=show_progress)
        return cls(ids, retriever)

    def mask_for(self, allowed_ids: Sequence[str]) -> np.ndarray:
        """A float32 (n_docs,) weight mask: 1 for ``allowed_ids`` present here, else 0."""
        mask = np.zeros(len(self.ids), dtype=np.float32)
        idx = [self._pos[i] for i in allowed_ids if i in self._pos]
        mask[idx] = 1.0
        return mask

    def search(
        self, query: str, k: int, allowed_ids: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top-k ``(id, bm25_score)`` pairs, best first; only documents sharing a term.

        ``allowed_ids`` restricts scoring before the top-k cut (a prefilter): documents
        outside it get weight 0 and are never returned.
        """
        if self._retriever is None or k <= 0:
            return []
        q = [t for t in tokenize(query) if t in self._retriever.vocab_dict]
        if not q:
            return []
        mask = None if allowed_ids is None else self.mask_for(allowed_ids)
        scores = self._retriever.get_scores(q, weight_mask=mask)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in order]

    # -- persistence -------------------------------------------------------------------

    def save(self, directory: str | Path, stamp: dict[str, Any]) -> None:
        """Write atomically under ``directory`` with ``stamp`` (e.g. the table version)."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        name = f"v{stamp.get('version', 0)}-{uuid.uuid4().hex[:8]}"
        tmp = root / f".tmp-{name}"
        tmp.mkdir()
        if self._retriever is not None:
            self._retriever.save(str(tmp), show_progress=False)
        (tmp / "ids.json").write_text(json.dumps(self.ids, ensure_ascii=False))
        _fsync_dir(tmp)
        os.rename(tmp, root / name)
        stamp = {**stamp, "tokenizer": TOKENIZER_VERSION, "n_docs": len(self.ids)}
        atomic_write_json(root / "CURRENT", {"dir": name, "stamp": stamp})
        for old in root.iterdir():  # previous versions and crashed builds
            if old.name not in (name, "CURRENT") and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, directory: str | Path) -> tuple[LexicalIndex, dict[str, Any]] | None:
        """The index ``CURRENT`` points to and its stamp, or None if absent/unreadable."""
        root = Path(directory)
        try:
            current = json.loads((root / "CURRENT").read_text())
            path = root / current["dir"]
            stamp = current["stamp"]
            if stamp.get("tokenizer") != TOKENIZER_VERSION:
                return None
            ids = json.loads((path / "ids.json").read_text())
            retriever = (
                bm25s.BM25.load(str(path), mmap=False, show_progress=False, verbosity=0)
                if ids
                else None
            )
        except (OSError, ValueError, KeyError):
            return None
        return cls(ids, retriever), stamp


def atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
