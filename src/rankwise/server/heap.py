"""Native heap upkeep for a long-running server: glibc's arena cap, a fixed mmap threshold
and periodic trims.

Why: under a 32-client soak the Python heap stays at ~19 MB (tracemalloc) while RSS
climbs, so the growth is native memory. Model calls allocate tensors of a different
shape almost every time (rows x longest row), from several threads (the batcher workers,
the tokeniser pool); glibc keeps freed chunks in per-thread arenas and returns memory to
the kernel only from the top of the main heap. ``malloc_trim(0)`` releases the free pages
of every arena (``madvise``), which glibc never does on its own. Hand-written with
ctypes because no maintained library does this; a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger(__name__)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; False off glibc or when glibc refuses it."""
    libc = _libc()
    try:
        return bool(libc is not None and libc.mallopt(param, value))
    except AttributeError:
        return False


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``) unless ``MALLOC_ARENA_MAX`` is set.

    Measured (``benchmarks/serve_pressure.py``, 32-client soak, 2 shared cores): RSS grew
    ~47 MB/min after the first minute with glibc's default arenas and ~30-36 MB/min with
    2; the cap helps and does not stop it alone (:class:`HeapTrimmer` does the rest).
    Call before threads start. Returns whether the cap was applied.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return _mallopt(-8, arenas)  # M_ARENA_MAX


#: ``M_MMAP_THRESHOLD`` rankwise sets: allocations this large get their own mapping
MMAP_THRESHOLD = 1 << 20


def fix_mmap_threshold(threshold: int | None = None) -> bool:
    """Pin glibc's ``M_MMAP_THRESHOLD`` at ``threshold`` bytes (default 1 MiB;
    ``RANKWISE_MMAP_THRESHOLD``, 0 leaves glibc's default) unless ``MALLOC_MMAP_THRESHOLD_``
    is set. Returns whether it was applied.

    Why: glibc starts at 128 KiB and *raises* the threshold to the size of every mapped
    block that is freed (up to 32 MiB). A server's model calls allocate activations of a
    new shape almost every time (rows x longest row, several MB each); after the first
    few are freed, all later ones come from the arenas, where blocks of ever-changing
    sizes fragment the heap and RSS creeps up. With the threshold pinned, every block of
    1 MiB or more is its own mapping, returned to the kernel on ``free``. Setting it also
    turns glibc's dynamic adjustment off (``mallopt(3)``).
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    if threshold is None:
        threshold = int(os.environ.get("RANKWISE_MMAP_THRESHOLD", MMAP_THRESHOLD))
    if threshold <= 0:
        return False
    return _mallopt(-3, threshold)  # M_MMAP_THRESHOLD


def prepare_heap() -> None:
    """What ``rankwise serve`` sets before any thread starts: the arena cap and the pinned
    mmap threshold (each skipped where its glibc variable is set)."""
    limit_malloc_arenas()
    fix_mmap_threshold()


def trim_heap() -> bool:
    """``malloc_trim(0)``: give the free pages of every arena back to the kernel. Returns
    whether anything was released (False off glibc)."""
    libc = _libc()
    try:
        return bool(libc is not None and libc.malloc_trim(0))
    except AttributeError:
        return False


class HeapTrimmer:
    """A daemon thread calling :func:`trim_heap` every ``interval`` seconds (default 30;
    ``RANKWISE_HEAP_TRIM_S``, 0 disables). A trim takes a few milliseconds and holds
    each arena's lock only while that arena is walked."""

    def __init__(self, interval: float | None = None):
        if interval is None:
            interval = float(os.environ.get("RANKWISE_HEAP_TRIM_S", "30"))
        self.interval = interval
        self.trims = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HeapTrimmer:
        if self.interval > 0 and self._thread is None and _libc() is not None:
            self._thread = threading.Thread(target=self._run, name="rankwise-heap", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            trim_heap()
            self.trims += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
