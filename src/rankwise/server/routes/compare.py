"""The compare view: the judged queries run through two pipelines, nDCG per query.

``POST /v1/compare`` ``{a: Pipeline, b: Pipeline, k: 10}`` searches every judged query
(the ``--judgments`` file) with each pipeline and scores both result lists against the
judgments with :func:`rankwise.evaluate.compute_metrics` (linear gains, the metric
``rankwise eval`` reports). A pipeline is a recall mode, fusion recipe (``rrf`` with its
``rrf_k``, or ``weighted``; both with ``weights``), Top-K, rerank on/off and which
cross-encoder reranks (``main``, the served one, or ``compare``, the server's
``--compare-reranker``). Each query carries its split (``train``/``test``, the same
stable hash ``rankwise tune run --judgments`` uses), so the page can show only queries
that tuning never saw.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from rankwise.errors import Conflict, PayloadTooLarge
from rankwise.evaluate.judgments import split_of
from rankwise.evaluate.metrics import compute_metrics
from rankwise.recipe import RecallRecipe
from rankwise.search import Searcher
from rankwise.server.routes.common import api_router, get_state
from rankwise.server.routes.workbench import Body, get_workbench
from rankwise.server.state import ServerState
from rankwise.server.workbench import Workbench

#: Most judged queries one compare call runs (each is two searches).
MAX_QUERIES = 2000

router = api_router(tags=["workbench"])


Weight = Annotated[float, Field(ge=0)]


class Pipeline(Body):
    mode: Literal["dense", "lexical", "hybrid"] | None = Field(None, description="Recall mode.")
    fusion: Literal["rrf", "weighted"] | None = Field(None, description="Hybrid fusion.")
    rrf_k: int | None = Field(None, ge=1, le=10_000)
    weights: tuple[Weight, Weight] | None = Field(None, description="(dense, lexical) weights.")
    top_k: int | None = Field(None, ge=1, le=10_000, description="Recall candidates.")
    rerank: bool = True
    reranker: Literal["main", "compare"] = "main"


class CompareRequest(Body):
    a: Pipeline
    b: Pipeline
    k: int = Field(10, ge=1, le=100, description="nDCG cut-off (results asked per query).")
    split: Literal["all", "train", "test"] = "all"


def pipeline_searcher(state: ServerState, wb: Workbench, p: Pipeline) -> Searcher:
    """The served searcher with the pipeline's fusion and reranker (a shallow copy: the
    catalog, store and cache are shared; the cache key includes fusion and reranker)."""
    s = copy.copy(state.require_searcher())
    m = s.manual
    s.manual = RecallRecipe(
        explicit_mode(p) or m.mode,
        p.fusion or m.fusion,
        m.rrf_k if p.rrf_k is None else p.rrf_k,
        m.weights if p.weights is None else tuple(p.weights),
    )
    if p.rerank and p.reranker == "compare":
        s.reranker = wb.compare_reranker()
    if p.rerank and p.top_k is not None and p.top_k > state.settings.max_documents:
        raise PayloadTooLarge(
            f"top_k={p.top_k} would rerank more than max_documents={state.settings.max_documents}"
        )
    return s


def explicit_mode(p: Pipeline) -> str | None:
    """The pipeline's mode; fusion settings without a mode mean hybrid; ``None``: the
    served (calibrated) pipeline routes each query."""
    if p.mode:
        return p.mode
    return "hybrid" if (p.fusion or p.rrf_k is not None or p.weights is not None) else None


def describe(p: Pipeline, s: Searcher, wb: Workbench) -> str:
    mode = explicit_mode(p)
    parts = [s.manual.label() if mode else "calibrated"]
    parts.append(f"top-k {p.top_k or s.top_k}")
    if p.rerank and s.reranker is not None:
        name = str(wb.compare_name if p.reranker == "compare" else s.reranker.model_id)
        parts.append(f"rerank {Path(name).name if Path(name).exists() else name}")
    else:
        parts.append("no rerank")
    return " · ".join(str(x) for x in parts)


def _run(s: Searcher, p: Pipeline, queries: dict[str, str], k: int) -> dict[str, dict[str, float]]:
    """``{qid: {doc: score}}`` where the score only encodes the pipeline's order."""
    run: dict[str, dict[str, float]] = {}
    for qid, text in queries.items():
        resp = s.search(text, mode=explicit_mode(p), top_k=p.top_k, top_n=k, rerank=p.rerank)
        n = len(resp.results)
        run[qid] = {r.id: float(n - i) for i, r in enumerate(resp.results)}
    return run


@router.post("/v1/compare", summary="Judged queries through two pipelines: nDCG per query")
async def compare(
    req: CompareRequest,
    state: ServerState = Depends(get_state),
    wb: Workbench = Depends(get_workbench),
) -> dict[str, Any]:
    """Per-query nDCG@k of pipelines A and B on the judged queries, and the means."""
    jf = wb.require_judgments()
    sa = await run_in_threadpool(pipeline_searcher, state, wb, req.a)  # may load a model
    sb = await run_in_threadpool(pipeline_searcher, state, wb, req.b)
    j = await run_in_threadpool(jf.read)
    qids = [q for q in sorted(j.qrels) if req.split == "all" or split_of(q) == req.split]
    if not qids:
        raise Conflict(
            "no judged queries to compare"
            + ("" if req.split == "all" else f" in the {req.split} split")
            + ": judge some results first"
        )
    if len(qids) > MAX_QUERIES:
        raise PayloadTooLarge(f"{len(qids):,} judged queries; compare runs at most {MAX_QUERIES:,}")
    queries = {q: j.queries[q] for q in qids}
    qrels = {q: j.qrels[q] for q in qids}
    t0 = time.perf_counter()
    run_a = await run_in_threadpool(_run, sa, req.a, queries, req.k)
    run_b = await run_in_threadpool(_run, sb, req.b, queries, req.k)
    seconds = time.perf_counter() - t0
    metric = f"ndcg@{req.k}"
    ma = compute_metrics(run_a, qrels, (req.k,), ("ndcg",)).per_query(metric)
    mb = compute_metrics(run_b, qrels, (req.k,), ("ndcg",)).per_query(metric)
    rows = []
    for q in qids:
        a, b = ma.get(q), mb.get(q)  # None: no judged-relevant product (nDCG undefined)
        rows.append(
            {
                "query_id": q,
                "query": queries[q],
                "split": split_of(q),
                "judged": len(qrels[q]),
                "relevant": sum(1 for g in qrels[q].values() if g >= 1),
                "a": a,
                "b": b,
                "delta": None if a is None or b is None else b - a,
            }
        )
    scored = [r for r in rows if r["delta"] is not None]
    n = len(scored)
    return {
        "metric": metric,
        "pipelines": {"a": describe(req.a, sa, wb), "b": describe(req.b, sb, wb)},
        "n_queries": len(rows),
        "n_scored": n,
        "mean": {
            "a": sum(r["a"] for r in scored) / n if n else None,
            "b": sum(r["b"] for r in scored) / n if n else None,
        },
        "better": sum(1 for r in scored if r["delta"] > 1e-9),
        "worse": sum(1 for r in scored if r["delta"] < -1e-9),
        "same": sum(1 for r in scored if abs(r["delta"]) <= 1e-9),
        "seconds": round(seconds, 3),
        "queries": rows,
    }
