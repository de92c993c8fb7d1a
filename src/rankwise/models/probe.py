"""Measure, at load time, the batching cost model's one constant on *this* CPU.

Token-budget batching (``rankwise.models.batching``) cuts batches where they minimise
sum(batch_overhead + rows x longest), so it needs the fixed cost of one forward pass in
token-equivalents. That constant depends on the CPU, the backend, the model and the load
from other processes: measured on one 2-core AVX-512 Xeon it was ~8 tokens for ONNX Runtime and
~30 for eager torch, and a table of such numbers goes stale on the next machine. So we time two
shapes with the real runner:

    t_small = overhead + c * small_tokens      (1 row x ``short`` tokens)
    t_big   = overhead + c * big_tokens        (``rows`` rows x ``long`` tokens)

which gives c (time per token) and overhead / c (the constant, in tokens). By default both shapes
are 64 tokens wide (1 x 64 and 4 x 64): the question the batch cuts ask is exactly "one pass of
4 rows or 4 passes of 1 row at this width", and a fixed width keeps attention's quadratic term
and small-matrix inefficiency out of the fit (a first try with 1 x 8 vs 4 x 32 gave 0 tokens
for ONNX Runtime, where per-token cost at 8 tokens is not the per-token cost at 32). Each shape is timed
``repeats`` times, interleaved, and the minimum kept: other processes only ever add time, so the
minimum is the best estimate of the machine's own cost (the ``timeit`` rule). The probe costs
about ``repeats x (rows x long + short)`` tokens of compute (~0.2 s for MiniLM on 2 cores).
The result is clamped to [0, ``cap``]; if anything fails, the caller's fallback is used.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

SHORT, LONG, ROWS, REPEATS = 64, 64, 4, 5
CAP = 256.0  # more than this and the cost model's batch cuts no longer change


def probe_wanted() -> bool:
    """Whether models should probe at load: ``RANKWISE_BATCH_OVERHEAD=probe`` (opt-in; the
    measured table in ``base.py`` is the default, see the numbers there and in the README)."""
    return os.environ.get("RANKWISE_BATCH_OVERHEAD", "").strip().lower() == "probe"


def _feed(rows: int, width: int, input_names, pad_id: int) -> dict[str, np.ndarray]:
    # one ordinary id (not the pad id): any id below the vocabulary size runs the same math
    ids = np.full((rows, width), 6 if pad_id == 5 else 5, dtype=np.int64)
    arrays = {
        "input_ids": ids,
        "attention_mask": np.ones((rows, width), dtype=np.int64),
        "token_type_ids": np.zeros((rows, width), dtype=np.int64),
    }
    return {k: arrays[k] for k in input_names}


def fit_overhead(t_small: float, small_tokens: int, t_big: float, big_tokens: int) -> float:
    """Overhead in tokens from two timings of the linear model ``t = overhead + c * tokens``."""
    per_token = (t_big - t_small) / max(1, big_tokens - small_tokens)
    if per_token <= 0:  # the big pass was not slower: overhead dominates everything
        return CAP
    return float(np.clip(t_small / per_token - small_tokens, 0.0, CAP))


def measure_batch_overhead(
    runner: Callable[[dict[str, np.ndarray]], np.ndarray],
    input_names,
    pad_id: int,
    *,
    short: int = SHORT,
    long: int = LONG,
    rows: int = ROWS,
    repeats: int = REPEATS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Fixed cost of one forward pass of ``runner`` in token-equivalents (see module docstring).

    Args:
        runner: maps a padded batch (arrays named ``input_names``, int64 (rows, width)) to outputs.
        pad_id: the tokenizer's pad id (the probe's ids avoid it).
        short, long, rows: the two shapes, 1 x ``short`` and ``rows`` x ``long`` tokens.
        repeats: timings per shape; the minimum of each is used.

    Returns:
        A float in [0, :data:`CAP`].
    """
    small = _feed(1, short, input_names, pad_id)
    big = _feed(rows, long, input_names, pad_id)
    runner(small)  # warm-up: lazy allocations, thread pools, kernel selection
    runner(big)
    t_small, t_big = [], []
    for _ in range(repeats):
        for feed, out in ((small, t_small), (big, t_big)):
            t = clock()
            runner(feed)
            out.append(clock() - t)
    return fit_overhead(min(t_small), short, min(t_big), rows * long)


def probe_or(
    fallback: float, runner, input_names, pad_id: int, *, model_id: str = "", **kwargs
) -> tuple[float, str]:
    """:func:`measure_batch_overhead`, or ``fallback`` when the probe fails.

    Returns ``(overhead in tokens, "probe" or "table")``.
    """
    try:
        value = measure_batch_overhead(runner, input_names, pad_id, **kwargs)
    except Exception as e:  # a runner that rejects the probe's shapes must not break loading
        log.debug("batch overhead probe failed for %s (%s); using %s", model_id, e, fallback)
        return fallback, "table"
    log.debug("batch overhead of %s measured at %.1f tokens", model_id, value)
    return value, "probe"
