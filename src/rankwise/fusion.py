"""First-stage fusion: one list of hits from a dense and a lexical list.

* :func:`rrf_fuse`: reciprocal-rank fusion, ``score = Σ w / (rrf_k + rank)``.
* :func:`weighted_fuse`: weighted sum of min-max normalised scores.
* :func:`fuse`: the list a :class:`~rankwise.recipe.RecallRecipe` asks for.
* :func:`native_hybrid`: whether a store can fuse a recipe itself with the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rankwise.recipe import RecallRecipe
from rankwise.store import Hit


def rrf_fuse(
    lists: Sequence[Sequence[Hit]], k: int = 60, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Reciprocal-rank fusion; ties broken by first appearance. Returns fused hits."""
    scores: dict[str, float] = {}
    records: dict[str, dict[str, Any]] = {}
    for li, hits in enumerate(lists):
        w = 1.0 if weights is None else weights[li]
        for rank, h in enumerate(hits, 1):
            scores[h.id] = scores.get(h.id, 0.0) + w / (k + rank)
            records.setdefault(h.id, h.record)
    order = sorted(scores, key=lambda i: -scores[i])  # sorted() is stable: first seen wins ties
    return [Hit(i, scores[i], records[i]) for i in order]


def weighted_fuse(lists: Sequence[Sequence[Hit]], weights: Sequence[float]) -> list[Hit]:
    """Weighted sum of per-list min-max normalised scores (a missing hit contributes 0)."""
    scores: dict[str, float] = {}
    records: dict[str, dict[str, Any]] = {}
    for hits, w in zip(lists, weights, strict=True):
        if not hits:
            continue
        vals = np.array([h.score for h in hits], dtype=np.float64)
        lo, hi = float(vals.min()), float(vals.max())
        span = hi - lo
        for h, v in zip(hits, vals, strict=True):
            norm = (v - lo) / span if span > 0 else 1.0
            scores[h.id] = scores.get(h.id, 0.0) + w * norm
            records.setdefault(h.id, h.record)
    order = sorted(scores, key=lambda i: -scores[i])
    return [Hit(i, scores[i], records[i]) for i in order]


def fuse(lists: Sequence[Sequence[Hit]], recipe: RecallRecipe) -> list[Hit]:
    """The first-stage list of ``recipe`` from its dense and/or lexical lists."""
    if recipe.mode != "hybrid":
        return list(lists[0])
    if recipe.fusion == "rrf":
        return rrf_fuse(lists, recipe.rrf_k, recipe.weights)
    return weighted_fuse(lists, recipe.weights)


def native_hybrid(store: Any, recipe: RecallRecipe) -> bool:
    """Whether the store can fuse ``recipe`` itself with the same result: a store with the
    ``"hybrid"`` capability (Milvus >= 2.5, milvus-lite) does RRF with equal list weights;
    weighted fusion (Milvus normalises scores its own way) and unequal weights fuse here."""
    return (
        recipe.mode == "hybrid"
        and recipe.fusion == "rrf"
        and recipe.weights[0] == recipe.weights[1]
        and "hybrid" in getattr(store, "capabilities", ())
    )
