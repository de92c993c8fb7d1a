"""server/heap.py: malloc_trim gives freed native memory back (what kept a soak's RSS
climbing), and the server's trimmer thread runs it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from rankwise.server.heap import HeapTrimmer, _libc, trim_heap

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc only")


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def test_trim_returns_freed_heap_pages_that_glibc_keeps():
    """Free 99 % of 300 MB of 2 KiB malloc chunks, keeping every 100th alive so the heap
    top is never free: glibc keeps the pages (RSS stays up) until malloc_trim."""
    trim_heap()
    blocks = [bytearray(2048) for _ in range(150_000)]  # > 512 B: malloc, not pymalloc
    for i, b in enumerate(blocks):
        b[0] = i % 256  # touch the pages
    kept = blocks[::100]
    del blocks
    before = _rss_mb()
    assert trim_heap()
    after = _rss_mb()
    assert kept and before - after > 100, (before, after)


def test_heap_trimmer_thread_runs_and_stops():
    t = HeapTrimmer(interval=0.05).start()
    try:
        deadline = time.monotonic() + 5
        while t.trims < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert t.trims >= 2
    finally:
        t.stop()
    assert HeapTrimmer(interval=0).start()._thread is None  # 0 disables
