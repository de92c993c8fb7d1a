"""Cross-request batching: one queue and one worker thread per model.

Concurrent HTTP requests each submit a *job* (a list of items: texts to embed or
(query, document) pairs to score, with their token counts). The worker takes the oldest
job, then keeps adding queued jobs while the group's tokens stay under ``max_tokens``,
waiting at most ``max_wait_ms`` for more to arrive; it then calls the model **once** for
the whole group and hands each caller its own slice of the output.

Padding: the model sorts the group's items by length and cuts its own padded-token
batches (``models/``), so the padded cost of a group is close to the sum of its items'
token counts: that sum is what ``max_tokens`` bounds. Length sorting therefore happens
across requests, which is where batching saves most on CPU (less padding per forward).

A full queue raises :class:`~rankwise.errors.Overloaded` (HTTP 429 with Retry-After).
A model call that fails is retried one job at a time, so only the job that breaks it
fails; the worker itself never dies. ``enabled=False`` runs one job per model call
through the same worker (the "batching off" baseline of ``benchmarks/serve.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from rankwise.errors import NotReady, Overloaded

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``on_batch(model, requests, items, tokens, seconds)``: metrics hook.
BatchHook = Callable[[str, int, int, int, float], None]


@dataclass
class _Job(Generic[T]):
    items: Sequence[T]
    tokens: int
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


_STOP = object()


class Batcher(Generic[T]):
    """Groups concurrent jobs for one model.

    Args:
        name: model label for metrics and thread names ("rerank", "embed").
        fn: the model call: ``fn(items) -> np.ndarray`` with ``len(items)`` rows.
        max_tokens: token budget of one group (default 32,768). A single job larger than
            the budget still runs, alone.
        max_wait_ms: how long the worker waits for more jobs once it has one (default 5).
        max_queue: jobs allowed to wait (default 256); more → ``Overloaded``.
        enabled: False → one job per model call (no cross-request batching).
        on_batch: optional metrics hook called after every model call.
        on_wait: optional hook ``on_wait(seconds)`` with each job's queueing time.
        on_reject: optional hook called when a job is refused because the queue is full.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[list[T]], np.ndarray],
        *,
        max_tokens: int = 32_768,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        enabled: bool = True,
        on_batch: BatchHook | None = None,
        on_wait: Callable[[float], None] | None = None,
        on_reject: Callable[[], None] | None = None,
    ):
        self.name = name
        self.fn = fn
        self.max_tokens = max_tokens
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.enabled = enabled
        self.on_batch = on_batch
        self.on_wait = on_wait
        self.on_reject = on_reject
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._job_seconds = 0.05  # EWMA of model time per job, for Retry-After

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Batcher[T]:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(
                target=self._loop, name=f"rankwise-batcher-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the running group, fail queued jobs with ``NotReady``, join the worker."""
        if self._thread is None:
            return
        self._stopping = True
        while True:  # drain: queued jobs get a clear error instead of hanging
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job) and job.future.set_running_or_notify_cancel():
                job.future.set_exception(NotReady("the server is shutting down"))
        try:
            self._q.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    @property
    def depth(self) -> int:
        """Jobs waiting (not counting the group being computed)."""
        return self._q.qsize()

    # ------------------------------------------------------------------ submit
    def submit(self, items: Sequence[T], tokens: int) -> Future:
        """Queue a job; the future resolves to ``fn``'s rows for these items.

        Raises:
            Overloaded: the queue is full.
            NotReady: the batcher is not running.
        """
        if self._thread is None or self._stopping:
            raise NotReady(f"the {self.name} model is not running")
        job: _Job[T] = _Job(list(items), max(int(tokens), 1))
        if not job.items:
            job.future.set_result(np.zeros((0,), dtype=np.float32))
            return job.future
        try:
            self._q.put_nowait(job)
        except queue.Full:
            if self.on_reject is not None:
                self.on_reject()
            retry = max(1, math.ceil(self._job_seconds * self.max_queue))
            raise Overloaded(
                f"the {self.name} queue is full ({self.max_queue} requests waiting); "
                f"retry in {retry}s",
                retry_after=retry,
            ) from None
        return job.future

    async def run(self, items: Sequence[T], tokens: int) -> np.ndarray:
        """Async: submit and await the result (the event loop is never blocked)."""
        return await asyncio.wrap_future(self.submit(items, tokens))

    def run_sync(self, items: Sequence[T], tokens: int) -> np.ndarray:
        """Blocking: for code running in a worker thread (e.g. ``Searcher``)."""
        return self.submit(items, tokens).result()

    # ------------------------------------------------------------------ worker
    def _next_group(self, first: _Job[T]) -> tuple[list[_Job[T]], Any]:
        """Collect jobs after ``first`` under the token budget; returns (group, carry-over)."""
        group, tokens = [first], first.tokens
        if not self.enabled:
            return group, None
        deadline = time.perf_counter() + self.max_wait
        while tokens < self.max_tokens:
            try:
                nxt = self._q.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    nxt = self._q.get(timeout=remaining)
                except queue.Empty:
                    break
            if nxt is _STOP or tokens + nxt.tokens > self.max_tokens:
                return group, nxt
            if nxt.future.set_running_or_notify_cancel():  # skip jobs whose caller left
                group.append(nxt)
                tokens += nxt.tokens
        return group, None

    def _loop(self) -> None:
        carry: Any = None
        while True:
            job = carry if carry is not None else self._q.get()
            carry = None
            if job is _STOP:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            group, carry = self._next_group(job)
            self._run(group)

    def _run(self, group: list[_Job[T]]) -> None:
        items = [it for job in group for it in job.items]
        start = time.perf_counter()
        if self.on_wait is not None:
            for job in group:
                self.on_wait(start - job.enqueued)
        try:
            out = np.asarray(self.fn(items))
            if len(out) != len(items):
                raise RuntimeError(f"{self.name} model returned {len(out)} rows for {len(items)}")
        except Exception as e:  # noqa: BLE001 - isolate the failing job, keep serving
            if len(group) > 1:
                log.warning(
                    "%s batch of %d jobs failed (%s); retrying one by one", self.name, len(group), e
                )
                for job in group:
                    self._run([job])
            else:
                group[0].future.set_exception(e)
            return
        seconds = time.perf_counter() - start
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds / len(group)
        if self.on_batch is not None:
            self.on_batch(self.name, len(group), len(items), sum(j.tokens for j in group), seconds)
        offset = 0
        for job in group:
            n = len(job.items)
            job.future.set_result(out[offset : offset + n])
            offset += n
