"""The one ranking step: sort by score, keep those above a relevance threshold, cut to N.

Every ranked answer (``Reranker.rank``, ``Searcher.rerank``, the rerank HTTP routes) is cut by
:func:`rank_order`, so ties, the threshold and Top-N mean the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import expit


def sigmoid(x: np.ndarray | Sequence[float]) -> np.ndarray:
    """Logistic function, float32, numerically stable for any magnitude (scipy's ``expit``)."""
    return expit(np.asarray(x, dtype=np.float32)).astype(np.float32, copy=False)


def rank_order(
    scores: np.ndarray | Sequence[float],
    *,
    threshold: float | None = None,
    top_n: int | None = None,
) -> np.ndarray:
    """Indices of ``scores`` (raw logits), best first; ties keep input order.

    Args:
        scores: (n,) raw scores.
        threshold: keep only indices whose relevance ``sigmoid(score)`` is >= this (0..1);
            ``None`` keeps all.
        top_n: at most this many (``None``: all that pass the threshold).

    Returns:
        (m,) int64 indices into ``scores``, m <= min(n, top_n).
    """
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    return cut_order(np.argsort(-s, kind="stable"), s, threshold=threshold, top_n=top_n)


def cut_order(
    order: np.ndarray,
    logits: np.ndarray,
    *,
    threshold: float | None = None,
    top_n: int | None = None,
) -> np.ndarray:
    """``order`` (indices, best first) kept where ``sigmoid(logits)`` >= ``threshold``, cut
    to ``top_n``: the threshold is always the reranker's relevance, whatever sorted."""
    if threshold is not None:
        order = order[sigmoid(np.asarray(logits, dtype=np.float32)[order]) >= threshold]
    return order if top_n is None else order[:top_n]


def interpolate(
    logits: np.ndarray | Sequence[float], recall: np.ndarray | Sequence[float], weight: float
) -> np.ndarray:
    """The final order's key: ``weight`` x z(logits) + (1 - weight) x z(recall scores).

    Each list is standardised over the candidates of the one query (z-scores), so a BM25
    score, a fused RRF value and a logit weigh alike whatever their scales. ``weight`` 1
    returns the logits as they are (the reranker's own order). Interpolating with the
    first stage is how a reranker that knows less than recall about a catalog (a small
    cross-encoder trained on a few thousand queries) can still add what it knows; the
    promotion gate picks the weight on judged dev queries (``tune/gate.py``).
    """
    r = np.asarray(logits, dtype=np.float64).reshape(-1)
    if weight >= 1.0:
        return r
    f = np.asarray(recall, dtype=np.float64).reshape(-1)

    def z(x: np.ndarray) -> np.ndarray:
        sd = x.std()
        return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)

    return weight * z(r) + (1.0 - weight) * z(f)
