"""Separation: how far a model's scores pull relevant documents away from irrelevant ones.

``gap = mean score of positives - mean score of negatives`` over all judged pairs of the
evaluated queries, where *positives* have grade ``>= threshold`` and *negatives* are the
pairs judged 0, plus any scored pair the query has no judgment for (use
:func:`sample_negatives` to add random corpus documents when the qrels hold few zeros).
Grades between 1 and ``threshold - 1`` count as neither. ``macro_gap`` averages the
per-query gap over queries that have at least one positive and one negative.

Scores are whatever the model outputs for a (query, document) pair: cosine similarity for
an embedder, ``sigmoid(logit)`` for a cross-encoder, BM25 for lexical.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rankwise.evaluate.metrics import Qrels, Run


@dataclass(frozen=True)
class Separation:
    """Score separation of one model on one query set."""

    model: str
    gap: float
    macro_gap: float
    mean_positive: float
    mean_negative: float
    n_positive: int
    n_negative: int
    n_queries: int

    def to_dict(self) -> dict:
        return asdict(self)


def separation(
    pair_scores: Run, qrels: Qrels, *, threshold: int = 1, model: str = ""
) -> Separation:
    """Separation of ``pair_scores`` (``{qid: {doc_id: score}}``) against ``qrels``."""
    pos_all: list[float] = []
    neg_all: list[float] = []
    per_query: list[float] = []
    for qid, scores in pair_scores.items():
        judged = qrels.get(qid, {})
        pos = [s for d, s in scores.items() if judged.get(d, 0) >= threshold]
        neg = [s for d, s in scores.items() if judged.get(d, 0) == 0]
        pos_all += pos
        neg_all += neg
        if pos and neg:
            per_query.append(float(np.mean(pos) - np.mean(neg)))
    mp = float(np.mean(pos_all)) if pos_all else float("nan")
    mn = float(np.mean(neg_all)) if neg_all else float("nan")
    return Separation(
        model=model,
        gap=mp - mn,
        macro_gap=float(np.mean(per_query)) if per_query else float("nan"),
        mean_positive=mp,
        mean_negative=mn,
        n_positive=len(pos_all),
        n_negative=len(neg_all),
        n_queries=len(per_query),
    )


def sample_negatives(
    qrels: Qrels, corpus_ids: Sequence[str], per_query: int = 5, seed: int = 0
) -> dict[str, list[str]]:
    """``per_query`` random corpus documents per query that the query has not judged.

    Random catalog products are almost never relevant to a query, so they serve as
    negatives when the qrels have few grade-0 judgments. Deterministic for a ``seed``.
    """
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    for qid in sorted(qrels):
        judged: Mapping[str, int] = qrels[qid]
        picked: list[str] = []
        for _ in range(per_query * 20):
            if len(picked) == per_query or not corpus_ids:
                break
            d = corpus_ids[rng.randrange(len(corpus_ids))]
            if d not in judged and d not in picked:
                picked.append(d)
        out[qid] = picked
    return out
