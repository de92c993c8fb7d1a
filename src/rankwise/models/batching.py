"""Token-budget batching: sort by length, cut batches by padded tokens, not by count.

A batch costs (rows x longest row) tokens of compute once padded, so sorting by length and
capping the padded size keeps both padding waste and peak memory bounded (the approach of
text-embeddings-inference and infinity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def token_budget_batches(
    lengths: Sequence[int],
    *,
    max_batch_size: int = 32,
    token_budget: int | None = None,
) -> list[np.ndarray]:
    """Split item indices into length-sorted batches.

    Args:
        lengths: token count of each item (n,).
        max_batch_size: most rows per batch.
        token_budget: most padded tokens (rows x longest row) per batch; ``None``: no cap.
            An item longer than the budget still gets a batch of its own.

    Returns:
        Index arrays (int64) into ``lengths``, longest items first (memory problems show on the
        first batch), covering every index exactly once. Ties keep input order.
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        rows = (
            max_batch_size
            if token_budget is None
            else max(1, min(max_batch_size, token_budget // longest))
        )
        batches.append(order[start : start + rows])
        start += rows
    return batches
