"""Running each kind of evaluated system over the judged queries: searched systems
(recall, recall+rerank), cascade prefixes, and the cross-encoder over the judged pairs.

Each returns :class:`SystemResult` rows; :func:`rankwise.evaluate.runner.evaluate` decides
which systems run on which pool and assembles the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from rankwise.data import BeirDataset, document_text
from rankwise.evaluate.calibration import CalibrationPlan, ThresholdChoice
from rankwise.evaluate.metrics import QueryMetrics
from rankwise.evaluate.report import SystemResult
from rankwise.evaluate.separation import Separation, separation

if TYPE_CHECKING:
    from rankwise.models import Reranker

NO_RERANKER = "not run: no cross-encoder (none given, or --reranker none)"
#: ``score(run, depth)``: the metrics at the cut-offs a system returning ``depth`` can fill.
Scorer = Callable[..., QueryMetrics | None]


@dataclass
class Collected:
    """A system's run and per-query stage latencies in seconds."""

    run: dict[str, dict[str, float]] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=dict)

    def add_timings(self, timings: Mapping[str, float]) -> None:
        for stage, sec in timings.items():
            self.latency.setdefault(stage, []).append(float(sec))


def served_run(resp: Any) -> dict[str, float]:
    """``{doc_id: score}`` of one response, in the order served (dicts keep it): the score of
    the last stage that ran (blend, rerank, ColBERT, else recall)."""

    def last(r: Any) -> float:
        for s in (r.blend_score, r.rerank_score if resp.reranked else None, r.colbert_score):
            if s is not None:
                return float(s)
        return float(r.recall_score)

    return {r.id: last(r) for r in resp.results}


def served_order(run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """The run re-scored by served rank (n for the first, 1 for the last), for the metrics.
    Search scores tie often (BM25 on short titles, clipped relevances) and the metrics break
    ties by doc id like trec_eval, which would score an order nobody served: a Top-10 cut and
    a Top-50 list of the same ranking then disagreed on their first ten."""
    return {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in run.items()}


def scored_result(
    system: str, pool: str, col: Collected, depth: int, score: Scorer
) -> SystemResult:
    """The system's row: metrics at the cut-offs ``depth`` results can fill, else a note."""
    metrics = score(served_order(col.run), depth)  # col.run is in served order
    note = None if metrics else f"not comparable: returns {depth} results, k > {depth}"
    return SystemResult(system, pool, metrics, col.run, col.latency, note=note, depth=depth)


def searched_system(
    searcher: Any,
    system: str,
    pool: str,
    qids: Sequence[str],
    queries: Sequence[str],
    qvecs: np.ndarray,
    rr: Reranker | None,
    *,
    top_k: int,
    top_n: int,
    embed_per_query: float,
    score: Scorer,
    show_progress: bool,
) -> SystemResult:
    """``<mode>`` or ``<mode>+rerank`` on one pool (a note instead when it needs ``rr``)."""
    mode, _, rerank = system.partition("+")
    if rerank and rr is None:
        return SystemResult(system, pool, None, {}, {}, note=NO_RERANKER)
    col = run_searcher(
        searcher, qids, queries, qvecs, mode, bool(rerank), top_k, top_n,
        desc=f"{system} [{pool}]", show_progress=show_progress,
    )  # fmt: skip
    if mode != "lexical":
        col.latency["embed"] = [embed_per_query] * len(qids)
    return scored_result(system, pool, col, top_n if rerank else top_k, score)


def run_searcher(
    searcher: Any,
    qids: Sequence[str],
    queries: Sequence[str],
    qvecs: np.ndarray,
    mode: str,
    rerank: bool,
    top_k: int,
    top_n: int,
    *,
    desc: str,
    show_progress: bool,
) -> Collected:
    """One system over all queries: the run (Top-K recall, or reranked Top-N) and timings."""
    col = Collected()
    if qids:  # warm-up, untimed: lazy index loads (BM25, ANN) must not count as query latency
        searcher.search(queries[0], mode=None if mode == "calibrated" else mode, top_k=top_k,
                        rerank=rerank, query_vector=None if mode == "lexical" else qvecs[0])  # fmt: skip
    for i, (qid, query) in enumerate(
        tqdm(list(zip(qids, queries, strict=True)), desc=desc, disable=not show_progress)
    ):
        resp = searcher.search(
            query,
            mode=None if mode == "calibrated" else mode,
            top_k=top_k,
            top_n=top_n if rerank else top_k,
            rerank=rerank,
            query_vector=None if mode == "lexical" else qvecs[i],
        )
        col.run[qid] = served_run(resp)
        col.add_timings({k: v for k, v in resp.timings.items() if k != "embed"})
    return col


def cascade_systems(
    searcher: Any,
    qids: Sequence[str],
    queries: Sequence[str],
    prefixes: Sequence[Any],
    rr: Reranker | None,
    pool: str,
    score: Scorer,
    show_progress: bool,
) -> list[SystemResult]:
    """One :class:`SystemResult` per cascade prefix (a prefix ending in rerank needs ``rr``)."""
    out: list[SystemResult] = []
    for c in prefixes:
        name = f"cascade {c.label()}"
        if c.stage("rerank") and rr is None:
            out.append(SystemResult(name, pool, None, {}, {}, note=NO_RERANKER))
            continue
        col = Collected()
        if qids:  # warm-up, untimed (lazy index and memory-map loads)
            searcher.search(queries[0], cascade=c.label())
        for qid, query in tqdm(
            list(zip(qids, queries, strict=True)), desc=name, disable=not show_progress
        ):
            resp = searcher.search(query, cascade=c.label())
            col.run[qid] = served_run(resp)
            col.add_timings(resp.timings)
        out.append(scored_result(name, pool, col, c.stages[-1].depth, score))
    return out


def judged_systems(
    ds: BeirDataset,
    qids: Sequence[str],
    queries: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    pairs: Mapping[str, Sequence[str]],
    rr: Reranker | None,
    dense_pairs: Mapping[str, Mapping[str, float]] | None,
    *,
    score: Scorer,
    threshold: int,
    plan: CalibrationPlan,
    show_progress: bool,
) -> tuple[list[SystemResult], list[Separation], list[ThresholdChoice]]:
    """``dense [judged]`` (the bi-encoder's order of the judged candidates, the baseline)
    and ``rerank-only [judged]``, with the reranker's separation and calibrated thresholds."""
    results: list[SystemResult] = []
    if dense_pairs is not None:
        judged_dense = {q: {d: dense_pairs[q][d] for d in qrels[q]} for q in qids}
        results.append(SystemResult("dense", "judged", score(judged_dense), judged_dense, {}))
    if rr is None:
        results.append(SystemResult("rerank-only", "judged", None, {}, {}, note=NO_RERANKER))
        return results, [], []
    col, rel = rerank_judged(rr, ds, qids, queries, qrels, pairs, show_progress)
    results.append(SystemResult("rerank-only", "judged", score(col.run), col.run, col.latency))
    cal_rel = None
    if plan.cal_split:
        from rankwise.models import sigmoid

        cal_rel = {}
        for q in tqdm(
            sorted(plan.cal_qrels), desc=f"rerank [{plan.cal_split}]", disable=not show_progress
        ):
            docs = sorted(plan.cal_qrels[q])
            texts = [document_text(ds.corpus[d]) for d in docs]
            logits = np.asarray(rr.score(plan.cal_queries[q], texts), dtype=np.float32)
            cal_rel[q] = dict(zip(docs, sigmoid(logits).tolist(), strict=True))
    thresholds = plan.choose(rr.model_id, rel, cal_rel)
    return results, [separation(rel, qrels, threshold=threshold, model=rr.model_id)], thresholds


def rerank_judged(
    reranker: Reranker,
    ds: BeirDataset,
    qids: Sequence[str],
    queries: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    pairs: Mapping[str, Sequence[str]],
    show_progress: bool,
) -> tuple[Collected, dict[str, dict[str, float]]]:
    """Cross-encoder scores for each query's judged documents (the run, raw logits) plus
    the sampled negatives (``relevance`` 0..1 for separation and calibration)."""
    from rankwise.models import sigmoid

    col = Collected()
    relevance: dict[str, dict[str, float]] = {}
    for qid, query in tqdm(
        list(zip(qids, queries, strict=True)),
        desc="rerank-only [judged]",
        disable=not show_progress,
    ):
        docs = list(pairs[qid])
        t = time.perf_counter()
        logits = np.asarray(
            reranker.score(query, [document_text(ds.corpus[d]) for d in docs]), dtype=np.float32
        )
        sec = time.perf_counter() - t
        col.add_timings({"rerank": sec, "total": sec})
        col.run[qid] = {d: float(s) for d, s in zip(docs, logits, strict=True) if d in qrels[qid]}
        relevance[qid] = dict(zip(docs, sigmoid(logits).tolist(), strict=True))
    return col, relevance
