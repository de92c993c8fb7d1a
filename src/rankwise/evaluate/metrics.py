"""Ranking metrics over a run and graded qrels, several cut-offs at once, per query.

Conventions (each matches the reference implementations ``trec_eval``/``pytrec_eval`` and
``ranx``; ``tests/test_eval_metrics.py`` checks every metric against them to 1e-6):

* **Ranking order**: a run gives scores; documents are ranked by score descending and
  ties are broken by document id descending (string order), exactly as ``trec_eval``
  does. Supply distinct scores if a particular order among equals matters.
* **Relevance threshold** ``threshold`` (default 1): grades ``>= threshold`` count as
  relevant for the binary metrics (recall, precision, MRR, MAP, hit rate), like
  ``trec_eval -l`` and ranx's ``-l`` suffix.
* **nDCG gain**: ``gain="linear"`` (default, Järvelin & Kekäläinen; ``trec_eval``
  ``ndcg_cut`` and ranx ``ndcg``) uses the grade itself; ``gain="exponential"`` uses
  ``2**grade - 1`` (Burges et al.; ranx ``ndcg_burges``). Grades below ``threshold`` give
  no gain. Discount ``1 / log2(rank + 1)``; the ideal ranking sorts the judged grades.
* **Cut-offs**: ``precision@k`` divides by ``k`` even when fewer documents were returned;
  ``map@k`` divides by the number of relevant documents (``trec_eval`` ``map_cut``);
  ``mrr@k`` is the reciprocal rank of the first relevant document within the top k.
* **Queries**: the evaluated queries are those in the qrels. A query the run does not
  contain scores 0 on every metric (``trec_eval -c``). A query with *no relevant
  document* (none at or above ``threshold``) scores 0 on every metric in both references;
  by default (``no_relevant="skip"``) such queries are left out of the means and listed
  in :attr:`QueryMetrics.skipped`; ``no_relevant="zero"`` keeps them as zeros, which is
  what the references' plain means do.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rankwise.errors import InvalidRequest

#: Metric names, in report order. A column is ``f"{name}@{k}"``.
METRICS: tuple[str, ...] = ("ndcg", "recall", "precision", "mrr", "map", "hit_rate")

Run = Mapping[str, Mapping[str, float]]
"""``{query_id: {doc_id: score}}``; higher scores rank first."""
Qrels = Mapping[str, Mapping[str, int]]
"""``{query_id: {doc_id: grade}}``; integer grades, 0 = judged not relevant."""


def rank_documents(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Doc ids best first: score descending, ties by doc id descending (trec_eval order).

    ``k`` keeps only the first ``k`` (a heap, so ranking a long run for a short cut-off is
    cheap).
    """
    key = _trec_key
    if k is None or k >= len(scores):
        return [d for d, _ in sorted(scores.items(), key=key, reverse=True)]
    return [d for d, _ in heapq.nlargest(k, scores.items(), key=key)]


def _trec_key(item: tuple[str, float]) -> tuple[float, str]:
    return (float(item[1]), item[0])


def parse_ks(ks: str | Iterable[int]) -> tuple[int, ...]:
    """``"1,5,10"`` or ``[1, 5, 10]`` → sorted unique positive cut-offs."""
    if isinstance(ks, str):
        try:
            ks = [int(x) for x in ks.split(",") if x.strip()]
        except ValueError:
            raise InvalidRequest(f"cut-offs must be integers like 1,5,10; got {ks!r}") from None
    out = tuple(sorted(set(int(k) for k in ks)))
    if not out or out[0] < 1:
        raise InvalidRequest(f"cut-offs must be positive integers; got {out}")
    return out


@dataclass
class QueryMetrics:
    """Per-query metric values for one run.

    ``values[f"{metric}@{k}"]`` is a float64 array aligned with ``query_ids``.
    """

    query_ids: list[str]
    values: dict[str, np.ndarray]
    ks: tuple[int, ...]
    threshold: int = 1
    gain: str = "linear"
    no_relevant: str = "skip"
    skipped: list[str] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        """Mean over the evaluated queries (0.0 when there are none)."""
        return {m: float(v.mean()) if v.size else 0.0 for m, v in self.values.items()}

    def per_query(self, metric: str) -> dict[str, float]:
        """``{query_id: value}`` for one column such as ``"ndcg@10"``."""
        return dict(zip(self.query_ids, self.values[metric].tolist(), strict=True))

    def to_dict(self, per_query: bool = False) -> dict:
        """JSON-ready summary; ``per_query=True`` adds every query's values."""
        out = {
            "n_queries": len(self.query_ids),
            "threshold": self.threshold,
            "gain": self.gain,
            "no_relevant": self.no_relevant,
            "skipped_queries": list(self.skipped),
            "mean": self.mean(),
        }
        if per_query:
            out["per_query"] = {m: self.per_query(m) for m in self.values}
        return out


def compute_metrics(
    run: Run,
    qrels: Qrels,
    ks: str | Iterable[int] = (1, 5, 10),
    metrics: Sequence[str] = METRICS,
    *,
    threshold: int = 1,
    gain: Literal["linear", "exponential"] = "linear",
    no_relevant: Literal["skip", "zero"] = "skip",
) -> QueryMetrics:
    """Compute ``metrics`` at every cut-off in ``ks`` for each query in ``qrels``.

    Args:
        run: ``{qid: {doc_id: score}}``; queries absent from ``qrels`` are ignored.
        qrels: ``{qid: {doc_id: grade}}``; defines the evaluated queries.
        ks: cut-offs, e.g. ``(1, 5, 10)`` or ``"1,5,10"``.
        metrics: subset of :data:`METRICS`.
        threshold: smallest grade that counts as relevant (default 1).
        gain: nDCG gain, ``"linear"`` (grade) or ``"exponential"`` (``2**grade - 1``).
        no_relevant: ``"skip"`` drops queries without a relevant document from the
            result (listed in ``skipped``); ``"zero"`` keeps them with value 0.

    Returns:
        :class:`QueryMetrics` with one float64 array of shape ``(n_queries,)`` per column.
    """
    ks = parse_ks(ks)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InvalidRequest(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    if gain not in ("linear", "exponential"):
        raise InvalidRequest(f"gain must be 'linear' or 'exponential', got {gain!r}")
    if no_relevant not in ("skip", "zero"):
        raise InvalidRequest(f"no_relevant must be 'skip' or 'zero', got {no_relevant!r}")

    qids, skipped = [], []
    for q in sorted(qrels):
        has_relevant = any(g >= threshold for g in qrels[q].values())
        (qids if has_relevant or no_relevant == "zero" else skipped).append(q)

    depth = ks[-1]
    grades = np.zeros((len(qids), depth), dtype=np.float64)  # grade of the doc at each rank
    ideal = np.zeros((len(qids), depth), dtype=np.float64)  # judged grades, best first
    n_rel = np.zeros(len(qids), dtype=np.float64)
    for i, q in enumerate(qids):
        judged = qrels[q]
        ranked = rank_documents(run.get(q, {}), depth)
        grades[i, : len(ranked)] = [judged.get(d, 0) for d in ranked]
        rel_grades = sorted((g for g in judged.values() if g >= threshold), reverse=True)
        ideal[i, : min(depth, len(rel_grades))] = rel_grades[:depth]
        n_rel[i] = len(rel_grades)

    values = metrics_from_grades(grades, ideal, n_rel, ks, metrics, threshold=threshold, gain=gain)
    return QueryMetrics(qids, values, ks, threshold, gain, no_relevant, skipped)


def metrics_from_grades(
    grades: np.ndarray,
    ideal: np.ndarray,
    n_rel: np.ndarray,
    ks: Sequence[int],
    metrics: Sequence[str] = METRICS,
    *,
    threshold: int = 1,
    gain: Literal["linear", "exponential"] = "linear",
) -> dict[str, np.ndarray]:
    """The metric columns from ranked grades: the formulas of :func:`compute_metrics`.

    Args:
        grades: ``(n_queries, depth)``, the judged grade of the document at each rank (0 for
            an unjudged document or an empty rank); ``depth >= max(ks)``.
        ideal: ``(n_queries, depth)``, each query's judged relevant grades, best first.
        n_rel: ``(n_queries,)``, the number of relevant documents of each query.

    Callers that rank many runs over the same candidates (fusion calibration) build
    ``grades`` directly and skip the per-query dicts.
    """
    depth = grades.shape[1]
    relevant = grades >= threshold
    cum_rel = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)

    def gains(g: np.ndarray) -> np.ndarray:
        g = np.where(g >= threshold, g, 0.0)
        return g if gain == "linear" else np.exp2(g) - 1.0

    dcg = np.cumsum(gains(grades) * discount, axis=1)
    idcg = np.cumsum(gains(ideal) * discount, axis=1)
    ap_terms = np.cumsum(relevant * cum_rel / ranks, axis=1)
    first_rel = np.where(relevant.any(axis=1), relevant.argmax(axis=1) + 1, np.inf)
    safe_n_rel = np.maximum(n_rel, 1.0)  # n_rel == 0 only with no_relevant="zero": value 0

    values: dict[str, np.ndarray] = {}
    for m in metrics:
        for k in ks:
            hits = cum_rel[:, k - 1].astype(np.float64)
            if m == "recall":
                v = hits / safe_n_rel
            elif m == "precision":
                v = hits / k
            elif m == "hit_rate":
                v = (hits > 0).astype(np.float64)
            elif m == "mrr":
                v = np.where(first_rel <= k, 1.0 / first_rel, 0.0)
            elif m == "map":
                v = ap_terms[:, k - 1] / safe_n_rel
            else:  # ndcg
                den = idcg[:, k - 1]
                v = np.divide(dcg[:, k - 1], den, out=np.zeros_like(den), where=den > 0)
            values[f"{m}@{k}"] = v
    return values
