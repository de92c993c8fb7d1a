"""Searcher: recall → (skip rule) → rerank → threshold → Top-N, with an optional cache.

Recall modes:

* ``dense``: cosine similarity of the query vector against product vectors.
* ``lexical``: BM25 over title + description.
* ``hybrid`` (default): both lists (each Top-K) fused, by reciprocal-rank fusion
  (``score = Σ 1 / (rrf_k + rank)``, ``rrf_k=60`` as in Cormack et al.) or by a weighted
  sum of min-max normalised scores (``fusion="weighted"``, ``weights=(dense, lexical)``).

Filters are handed to the store, which applies them *before* its Top-K cut, so a filtered
search returns K matching products rather than the matching part of an unfiltered K.

Reranking scores the fused Top-K with the cross-encoder (raw fp32 logits, and
``relevance = sigmoid(logit)`` in 0..1), keeps those with ``relevance >= threshold`` and
returns the Top-N. The skip rule may decide the first stage is already sure (see
:class:`SkipRule`); the response then says ``reranked=False`` and why.

Calibrated pipeline: when no mode is given (``mode=None``, the default), the Searcher uses
the :class:`~rankwise.recipe.Pipeline` chosen for this catalog by ``rankwise tune fusion``
(stored beside the index): the query's language picks a recall recipe (mode, fusion, RRF
``k``, weights, depth), and a reranker recorded there as not promoted is skipped with
``skipped_reason="reranker not promoted for this catalog"``; one promoted with a weight
below 1 orders the Top-K by its logit interpolated with the recall score
(:func:`rankwise.ranking.interpolate`). Without a stored pipeline, or
with an explicit ``mode``, the constructor's ``mode``/``fusion``/``rrf_k``/``weights`` apply
(``hybrid`` RRF with k=60 by default).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rankwise.cascade import parse_cascade, run_cascade
from rankwise.catalog import Catalog
from rankwise.config import DEFAULT_TOP_K, DEFAULT_TOP_N
from rankwise.errors import InvalidRequest
from rankwise.fusion import fuse, native_hybrid, rrf_fuse, weighted_fuse  # noqa: F401 - re-exported
from rankwise.ranking import cut_order, interpolate, sigmoid
from rankwise.recipe import MODES, Mode, Pipeline, RecallRecipe, find_pipeline
from rankwise.responses import (  # noqa: F401 - SearchResponse/Cache re-exported
    Cache,
    SearchResponse,
    SearchResult,
    blend_depth,
    cache_key,
    finish,
    generation,
    recall_results,
)
from rankwise.skip import SkipRule  # noqa: F401 - re-exported (rankwise.SkipRule)
from rankwise.store import Hit
from rankwise.store.filters import Filter, build_filter
from rankwise.templates import rerank_logits

if TYPE_CHECKING:
    from rankwise.blend import BlendStage
    from rankwise.models import Reranker
    from rankwise.models.chunking import ChunkPolicy
    from rankwise.templates import DocumentTemplate

NOT_PROMOTED = "reranker not promoted for this catalog"


class Searcher:
    """Two-stage search over a :class:`Catalog`.

    >>> searcher = Searcher(catalog, reranker=Reranker())
    >>> searcher.search("summer running shoes", filters={"price": {"lt": 100}}).results[0].id
    """

    def __init__(
        self,
        catalog: Catalog,
        reranker: Reranker | None = None,
        *,
        top_k: int = DEFAULT_TOP_K,
        top_n: int = DEFAULT_TOP_N,
        mode: Mode | None = None,
        fusion: Literal["rrf", "weighted"] = "rrf",
        rrf_k: int = 60,
        weights: tuple[float, float] = (0.5, 0.5),
        threshold: float | None = None,
        skip_rule: SkipRule | None = None,
        cache: Cache | None = None,
        rerank_max_chars: int | None = 2000,
        pipeline: Pipeline | Literal["auto"] | None = "auto",
        template: DocumentTemplate | None = None,
        chunking: ChunkPolicy | None = None,
        blend: BlendStage | None = None,
        cascade: str | None = None,
    ):
        """``cascade`` (e.g. ``"hybrid:200,colbert:50,rerank:10"``, see :mod:`rankwise.cascade`)
        replaces recall + rerank with those stages. ``mode=None`` follows the calibrated ``pipeline`` (``"auto"``: the one stored beside
        the catalog's index, if any), else hybrid; an explicit ``mode`` uses ``fusion``,
        ``rrf_k`` and ``weights`` as given. ``template`` builds the rerank text from the
        record's fields (default: title + description, cut at ``rerank_max_chars``);
        ``chunking`` scores long documents window by window (``rankwise.models.chunking``);
        ``blend`` reorders the reranked Top-K by a learned blend (``rankwise.blend``)."""
        self.catalog = catalog
        self.reranker = reranker
        self.top_k, self.top_n = top_k, top_n
        self.mode = None if mode is None else self._check_mode(mode)
        # the manual recipe: used with an explicit mode, or when nothing was calibrated
        self.manual = RecallRecipe(mode or "hybrid", fusion, rrf_k, tuple(weights))
        if pipeline == "auto":
            pipeline = find_pipeline(catalog.store.uri)
        if pipeline is None:  # uncalibrated: the manual recipe, routed by the embedder's languages
            spec = getattr(catalog.embedder, "spec", None)
            pipeline = Pipeline(self.manual, dense_languages=getattr(spec, "languages", None))
        self.pipeline: Pipeline = pipeline
        self.threshold = threshold
        self.skip_rule = skip_rule
        self.cache = cache
        self.rerank_max_chars = rerank_max_chars
        self.template, self.chunking, self.blend = template, chunking, blend
        self.cascade = parse_cascade(cascade) if cascade else None

    @classmethod
    def from_settings(
        cls, settings: Any, catalog: Catalog, reranker: Reranker | None = None, **overrides: Any
    ) -> Searcher:
        """The Searcher a :class:`rankwise.config.Settings` describes (Top-K, Top-N, mode,
        fusion, ``min_relevance``, the skip rule with ``skip_margin``): the one place the CLI,
        the server, eval and the demo turn settings into a Searcher. ``overrides`` are
        constructor arguments that win (e.g. the demo's ``top_n=5``)."""
        kwargs = {
            "top_k": settings.top_k,
            "top_n": settings.top_n,
            "mode": settings.mode,
            "fusion": settings.fusion,
            "threshold": settings.min_relevance,
            "skip_rule": SkipRule(min_margin=settings.skip_margin),
            **overrides,
        }
        return cls(catalog, reranker, **kwargs)

    @property
    def store(self):
        return self.catalog.store

    @staticmethod
    def _check_mode(mode: str) -> str:
        if mode not in MODES:
            raise InvalidRequest(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        return mode

    # ------------------------------------------------------------------ first stage
    def route(self, query: str, mode: str | None = None) -> tuple[str | None, RecallRecipe]:
        """The query's language (when a pipeline routes it) and the recipe for it."""
        if mode is not None:
            mode = self._check_mode(mode)
            return None, (
                self.manual if mode == self.manual.mode else _with_mode(self.manual, mode)
            )
        if self.mode is None:
            return self.pipeline.route(query)
        return None, self.manual

    def recall(
        self,
        query: str,
        *,
        mode: str | None = None,
        top_k: int | None = None,
        filters: Filter | Mapping[str, Any] | Sequence[str] | None = None,
        query_vector: np.ndarray | None = None,
        timings: dict[str, float] | None = None,
        recipe: RecallRecipe | None = None,
    ) -> list[Hit]:
        """First-stage candidates, best first (fused in hybrid mode), by ``recipe``
        (default: :meth:`route`'s choice for ``query`` and ``mode``)."""
        recipe = recipe or self.route(query, mode)[1]
        k = top_k or self.top_k
        depth = max(k, recipe.depth or k)
        flt = build_filter(filters)
        timings = timings if timings is not None else {}
        lists: list[list[Hit]] = []
        if native_hybrid(self.store, recipe):
            # one round trip: the store fuses dense + BM25 by the same RRF (Milvus >= 2.5)
            t = time.perf_counter()
            if query_vector is None:
                query_vector = self.catalog.require_embedder().encode_queries([query])[0]
            timings["embed"] = time.perf_counter() - t
            t = time.perf_counter()
            vec = np.asarray(query_vector, dtype=np.float32)
            native = self.store.hybrid_search(vec, query, depth, flt, rrf_k=recipe.rrf_k)
            timings["hybrid"] = time.perf_counter() - t
            w = recipe.weights[0]  # rrf_fuse's scores: w / (k + rank) summed
            hits = [Hit(h.id, w * h.score, h.record) for h in native]
            timings["recall"] = timings["hybrid"] + timings["embed"]
            return hits[:k]
        if recipe.mode in ("dense", "hybrid"):
            t = time.perf_counter()
            if query_vector is None:
                query_vector = self.catalog.require_embedder().encode_queries([query])[0]
            timings["embed"] = time.perf_counter() - t
            t = time.perf_counter()
            lists.append(
                self.store.dense_search(np.asarray(query_vector, dtype=np.float32), depth, flt)
            )
            timings["dense"] = time.perf_counter() - t
        if recipe.mode in ("lexical", "hybrid"):
            t = time.perf_counter()
            lists.append(self.store.lexical_search(query, depth, flt))
            timings["lexical"] = time.perf_counter() - t
        hits = fuse(lists, recipe)
        timings["recall"] = (
            timings.get("dense", 0.0) + timings.get("lexical", 0.0) + timings.get("embed", 0.0)
        )
        return hits[:k]

    # ------------------------------------------------------------------ second stage
    def rerank(
        self,
        query: str,
        hits: Sequence[Hit],
        *,
        top_n: int | None = None,
        threshold: float | None = None,
        weight: float = 1.0,
    ) -> list[SearchResult]:
        """Score ``hits`` with the cross-encoder; keep relevance ≥ threshold; Top-N.

        ``weight`` < 1 orders by the reranker interpolated with the recall score (the
        promoted weight of this reranker, :class:`~rankwise.recipe.RerankDecision`);
        ``relevance`` and the threshold stay the reranker's own."""
        return self.rerank_results(
            hits, self.rerank_logits(query, hits), top_n=top_n, threshold=threshold, weight=weight
        )

    def rerank_logits(self, query: str, hits: Sequence[Hit]) -> np.ndarray:
        """The cross-encoder's raw logit for each of ``hits`` (in their order)."""
        if self.reranker is None:
            raise InvalidRequest("no reranker is configured; search with rerank=False")
        return rerank_logits(
            self.reranker, query, [h.record for h in hits], template=self.template,
            chunking=self.chunking, max_chars=self.rerank_max_chars,
        )  # fmt: skip

    def rerank_results(
        self,
        hits: Sequence[Hit],
        logits: np.ndarray,
        *,
        top_n: int | None = None,
        threshold: float | None = None,
        weight: float = 1.0,
    ) -> list[SearchResult]:
        """``hits`` ranked by their ``logits`` (interpolated with recall by ``weight``)."""
        n = top_n or self.top_n
        thr = self.threshold if threshold is None else threshold
        key = interpolate(logits, [h.score for h in hits], weight)
        order = cut_order(np.argsort(-key, kind="stable"), logits, threshold=thr, top_n=n)
        rel = sigmoid(logits)
        out = [
            SearchResult(
                id=hits[i].id,
                rank=rank,
                recall_score=float(hits[i].score),
                recall_rank=int(i) + 1,
                rerank_score=float(logits[i]),
                relevance=float(rel[i]),
                record=dict(hits[i].record),
            )
            for rank, i in enumerate(order, 1)
        ]
        return out

    # ------------------------------------------------------------------ both
    def search(
        self,
        query: str,
        *,
        mode: str | None = None,
        top_k: int | None = None,
        top_n: int | None = None,
        filters: Filter | Mapping[str, Any] | Sequence[str] | None = None,
        rerank: bool = True,
        threshold: float | None = None,
        query_vector: np.ndarray | None = None,
        user: str | None = None,
        explain: bool = False,
        cascade: str | None = None,
    ) -> SearchResponse:
        """``user`` feeds the blend stage's personal features; ``explain`` adds each
        result's blend feature contributions (``SearchResult.explain``)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequest("query must be a non-empty string")
        if cascade or self.cascade:  # the cascade's stages replace recall + rerank (not cached)
            return run_cascade(
                self, query, cascade or self.cascade, filters=filters, rerank=rerank,
                threshold=threshold, user=user, explain=explain,
            )  # fmt: skip
        language, recipe = self.route(query, mode or self.mode)
        mode = recipe.mode
        top_k, top_n = top_k or self.top_k, top_n or self.top_n
        if top_k < 1 or top_n < 1:
            raise InvalidRequest("top_k and top_n must be at least 1")
        flt = build_filter(filters)
        do_rerank = rerank and self.reranker is not None
        # A caller-supplied vector may not come from this embedder: never cache those.
        key = None
        if self.cache is not None and query_vector is None:
            key = cache_key(self, query, recipe, top_k, top_n, flt, do_rerank, threshold)
            if self.blend is not None:  # personal and explained bodies are their own entries
                key += ":" + hashlib.sha256(f"{user}\0{explain}".encode()).hexdigest()[:16]
        gen = generation(self.cache)
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                resp = SearchResponse.from_dict(json.loads(hit))
                resp.cached = True
                return resp
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        hits = self.recall(
            query, top_k=top_k, filters=flt, query_vector=query_vector, timings=timings,
            recipe=recipe,
        )  # fmt: skip
        skipped = None
        decision = (
            self.pipeline.rerank_decision(getattr(self.reranker, "version", None))
            if do_rerank
            else None
        )
        if decision is not None and not decision.promoted:
            skipped = NOT_PROMOTED
        if do_rerank and skipped is None and self.skip_rule is not None:
            skipped = self.skip_rule.reason(query, hits, mode)
        # the blend stage reorders every candidate, so the stages before it keep them all
        keep = blend_depth(self.blend, top_k, top_n)
        if do_rerank and skipped is None:
            t = time.perf_counter()
            weight = decision.weight if decision is not None else 1.0
            results = self.rerank(query, hits, top_n=keep, threshold=threshold, weight=weight)
            timings["rerank"] = time.perf_counter() - t
        else:
            results = recall_results(hits[:keep])
            if rerank and self.reranker is None:
                skipped = "no reranker configured"
        results = finish(
            self.blend, query, results, top_n, user=user, explain=explain, timings=timings
        )
        timings["total"] = time.perf_counter() - t0
        resp = SearchResponse(
            query,
            mode,
            results,
            reranked=do_rerank and skipped is None,
            skipped_reason=skipped,
            timings=timings,
            language=language,
            recipe=recipe.label(),
        )
        # Only store if nothing was invalidated while we searched: otherwise a result computed
        # from the old catalog would be cached under the new generation.
        if key is not None and generation(self.cache) == gen:
            self.cache.set(key, json.dumps(resp.to_dict()).encode())
        return resp


def _with_mode(recipe: RecallRecipe, mode: str) -> RecallRecipe:
    return replace(recipe, mode=mode)
