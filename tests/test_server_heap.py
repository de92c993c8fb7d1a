"""server/heap.py: malloc_trim gives freed native memory back (what kept a soak's RSS
climbing), and the server's trimmer thread runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


_CHURN = r"""
import re, sys
from pathlib import Path
from rankwise.server.heap import fix_mmap_threshold

def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

applied = fix_mmap_threshold()
first = bytearray(8 << 20)  # mapped by glibc's default too: freeing it raises glibc's threshold
del first
big, small = [], []
for i in range(60):  # model-call-sized blocks, with small long-lived ones between them
    b = bytearray(2 << 20)
    b[::4096] = b"\1" * len(range(0, len(b), 4096))  # touch every page
    big.append(b)
    small.append(bytearray(2048))
before = rss()
del big
print(applied, before - rss())
"""


@pytest.mark.parametrize("threshold", ["0", ""])
def test_pinned_mmap_threshold_gives_freed_model_sized_blocks_back(threshold):
    """glibc's default raises its mmap threshold after a big block is freed, so later 2 MiB
    blocks live in the heap and stay resident after ``free`` (no trim ran); pinned at 1 MiB
    each is its own mapping and goes back at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["RANKWISE_MMAP_THRESHOLD"] = threshold or str(1 << 20)
    out = subprocess.run(
        [sys.executable, "-c", _CHURN], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    applied, released = out[0] == "True", float(out[1])
    if threshold == "0":  # glibc's default: the blocks stay resident
        assert not applied and released < 30, released
    else:
        assert applied and released > 100, released
