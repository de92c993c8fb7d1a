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
    order = np.argsort(-s, kind="stable")
    if threshold is not None:
        order = order[sigmoid(s[order]) >= threshold]
    return order if top_n is None else order[:top_n]
