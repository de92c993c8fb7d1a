"""The cascade: recall to K1 → ColBERT MaxSim rescoring to K2 → cross-encoder to N.

A cascade is written as stages ``name:depth`` joined by commas, e.g.
``hybrid:200,colbert:50,rerank:10``:

* the first stage is a recall: ``dense``, ``lexical`` (or ``bm25``), ``hybrid`` (dense + BM25,
  fused as the Searcher fuses), ``sparse`` (bge-m3's learned lexical weights, from the
  catalog's side index) or ``fused`` (dense + BM25 + sparse by reciprocal-rank fusion, k=60);
* ``colbert:K2`` rescores the candidates by MaxSim of the query's and each product's
  ColBERT vectors and keeps the best K2;
* ``rerank:N`` scores what is left with the cross-encoder and returns the best N.

Stages come in that order, each at most once, with depths that never grow; the cross-encoder
therefore sees K2 (not K1) pairs. Every stage is timed; the response's ``stages`` lists each
with its depth, how many candidates it scored and its seconds. The query is encoded once for
all the outputs the cascade needs (dense, sparse and ColBERT come from one forward pass).

MaxSim follows ColBERT and FlagEmbedding's ``colbert_score``: for each query token the best
dot product with any document token, averaged over the query tokens (vectors normalised).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rankwise.errors import InvalidRequest, UnsupportedFeature
from rankwise.store import Hit

if TYPE_CHECKING:
    from rankwise.responses import SearchResponse
    from rankwise.search import Searcher

RECALLS = ("dense", "lexical", "bm25", "hybrid", "sparse", "fused")
RESCORERS = ("colbert", "rerank")
FUSED_RRF_K = 60


@dataclass(frozen=True)
class Stage:
    """One cascade stage: ``name`` (a recall mode, ``colbert`` or ``rerank``) and its depth."""

    name: str
    depth: int

    def label(self) -> str:
        return f"{self.name}:{self.depth}"


@dataclass(frozen=True)
class Cascade:
    """Stages in order: one recall, then optionally colbert, then optionally rerank."""

    stages: tuple[Stage, ...]

    @property
    def recall(self) -> Stage:
        return self.stages[0]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def label(self) -> str:
        return ",".join(s.label() for s in self.stages)

    def prefixes(self) -> list[Cascade]:
        """``recall``, ``recall,colbert``, ...: each prefix is a system of its own in eval."""
        return [Cascade(self.stages[: i + 1]) for i in range(len(self.stages))]

    def needs(self) -> tuple[str, ...]:
        """The query outputs this cascade uses (of dense, sparse, colbert)."""
        r = self.recall.name
        out = {"dense"} if r in ("dense", "hybrid", "fused") else set()
        if r in ("sparse", "fused"):
            out.add("sparse")
        if self.stage("colbert"):
            out.add("colbert")
        return tuple(o for o in ("dense", "sparse", "colbert") if o in out)


def parse_cascade(spec: str | Cascade) -> Cascade:
    """``"hybrid:200,colbert:50,rerank:10"`` → :class:`Cascade`; InvalidRequest naming the
    problem for anything else (unknown stage, bad depth, order, growing depth)."""
    if isinstance(spec, Cascade):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidRequest("cascade must be a string like 'hybrid:200,colbert:50,rerank:10'")
    stages: list[Stage] = []
    for i, part in enumerate(p.strip() for p in spec.split(",")):
        name, sep, depth = part.partition(":")
        name = name.strip().lower()
        allowed = RECALLS if i == 0 else RESCORERS
        if name not in allowed:
            where = "first (recall)" if i == 0 else f"stage {i + 1}"
            raise InvalidRequest(
                f"cascade {spec!r}: {where} stage {name!r} is not one of {', '.join(allowed)}"
            )
        try:
            k = int(depth)
        except ValueError:
            raise InvalidRequest(
                f"cascade {spec!r}: stage {name!r} needs a depth, e.g. {name}:50"
            ) from None
        if not sep or k < 1:
            raise InvalidRequest(f"cascade {spec!r}: the depth of {name!r} must be at least 1")
        if stages and k > stages[-1].depth:
            raise InvalidRequest(
                f"cascade {spec!r}: {name}:{k} is deeper than the {stages[-1].label()} before it"
            )
        if any(s.name == name for s in stages) or (
            name == "colbert" and any(s.name == "rerank" for s in stages)
        ):
            raise InvalidRequest(f"cascade {spec!r}: stages go recall, colbert, rerank, once each")
        stages.append(Stage("lexical" if name == "bm25" else name, k))
    return Cascade(tuple(stages))


def maxsim(query: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
    """float32 (len(docs),): mean over the query's tokens of the best dot product with any
    token of each document. ``query``: (q, dim); each doc: (t, dim). An empty doc scores 0."""
    q = np.asarray(query, dtype=np.float32)
    out = np.zeros(len(docs), dtype=np.float32)
    if not len(q):
        return out
    for i, d in enumerate(docs):
        if d is not None and len(d):
            out[i] = (q @ np.asarray(d, dtype=np.float32).T).max(axis=1).mean()
    return out


def _side(searcher: Searcher, output: str):
    side = getattr(searcher.catalog, "side", None)
    native = output in getattr(searcher.catalog, "native_outputs", ())
    if not native and (side is None or output not in side.outputs):
        raise UnsupportedFeature(
            f"the cascade needs {output} vectors but index {searcher.store.uri} holds none. "
            f"Fix: index with an embedder that has them (bge-m3) and "
            f"`rankwise index ... --outputs dense,sparse,colbert`."
        )
    return side


def sparse_recall(searcher: Searcher, weights: Mapping[int, float], k: int, flt: Any) -> list[Hit]:
    """Top-k by learned lexical weights; filters are applied before the cut: inside the store
    where it keeps the weights itself (Milvus' sparse field), else in the side index (the
    allowed ids come from the store's own records)."""
    side = _side(searcher, "sparse")
    if "sparse" in getattr(searcher.catalog, "native_outputs", ()):
        return searcher.store.sparse_search(weights, k, flt)
    allowed = None
    # a side index shared with a smaller store (an evaluation's test pool) is restricted too
    if flt or len(side.sparse) > searcher.store.count():
        allowed = {
            r["id"]
            for batch in searcher.store.iter_records(batch_size=2000)
            for r in batch
            if not flt or flt.matches(r)
        }
    pairs = side.sparse.search(weights, k, allowed)
    records = {r["id"]: r for r in searcher.store.get([i for i, _ in pairs])}
    return [Hit(i, s, records[i]) for i, s in pairs if i in records]


def run_cascade(
    searcher: Searcher,
    query: str,
    cascade: str | Cascade,
    *,
    filters: Any = None,
    rerank: bool = True,
    threshold: float | None = None,
    user: str | None = None,
    explain: bool = False,
) -> SearchResponse:
    """Run ``cascade`` for ``query`` through ``searcher``'s catalog and reranker; the
    searcher's blend stage (when set) reorders the last stage's candidates, as after a
    two-stage search, and the response keeps the last stage's depth."""
    from rankwise.fusion import rrf_fuse
    from rankwise.responses import SearchResponse, blend_depth, finish, recall_results
    from rankwise.store.filters import build_filter

    c = parse_cascade(cascade)
    flt = build_filter(filters)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    stages: list[dict[str, Any]] = []
    needs = c.needs()
    t = time.perf_counter()
    q = searcher.catalog.embedder.encode_multi([query], "query", needs) if needs else None
    timings["embed"] = time.perf_counter() - t

    # -- recall
    t = time.perf_counter()
    r = c.recall
    if r.name in ("dense", "lexical", "hybrid"):
        qv = q.dense[0] if q is not None and q.dense is not None else None
        hits = searcher.recall(query, mode=r.name, top_k=r.depth, filters=flt, query_vector=qv)
    elif r.name == "sparse":
        hits = sparse_recall(searcher, q.sparse[0], r.depth, flt)
    else:  # fused: dense + BM25 + sparse
        lists = [
            searcher.store.dense_search(q.dense[0], r.depth, flt),
            searcher.store.lexical_search(query, r.depth, flt),
            sparse_recall(searcher, q.sparse[0], r.depth, flt),
        ]
        hits = rrf_fuse(lists, FUSED_RRF_K)[: r.depth]
    timings["recall"] = time.perf_counter() - t
    stages.append(
        {"stage": r.name, "depth": r.depth, "scored": len(hits), "seconds": timings["recall"]}
    )
    recall_rank = {h.id: i for i, h in enumerate(hits, 1)}
    colbert_scores: dict[str, float] = {}

    # -- ColBERT MaxSim
    cb = c.stage("colbert")
    if cb is not None:
        t = time.perf_counter()
        side = _side(searcher, "colbert")
        scores = maxsim(q.colbert[0], side.colbert([h.id for h in hits]))
        # the last stage keeps every candidate for the blend stage, which cuts to its depth
        last = c.stages[-1] is cb
        depth = blend_depth(searcher.blend, len(hits), cb.depth) if last else cb.depth
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))[:depth]
        colbert_scores = {hits[i].id: float(scores[i]) for i in order}
        scored = len(hits)
        hits = [hits[i] for i in order]
        timings["colbert"] = time.perf_counter() - t
        stages.append(
            {"stage": "colbert", "depth": cb.depth, "scored": scored, "seconds": timings["colbert"]}
        )

    # -- cross-encoder
    rr = c.stage("rerank")
    reranked, skipped = False, None
    n = c.stages[-1].depth
    keep = blend_depth(searcher.blend, len(hits), n)
    if rr is not None and rerank and searcher.reranker is not None:
        t = time.perf_counter()
        results = searcher.rerank(query, hits, top_n=keep, threshold=threshold)
        timings["rerank"] = time.perf_counter() - t
        stages.append(
            {
                "stage": "rerank",
                "depth": rr.depth,
                "scored": len(hits),
                "seconds": timings["rerank"],
            }
        )
        reranked = True
        for res in results:
            res.recall_rank = recall_rank[res.id]
    else:
        if rr is not None:
            skipped = "no reranker configured" if searcher.reranker is None else "rerank off"
        results = recall_results(hits[:keep], recall_rank)
    for res in results:  # recall_score stays the first stage's; MaxSim goes beside it
        res.colbert_score = colbert_scores.get(res.id)
    results = finish(searcher.blend, query, results, n, user=user, explain=explain, timings=timings)
    timings["total"] = time.perf_counter() - t0
    return SearchResponse(
        query,
        r.name,
        results,
        reranked=reranked,
        skipped_reason=skipped,
        timings=timings,
        recipe=c.label(),
        stages=stages,
    )
