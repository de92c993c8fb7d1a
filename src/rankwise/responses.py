"""What a search returns and the steps that assemble it, shared by the two-stage path
(:meth:`rankwise.search.Searcher.search`) and the cascade (:mod:`rankwise.cascade`):
results without a rerank, the final blend stage and the cut to N, and the cache key.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rankwise.blend import BlendStage
    from rankwise.recipe import RecallRecipe
    from rankwise.search import Searcher
    from rankwise.store import Hit
    from rankwise.store.filters import Filter


@dataclass
class SearchResult:
    """One product in a response. ``rerank_score`` is the raw logit, ``relevance`` its sigmoid."""

    id: str
    rank: int
    recall_score: float
    recall_rank: int
    rerank_score: float | None = None
    relevance: float | None = None
    record: dict[str, Any] = field(default_factory=dict)
    blend_score: float | None = None  # the blend stage's score (rankwise.blend), when one runs
    explain: dict[str, Any] | None = None  # per-feature contributions (search(explain=True))
    colbert_score: float | None = None  # MaxSim, when a cascade rescored with ColBERT


@dataclass
class SearchResponse:
    query: str
    mode: str
    results: list[SearchResult]
    reranked: bool
    skipped_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    language: str | None = None  # detected query language (calibrated pipelines route by it)
    recipe: str | None = None  # the recall recipe used, e.g. "hybrid rrf k=10 w=0.67/0.33"
    stages: list[dict[str, Any]] | None = None  # a cascade's stages: depth, scored, seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchResponse:
        d = dict(d)
        d["results"] = [SearchResult(**r) for r in d["results"]]
        return cls(**d)


class Cache(Protocol):
    """What the Searcher needs from a cache (in-process LRU or Redis, see ``cache.py``)."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes) -> None: ...


def recall_results(
    hits: Sequence[Hit], recall_rank: Mapping[str, int] | None = None
) -> list[SearchResult]:
    """``hits`` as results in their recall order (no rerank ran); ``recall_rank``: each
    id's rank in the first stage when ``hits`` were reordered since (default: 1..)."""
    return [
        SearchResult(
            id=h.id,
            rank=i,
            recall_score=float(h.score),
            recall_rank=i if recall_rank is None else recall_rank[h.id],
            record=dict(h.record),
        )
        for i, h in enumerate(hits, 1)
    ]


def blend_depth(blend: BlendStage | None, candidates: int, n: int) -> int:
    """How many results the stages before the blend keep: all ``candidates`` when a blend
    runs (it reorders every one of them), else the final ``n``."""
    return candidates if blend is not None else n


def finish(
    blend: BlendStage | None,
    query: str,
    results: list[SearchResult],
    n: int,
    *,
    user: str | None,
    explain: bool,
    timings: dict[str, float],
) -> list[SearchResult]:
    """The last step of every search: the blend stage (when set) reorders ``results``
    (timed as ``"blend"``), then the Top-``n`` are kept."""
    if blend is None:
        return results[:n]
    t = time.perf_counter()
    out = blend.apply(query, results, user=user, explain=explain)[:n]
    timings["blend"] = time.perf_counter() - t
    return out


def cache_key(
    searcher: Searcher,
    query: str,
    recipe: RecallRecipe,
    top_k: int,
    top_n: int,
    flt: Filter | None,
    rerank: bool,
    threshold: float | None,
) -> str:
    """The cache key of one search: every setting that can change its response."""
    parts = {
        "q": query,
        "m": recipe.to_dict(),
        "pl": searcher.pipeline.to_dict()["rerank"],
        "k": top_k,
        "n": top_n,
        # typed values: {"price": 10} and {"price": "10"} are different filters
        "f": [[c.field, c.op, repr(c.value)] for c in flt.conditions] if flt else None,
        "r": rerank,
        "t": searcher.threshold if threshold is None else threshold,
        "e": getattr(searcher.catalog.embedder, "version", None),
        "x": searcher.reranker.version if (rerank and searcher.reranker is not None) else None,
        "s": searcher.catalog.store.uri,
        "g": getattr(searcher.catalog, "generation", 0),  # writes through this catalog
        "skip": repr(searcher.skip_rule),
        "chars": searcher.rerank_max_chars,
        **_stage_parts(searcher),
    }
    return (
        "rankwise:search:"
        + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    )


def _stage_parts(searcher: Searcher) -> dict[str, Any]:
    """Cache-key parts of the template, chunking and blend stages (only those set)."""
    parts: dict[str, Any] = {}
    if searcher.template is not None:
        parts["tpl"] = searcher.template.to_dict()
    if searcher.chunking is not None:
        parts["chunk"] = repr(searcher.chunking)
    if searcher.blend is not None:
        parts["blend"] = searcher.blend.version
    return parts


def generation(cache: Cache | None) -> int | None:
    """The cache's invalidation generation when it has one (see ``rankwise.cache``)."""
    return getattr(cache, "generation", None) if cache is not None else None
