"""The steps of ``tune run`` that decide what serves: calibrate recall, train on real
candidates, promote only winners.

1. :func:`calibrated_searcher`: the catalog's recall recipe for one embedder, chosen on
   judged train queries (``tune/fusion.py``); before training for the base embedder,
   after it for the tuned one.
2. :func:`first_stage_negatives`: each training query's negatives gain the *real* Top-K
   candidates of that calibrated first stage (judged documents keep their grades, known
   positives and related documents are never used as negatives). A reranker serves on
   those candidates, so it trains on them; dense-mined negatives stay as an addition.
   On kuake_qtr, negatives mined by an English-only embedder from Chinese queries were
   close to random documents, and the reranker trained on them hurt hybrid+rerank.
3. :func:`promote`: the tuned embedder (with its own calibrated recall) must beat the base
   embedder's calibrated recall, and the reranker must beat the first stage it reorders,
   each on held-out dev queries by the paired gate (``tune/gate.py``). The resulting
   :class:`~rankwise.recipe.Pipeline` records both decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rankwise.config import DEFAULT_TOP_N
from rankwise.data import BeirDataset, document_text
from rankwise.recipe import Pipeline
from rankwise.tune.data import TrainExample
from rankwise.tune.fusion import FusionConfig, calibrate_pipeline
from rankwise.tune.gate import (
    gate_reranker,
    paired_gate,
    pipeline_runs,
    routed_recalls,
    run_values,
)


@dataclass(frozen=True)
class PromotionConfig:
    """Options of the calibrate → train on real candidates → promote steps.

    Attributes:
        fusion: the recall calibration grid and rules.
        alpha: a tuned model is promoted only with ``p < alpha`` on dev queries.
        first_stage_negatives: real first-stage candidates added to each training query's
            negatives (0: off).
        top_n: results a user sees (the gates' metric is nDCG@min(10, top_n)).
    """

    fusion: FusionConfig = field(default_factory=FusionConfig)
    alpha: float = 0.05
    first_stage_negatives: int = 8
    top_n: int = DEFAULT_TOP_N


def calibrated_searcher(
    ds: BeirDataset,
    embedder: Any,
    index_dir: Path,
    qids: Sequence[str],
    cfg: PromotionConfig,
    *,
    reranker: Any | None = None,
    say: Callable[[str], None] = print,
) -> tuple[Any, Pipeline, list[Any]]:
    """A Searcher over ``ds``'s whole corpus (cached vectors and index, shared with the
    evaluation) following the recipe calibrated on the judged queries ``qids``."""
    from rankwise.evaluate.indexes import corpus_vectors, dataset_root, pool_catalog
    from rankwise.search import Searcher

    root = dataset_root(index_dir, ds.path.name, ds.corpus, embedder)
    ids, vectors = corpus_vectors(ds.corpus, embedder, root, log=say)
    cat = pool_catalog(ds.corpus, None, embedder, root, "global", ids=ids, vectors=vectors, log=say)
    searcher = Searcher(cat, reranker, top_k=cfg.fusion.top_k, top_n=cfg.top_n, pipeline=None)
    qrels = {q: ds.qrels[q] for q in qids}
    pipeline, choices = calibrate_pipeline(
        searcher, ds.queries, qrels, cfg.fusion, log=say,
        provenance={"data": str(ds.path), "split": ds.split},
    )  # fmt: skip
    searcher.pipeline = pipeline
    return searcher, pipeline, choices


def first_stage_negatives(
    examples: Sequence[TrainExample], searcher: Any, n: int, *, show_progress: bool = True
) -> list[TrainExample]:
    """``examples`` whose ``neg`` start with up to ``n`` of the calibrated first stage's
    candidates for their query (best first), skipping positives, related and known texts."""
    if n <= 0:
        return list(examples)
    out = []
    recalls = routed_recalls(searcher, [ex.query for ex in examples], searcher.top_k,
                             desc="first-stage negatives", show_progress=show_progress)  # fmt: skip
    for ex, hits in zip(examples, recalls, strict=True):
        taken = set(ex.pos) | set(ex.related) | set(ex.neg)
        fresh: list[str] = []
        for h in hits:
            text = document_text(h.record)
            if text not in taken:
                taken.add(text)
                fresh.append(text)
            if len(fresh) == n:
                break
        # first-stage negatives carry no teacher scores: drop scores rather than misalign them
        neg = [*fresh, *ex.neg]
        out.append(replace(ex, neg=neg, neg_scores=None, pos_scores=None) if fresh else ex)
    return out


def dev_values(searcher: Any, ds: BeirDataset, qids: Sequence[str], cfg: PromotionConfig):
    """Per-query nDCG of ``searcher``'s routed first stage on the dev queries ``qids``."""
    queries = {q: ds.queries[q] for q in qids}
    first, _ = pipeline_runs(searcher, queries, rerank=False, top_k=cfg.fusion.top_k,
                             top_n=cfg.top_n, show_progress=False)  # fmt: skip
    metric = f"ndcg@{min(10, cfg.top_n)}"
    return run_values(first, {q: ds.qrels[q] for q in qids}, metric, cfg.fusion.threshold)


def promote(
    ds: BeirDataset,
    dev_qids: Sequence[str],
    base: tuple[Any, Any, Pipeline],
    tuned: tuple[Any, Any, Pipeline] | None,
    reranker: Any | None,
    cfg: PromotionConfig,
    *,
    say: Callable[[str], None] = print,
) -> tuple[Any, Pipeline, dict[str, Any]]:
    """Gate the tuned embedder, then the reranker, on the dev queries.

    ``base`` / ``tuned`` are ``(embedder, calibrated searcher, pipeline)``. Returns the
    embedder that serves, its pipeline (with the reranker's decision) and the gates' report.
    """
    metric = f"ndcg@{min(10, cfg.top_n)}"
    report: dict[str, Any] = {"dev_queries": len(dev_qids), "metric": metric, "alpha": cfg.alpha}
    emb, searcher, pipeline = base
    report["base_recall"] = pipeline.default.label()
    if tuned is not None:
        gate = paired_gate(
            "tuned embedder (with its calibrated recall)",
            dev_values(base[1], ds, dev_qids, cfg),
            dev_values(tuned[1], ds, dev_qids, cfg),
            alpha=cfg.alpha,
            metric=metric,
        )
        say(f"[gate] {gate.reason}")
        report["embedder"] = gate.to_dict()
        if gate.promoted:
            emb, searcher, pipeline = tuned
        report["tuned_recall"] = tuned[2].default.label()
    report["serving_embedder"] = getattr(emb, "model_id", None)
    if reranker is not None:
        searcher.reranker = reranker
        decision, rr_gate = gate_reranker(
            searcher, {q: ds.queries[q] for q in dev_qids}, ds.qrels, alpha=cfg.alpha,
            top_k=cfg.fusion.top_k, top_n=cfg.top_n, threshold=cfg.fusion.threshold, log=say,
        )  # fmt: skip
        searcher.reranker = None
        pipeline = pipeline.with_rerank(decision)
        report["reranker"] = rr_gate.to_dict()
    pipeline = replace(pipeline, provenance={**pipeline.provenance, "promotion": report})
    return emb, pipeline, report


def dev_query_ids(ds: BeirDataset, dev: Sequence[TrainExample]) -> list[str]:
    """The query ids of the dev examples (by query text; sorted)."""
    by_text: Mapping[str, str] = {}
    for q in sorted(ds.qrels):
        by_text.setdefault(ds.queries[q], q)  # type: ignore[attr-defined]
    return sorted({by_text[ex.query] for ex in dev if ex.query in by_text})
