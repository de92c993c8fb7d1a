"""GPU out-of-memory backoff: halve the batch and retry, remember what fit per length bucket.

A batch that fits the token budget on one GPU can still run out of memory on a smaller one, or
beside another process. Instead of failing the call, a batch that raises
``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class) is split in two
halves; the rest of the batch runs in chunks of that size, and chunks that still do not fit are
halved again, down to one row. The row count that worked is remembered per length bucket (the batch's longest row rounded
up to a power of two), so later calls cut their batches there at once and do not pay for the
failed attempt again: rows x bucket is the token budget that fits. A limit learnt on short rows
also caps every longer bucket (what did not fit at 128 tokens will not fit at 256). Each bucket's
limit is logged once, as a warning. A single row that does not fit raises
:class:`~rankwise.errors.DeviceOutOfMemory`.

Memory is never probed up front: the first OOM is the measurement (the approach of
text-embeddings-inference's warm-up, done lazily so that loading stays fast).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

import numpy as np

from rankwise.errors import DeviceOutOfMemory

log = logging.getLogger(__name__)

MIN_BUCKET = 16  # widths up to 16 tokens share one bucket


def oom_types() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the device ran out of memory" (none without torch).

    torch is looked up in ``sys.modules`` only: a process that never imported torch (ONNX
    backend, remote models) cannot raise its errors, and importing it here would cost seconds.
    """
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return (oom,) if oom is not None else ()


def _free_cached_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def length_bucket(width: int) -> int:
    """``width`` rounded up to a power of two, at least :data:`MIN_BUCKET`."""
    return max(MIN_BUCKET, 1 << max(0, int(width) - 1).bit_length())


class OomBackoff:
    """Per length bucket, the most rows one forward pass held. Thread-safe; one per model."""

    def __init__(self) -> None:
        self._rows: dict[int, int] = {}
        self._logged: set[int] = set()
        self._lock = threading.Lock()

    @property
    def limits(self) -> dict[int, int]:
        """``{bucket: rows}`` learnt so far (copy), e.g. ``{256: 16}``."""
        with self._lock:
            return dict(self._rows)

    def limit(self, width: int) -> int | None:
        """Most rows for a batch whose longest row has ``width`` tokens (``None``: no limit)."""
        bucket = length_bucket(width)
        with self._lock:
            caps = [rows for b, rows in self._rows.items() if b <= bucket]
        return min(caps) if caps else None

    def _shrink(self, width: int, rows: int) -> None:
        bucket = length_bucket(width)
        with self._lock:
            self._rows[bucket] = min(rows, self._rows.get(bucket, rows))

    def _log_once(self, width: int) -> None:
        bucket = length_bucket(width)
        with self._lock:
            if bucket in self._logged:
                return
            self._logged.add(bucket)
            rows = self._rows[bucket]
        log.warning(
            "Device out of memory; batches of rows up to %d tokens now hold at most %d rows "
            "(a token budget of %d).",
            bucket,
            rows,
            rows * bucket,
        )

    def run(
        self, rows: np.ndarray, width: int, call: Callable[[np.ndarray], np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run ``call`` over ``rows`` (indices of one batch whose longest item has ``width``
        tokens) in chunks that fit, halving on OOM.

        Returns ``[(chunk indices, call(chunk))]`` covering ``rows`` once, in order.
        Raises DeviceOutOfMemory when a single row does not fit.
        """
        oom = oom_types()
        step = self.limit(width) or max(1, len(rows))
        remaining, done, shrunk = rows, [], False
        while len(remaining):
            chunk = remaining[:step]
            try:
                values = call(chunk)
            except oom as e:  # an empty tuple catches nothing
                _free_cached_memory()
                if len(chunk) == 1:
                    raise DeviceOutOfMemory(
                        f"One input of {width} tokens does not fit in device memory ({e}). "
                        "Fix: lower max_length, free the device, or use a bigger one."
                    ) from None
                step = (len(chunk) + 1) // 2
                self._shrink(width, step)
                shrunk = True
                continue
            done.append((chunk, values))
            remaining = remaining[len(chunk) :]
            if shrunk:
                self._log_once(width)
        return done
