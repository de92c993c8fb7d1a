"""Cross-request batching with fair scheduling by cost: one worker thread per model.

Each HTTP request submits a *job*: a list of items (texts to embed, (query, document)
pairs to score) with the token count of each item, its **cost**. Admission happens in
:meth:`Batcher.submit`, on the caller's thread, before anything is queued:

- a job costing more than ``max_request_tokens`` is refused at once
  (:class:`~rankwise.errors.PayloadTooLarge`, 413 naming the limit);
- a job that would take the queue over ``max_queue`` jobs or ``max_queue_tokens`` tokens
  is refused at once (:class:`~rankwise.errors.Overloaded`, 429) with ``retry_after`` =
  the queued tokens divided by the **measured drain rate** (tokens per second the model
  actually processed, an exponentially weighted mean over recent model calls).

The worker builds each model call (a *batch*) of at most ``max_tokens`` tokens from all
admitted jobs, **round-robin**: every active job first gets an equal share of the budget
(in arrival order; a job smaller than its share goes in whole), and budget left over goes
to the jobs still holding items, oldest first. A large job is therefore split across
many batches and interleaved with whatever arrives meanwhile: a small request waits for
the batch in progress plus about one batch, never for the whole large request (plain
FIFO grouping made a 2-document rerank wait 438 s behind a 1,000-document one).

Padding: the model sorts a batch's items by length and cuts its own padded-token
sub-batches (``models/``), so a batch's padded cost is close to the sum of its items'
tokens: that sum is what ``max_tokens`` bounds.

A model call that fails is retried one job at a time, so only the job that breaks it
fails; the worker itself never dies. ``enabled=False`` runs one job (whole) per model
call, FIFO (the "batching off" baseline of ``benchmarks/serve.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from rankwise.errors import NotReady, Overloaded, PayloadTooLarge

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``on_batch(model, requests, items, tokens, seconds)``: metrics hook.
BatchHook = Callable[[str, int, int, int, float], None]


@dataclass
class _Job(Generic[T]):
    items: list[T]
    costs: list[int]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    next: int = 0  # first item not yet handed to the model
    done: int = 0  # items whose rows are in ``out``
    out: np.ndarray | None = None
    started: bool = False

    @property
    def tokens(self) -> int:
        return sum(self.costs)

    @property
    def remaining(self) -> int:
        return len(self.items) - self.next


@dataclass
class _Slice(Generic[T]):
    job: _Job[T]
    start: int
    end: int


def _spread(tokens: int | Sequence[int], n: int) -> list[int]:
    """Per-item costs: given per item, or a total spread evenly (each at least 1)."""
    if isinstance(tokens, int | np.integer):
        each = max(int(tokens), n) // max(n, 1)
        return [max(each, 1)] * n
    costs = [max(int(t), 1) for t in tokens]
    if len(costs) != n:
        raise ValueError(f"{len(costs)} token counts for {n} items")
    return costs


class Batcher(Generic[T]):
    """Fair, cost-aware batching of concurrent jobs for one model.

    Args:
        name: model label for metrics and thread names ("rerank", "embed").
        fn: the model call: ``fn(items) -> np.ndarray`` with ``len(items)`` rows.
        max_tokens: token budget of one model call (default 32,768); larger jobs are split.
        max_wait_ms: how long the worker waits for more jobs once it has one (default 5).
        max_queue: jobs waiting for their first batch (default 256); more → ``Overloaded``.
        max_queue_tokens: tokens admitted and not finished (default: unbounded); more →
            ``Overloaded``.
        max_request_tokens: cost limit of one job (default: unbounded); more →
            ``PayloadTooLarge``.
        enabled: False → one whole job per model call, FIFO (no cross-request batching).
        on_batch: optional metrics hook called after every model call.
        on_wait: optional hook ``on_wait(seconds)`` with each job's wait for its first batch.
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
        max_queue_tokens: int | None = None,
        max_request_tokens: int | None = None,
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
        self.max_queue_tokens = max_queue_tokens
        self.max_request_tokens = max_request_tokens
        self.enabled = enabled
        self.on_batch = on_batch
        self.on_wait = on_wait
        self.on_reject = on_reject
        self._cond = threading.Condition()
        self._jobs: deque[_Job[T]] = deque()  # admitted, not finished (arrival order)
        self._queued_tokens = 0  # tokens of admitted items not yet computed
        self._pending = 0  # requests holding a place while they are being priced
        self._job_tokens: float | None = None  # mean cost of admitted jobs (EWMA)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rate: float | None = None  # measured tokens/second (EWMA over model calls)

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
        """Finish the running batch, fail unfinished jobs with ``NotReady``, join the worker."""
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            pending, self._jobs = list(self._jobs), deque()
            self._queued_tokens = 0
            self._cond.notify_all()
        for job in pending:  # a clear error instead of hanging
            if not job.future.done():
                job.future.set_exception(NotReady("the server is shutting down"))
        self._thread.join(timeout)
        self._thread = None

    @property
    def depth(self) -> int:
        """Jobs waiting for their first batch."""
        return sum(1 for j in self._jobs if not j.started)

    @property
    def queued_tokens(self) -> int:
        """Tokens admitted and not yet computed."""
        return self._queued_tokens

    @property
    def drain_rate(self) -> float | None:
        """Measured tokens per second of model time (None before the first model call)."""
        return self._rate

    def retry_after(self, extra_tokens: int = 0) -> float:
        """Seconds until the queue has drained the tokens now waiting (plus ``extra_tokens``),
        at the measured drain rate; 1 s when nothing has been measured yet. Requests still
        being priced (holding a place, cost unknown) count at the mean admitted cost: in
        a burst most places are held by them, and leaving them out made Retry-After 1 s
        for a queue that took 20 s to drain."""
        if not self._rate:
            return 1.0
        pending = self._pending * (self._job_tokens or 0.0)
        return max(1.0, (self._queued_tokens + pending + extra_tokens) / self._rate)

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold a place in the queue from *before* the request is priced (tokenising a big
        request takes a while, and runs in a thread pool that a burst saturates): a full
        queue answers 429 at once instead of after the caller's tokenisation. Submit
        within it with ``reserved=True`` (the place is the job's)."""
        with self._cond:
            self._check_full(0)
            self._pending += 1
        try:
            yield
        finally:
            with self._cond:
                self._pending -= 1

    def check_admission(self, tokens: int = 0) -> None:
        """Raise ``Overloaded`` when a job of ``tokens`` would not be admitted now (used by
        searches, which are admitted before their recall runs)."""
        with self._cond:
            self._check_full(tokens)

    def _check_full(self, tokens: int, reserved: bool = False) -> None:
        waiting = sum(1 for j in self._jobs if not j.started) + self._pending - int(reserved)
        full_jobs = waiting >= self.max_queue
        full_tokens = (
            self.max_queue_tokens is not None
            and self._jobs
            and self._queued_tokens + tokens > self.max_queue_tokens
        )
        if not (full_jobs or full_tokens):
            return
        if self.on_reject is not None:
            self.on_reject()
        retry = math.ceil(self.retry_after())
        what = (
            f"{waiting} requests"
            if full_jobs
            else f"{self._queued_tokens:,} tokens (limit {self.max_queue_tokens:,})"
        )
        raise Overloaded(
            f"the {self.name} queue is full ({what} waiting); retry in {retry}s",
            retry_after=retry,
        )

    # ------------------------------------------------------------------ submit
    def submit(
        self, items: Sequence[T], tokens: int | Sequence[int], reserved: bool = False
    ) -> Future:
        """Admit a job; the future resolves to ``fn``'s rows for these items, in order.

        Args:
            items: what the model call takes.
            tokens: the cost of each item (a sequence), or the job's total (spread evenly).
            reserved: submitted inside :meth:`admission` (its place is already counted).

        Raises:
            PayloadTooLarge: the job costs more than ``max_request_tokens``.
            Overloaded: the queue is full (``retry_after`` from the measured drain rate).
            NotReady: the batcher is not running.
        """
        items = list(items)
        job: _Job[T] = _Job(items, _spread(tokens, len(items)))
        if not items:
            job.future.set_result(np.zeros((0,), dtype=np.float32))
            return job.future
        cost = job.tokens
        if self.max_request_tokens is not None and cost > self.max_request_tokens:
            raise PayloadTooLarge(
                f"this request costs {cost:,} tokens; the limit per request is "
                f"{self.max_request_tokens:,} (max_request_tokens): send fewer or shorter texts"
            )
        with self._cond:
            if self._thread is None or self._stopping:
                raise NotReady(f"the {self.name} model is not running")
            self._check_full(cost, reserved)
            self._job_tokens = (
                cost if self._job_tokens is None else 0.9 * self._job_tokens + 0.1 * cost
            )
            self._jobs.append(job)
            self._queued_tokens += cost
            self._cond.notify()
        return job.future

    async def run(
        self, items: Sequence[T], tokens: int | Sequence[int], reserved: bool = False
    ) -> np.ndarray:
        """Async: submit and await the result (the event loop is never blocked)."""
        return await asyncio.wrap_future(self.submit(items, tokens, reserved))

    def run_sync(self, items: Sequence[T], tokens: int | Sequence[int]) -> np.ndarray:
        """Blocking: for code running in a worker thread (e.g. ``Searcher``)."""
        return self.submit(items, tokens).result()

    # ------------------------------------------------------------------ worker
    def _take(self, job: _Job[T], budget: int, at_least_one: bool) -> _Slice[T] | None:
        """The next items of ``job`` that fit ``budget`` tokens (at least one if asked)."""
        start = end = job.next
        used = 0
        while end < len(job.items) and (
            used + job.costs[end] <= budget or (at_least_one and end == start)
        ):
            used += job.costs[end]
            end += 1
        if end == start:
            return None
        job.next = end
        job.started = True
        return _Slice(job, start, end)

    def _plan(self) -> list[_Slice[T]]:
        """One batch from the active jobs (called with the lock held)."""
        for j in [j for j in self._jobs if j.future.cancelled()]:  # the caller went away
            self._jobs.remove(j)
            self._queued_tokens -= sum(j.costs[j.done :])
        active = [j for j in self._jobs if j.remaining > 0]
        if not active:
            return []
        if not self.enabled:
            job = active[0]
            return [self._take(job, math.inf, True)]  # type: ignore[list-item,arg-type]
        budget = self.max_tokens
        share = max(budget // len(active), 1)
        plan: list[_Slice[T]] = []
        for job in active:  # pass 1: an equal share each, the oldest job always progresses
            s = self._take(job, min(share, budget), at_least_one=not plan)
            if s is not None:
                plan.append(s)
                budget -= sum(job.costs[s.start : s.end])
        for job in active:  # pass 2: what is left, oldest first
            if budget <= 0:
                break
            s = self._take(job, budget, at_least_one=False)
            if s is not None:
                plan.append(s)
                budget -= sum(job.costs[s.start : s.end])
        return plan

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not any(
                    j.remaining and not j.future.cancelled() for j in self._jobs
                ):
                    self._cond.wait()
                if self._stopping:
                    return
            if self.enabled and self.max_wait > 0:
                self._linger()
            with self._cond:
                if self._stopping:
                    return
                plan = self._plan()
            if plan:
                self._run(plan)

    def _linger(self) -> None:
        """Wait up to ``max_wait`` for more jobs while the next batch is not yet full."""
        deadline = time.perf_counter() + self.max_wait
        with self._cond:
            while not self._stopping:
                pending = sum(sum(j.costs[j.next :]) for j in self._jobs)
                remaining = deadline - time.perf_counter()
                if pending >= self.max_tokens or remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _call(self, plan: list[_Slice[T]]) -> np.ndarray:
        items = [it for s in plan for it in s.job.items[s.start : s.end]]
        out = np.asarray(self.fn(items))
        if len(out) != len(items):
            raise RuntimeError(f"{self.name} model returned {len(out)} rows for {len(items)}")
        return out

    def _run(self, plan: list[_Slice[T]]) -> None:
        start = time.perf_counter()
        for s in plan:
            if s.start == 0:  # the job's first batch
                if self.on_wait is not None:
                    self.on_wait(start - s.job.enqueued)
        try:
            out = self._call(plan)
        except Exception as e:  # noqa: BLE001 - isolate the failing job, keep serving
            if len(plan) > 1:
                log.warning(
                    "%s batch of %d jobs failed (%s); retrying one by one", self.name, len(plan), e
                )
                for s in plan:
                    if not s.job.future.done():
                        self._run([s])
            else:
                self._finish(plan[0].job, error=e)
            return
        seconds = time.perf_counter() - start
        tokens = sum(sum(s.job.costs[s.start : s.end]) for s in plan)
        rate = tokens / max(seconds, 1e-6)
        self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        if self.on_batch is not None:
            jobs = len({id(s.job) for s in plan})
            self.on_batch(self.name, jobs, len(out), tokens, seconds)
        offset = 0
        for s in plan:
            n = s.end - s.start
            self._deliver(s, out[offset : offset + n])
            offset += n

    def _deliver(self, s: _Slice[T], rows: np.ndarray) -> None:
        job = s.job
        if job.future.done():  # failed earlier or cancelled
            return
        if job.out is None:
            job.out = np.empty((len(job.items), *rows.shape[1:]), dtype=rows.dtype)
        job.out[s.start : s.end] = rows
        job.done += s.end - s.start
        with self._cond:
            self._queued_tokens -= sum(job.costs[s.start : s.end])
        if job.done == len(job.items):
            self._finish(job, result=job.out)

    def _finish(
        self, job: _Job[T], result: np.ndarray | None = None, error: Exception | None = None
    ) -> None:
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                self._queued_tokens -= sum(job.costs[job.done :]) if error is not None else 0
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
