"""Token-budget batching: sort by length, cut batches by padded tokens, not by count.

A batch costs (rows x longest row) tokens of compute once padded, so sorting by length and
capping the padded size keeps both padding waste and peak memory bounded (the approach of
text-embeddings-inference and infinity).

On a CPU that is not enough. Batch size barely changes throughput there (a MiniLM
cross-encoder under ONNX Runtime on 2 cores: 16 tokens alone 2.0 ms, 16 x 16 tokens 31 ms),
while every padded token costs as much as a real one, and one Top-50 rerank call mixes
lengths from 40 to 400 tokens (32-row batches are then ~40% padding). So, given the fixed
cost of one forward pass in token-equivalents (``batch_overhead``; ~8 tokens for ONNX
Runtime, ~30 for eager torch on this CPU), the cut points are chosen to minimise the whole
call's cost, sum(batch_overhead + rows x longest), by dynamic programming over the sorted
lengths. On that Top-50 workload this took rankwise's ONNX fp32 path from 23.6 to 48.6
pairs/s (benchmarks/rerank_speed.py). On a GPU big batches matter more than padding, and
``batch_overhead=None`` keeps plain greedy filling.

Runners whose kernels cache per input shape (torch and OpenVINO on the CPU) also step a
batch's rows (:func:`bucket_rows`); the cuts then count the rows computed, not the rows
given, so they land on bucket sizes. In 400 calls of 1-64 titles the OpenVINO reranker's RSS
grew 104-108 MB with exact rows, still rising, and 42-53 MB with buckets, flat after the
first 100 calls, at ~5 % more time (benchmarks/results/native_cache_rss_s13_rows.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bucket_rows(rows: int, cap: int | None = None) -> int:
    """The row count a batch of ``rows`` is padded to when a runner steps rows: a power of
    two up to 8, then a multiple of 8 (never above ``cap``, the batch size limit).

    Why: CPU kernels that compile or cache per input shape (OpenVINO's runtime cache,
    oneDNN's primitive cache under torch) grow with every new (rows, width) pair, and a
    server meets almost every row count from 1 to the batch size. With widths in steps of
    16 and rows in these buckets a MiniLM reranker at 128 tokens meets at most 8 x 7 shapes.
    """
    padded = rows if rows <= 2 else 1 << (rows - 1).bit_length() if rows <= 8 else -(-rows // 8) * 8
    return padded if cap is None else max(rows, min(padded, cap))


def token_budget_batches(
    lengths: Sequence[int],
    *,
    max_batch_size: int = 32,
    token_budget: int | None = None,
    batch_overhead: float | None = None,
    row_buckets: bool = False,
) -> list[np.ndarray]:
    """Split item indices into length-sorted batches.

    Args:
        lengths: token count of each item (n,).
        max_batch_size: most rows per batch.
        token_budget: most padded tokens (rows x longest row) per batch; ``None``: no cap.
            An item longer than the budget still gets a batch of its own.
        batch_overhead: fixed cost of one batch in tokens; given, batches are cut where
            they minimise sum(batch_overhead + padded tokens); ``None``: fill each batch
            up to the caps.
        row_buckets: the runner pads each batch's rows up to :func:`bucket_rows`; the
            cost of a batch then counts the padded rows, so the cuts favour bucket sizes
            (only with ``batch_overhead``).

    Returns:
        Index arrays (int64) into ``lengths``, longest items first (memory problems show on the
        first batch), covering every index exactly once. Ties keep input order.
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    if batch_overhead is not None and batch_overhead < 0:
        raise ValueError("batch_overhead must be >= 0")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    longest = np.maximum(lengths[order], 1)
    if token_budget is None:  # most rows of a batch led by each item
        caps = np.full(len(order), max_batch_size, dtype=np.int64)
    else:
        caps = np.clip(token_budget // longest, 1, max_batch_size).astype(np.int64)
    if batch_overhead is None:
        cuts, start = [0], 0
        while start < len(order):
            start += int(caps[start])
            cuts.append(min(start, len(order)))
    else:
        rows = np.arange(int(caps.max()) + 1 if len(caps) else 1)
        if row_buckets:
            rows = np.array([bucket_rows(int(r), max_batch_size) for r in rows])
        cuts = _cheapest_cuts(longest, caps, float(batch_overhead), rows)
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def _cheapest_cuts(
    longest: np.ndarray, caps: np.ndarray, overhead: float, computed_rows: np.ndarray
) -> list[int]:
    """Batch boundaries over lengths sorted longest first that minimise the total cost.

    A batch ``[j, i)`` costs ``overhead + computed_rows[i - j] * longest[j]`` (the rows the
    runner computes for ``i - j`` items) and may hold at most ``caps[j]`` rows. ``best[i]``
    is the cheapest cost of the first ``i`` items; O(n x rows).
    """
    n = len(longest)
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    widest = int(caps.max()) if n else 0
    for i in range(1, n + 1):
        js = np.arange(max(0, i - widest), i)
        js = js[i - js <= caps[js]]
        cost = best[js] + overhead + computed_rows[i - js] * longest[js]
        k = int(np.argmin(cost))  # first minimum: the biggest batch among equals
        best[i], start[i] = cost[k], js[k]
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(start[cuts[-1]]))
    return cuts[::-1]
