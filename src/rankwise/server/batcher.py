"""Cross-request batching with fair scheduling by cost: one worker thread per model.

Each HTTP request submits a *job*: a list of items (texts to embed, (query, document)
pairs to score) with the token count of each item, its **cost**. Pricing, limits and the
413/429 answers are :class:`~rankwise.server.admission.Admission`'s; this module is the
worker loop that turns admitted jobs into model calls (*batches*) of at most
``max_tokens`` tokens.

Scheduling, per batch:

- **a newly arrived job gets the very next model call to itself** (with the other new
  jobs, oldest first, up to the budget) while older jobs still hold items: a small
  request then waits for the batch in progress plus its own short call. Topping that call
  up with the big job's items (the first version) made it a full batch, and a 2-document
  rerank waited ~2.8 batches at p99 during a 1,000-document one;
- **aging**: a call of new jobs only is never followed by another one while older jobs
  wait, so a stream of small requests cannot starve a big one (it gets at least every
  other call);
- **half calls after new jobs**: the older jobs' call that follows a call of new jobs gets
  half the budget (never under :data:`MIN_BATCH_TOKENS`). New jobs coming in one after
  another are interactive clients sending their next request as soon as one is answered:
  it arrives while the older jobs' call runs and waits for all of it, so that call's length
  is its wait. With a 1,000-document rerank running, a 2-document rerank waited 140 ms at
  p50 and 209-224 ms at p99 (a full 2,048-token call plus its own) on an AVX-512 EPYC;
  with half calls 84 and 140 ms, while the big request took 12.1 s instead of 10.0-10.5
  (benchmarks/results/serve_pressure.md). The big job pays one call's overhead more per
  half budget while small requests keep coming, nothing otherwise;
- otherwise **round-robin**: every active job gets an equal share of the budget (in
  arrival order; a job smaller than its share goes in whole), and budget left over goes
  to the jobs still holding items, oldest first. A large job is split across many batches
  (plain FIFO grouping made a 2-document rerank wait 438 s behind a 1,000-document one).

**Time-bounded batches**: the token budget of a call is ``max_tokens`` or what the
measured drain rate computes in ``max_batch_ms`` (default 250 ms), whichever is smaller
(never under :data:`MIN_BATCH_TOKENS`). A small request waits for about one batch in
progress, so the batch's *time* is what bounds its wait; a token budget alone is right on
one machine and seconds on another (2,048 reranker tokens took 1.8 s on 2 shared CPU
cores: a 2-document rerank's p99 was 13.9 s during a 1,000-document one). On a GPU the
rate is high and ``max_tokens`` binds. The budget settles where a call takes
``max_batch_ms``: a smaller call has more overhead per token, a lower measured rate, and
the next budget is computed from that rate.

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
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from rankwise.errors import NotReady
from rankwise.server.admission import Admission, Job

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the smallest token budget of a time-bounded call (per-call overhead dominates below it)
MIN_BATCH_TOKENS = 256
#: the budget of calls before any drain rate is measured (a cold server's first big request
#: would otherwise go whole into one call of ``max_tokens``: ~30 s on 2 CPU cores)
FIRST_BATCH_TOKENS = 1024

#: ``on_batch(model, requests, items, tokens, seconds)``: metrics hook.
BatchHook = Callable[[str, int, int, int, float], None]


@dataclass
class _Slice(Generic[T]):
    job: Job[T]
    start: int
    end: int


class Batcher(Admission[T]):
    """Fair, cost-aware batching of concurrent jobs for one model.

    Args:
        name: model label for metrics and thread names ("rerank", "embed").
        fn: the model call: ``fn(items) -> np.ndarray`` with ``len(items)`` rows.
        max_tokens: token budget of one model call (default 32,768); larger jobs are split.
        max_batch_ms: time bound of one model call (default 250): the budget shrinks to the
            tokens the measured drain rate computes in this time; None or 0: ``max_tokens``.
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
        max_batch_ms: float | None = 250.0,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        max_queue_tokens: int | None = None,
        max_request_tokens: int | None = None,
        enabled: bool = True,
        on_batch: BatchHook | None = None,
        on_wait: Callable[[float], None] | None = None,
        on_reject: Callable[[], None] | None = None,
    ):
        super().__init__(
            name,
            max_queue=max_queue,
            max_queue_tokens=max_queue_tokens,
            max_request_tokens=max_request_tokens,
            on_reject=on_reject,
        )
        self.fn = fn
        self.max_tokens = max_tokens
        self.max_batch_s = (max_batch_ms or 0.0) / 1000.0
        self.max_wait = max_wait_ms / 1000.0
        self.enabled = enabled
        self.on_batch = on_batch
        self.on_wait = on_wait
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._fresh_only = False  # the last batch held new jobs only (aging, see above)
        self._busy_since = 0.0  # when the worker last found work after waiting idle
        self._last_end = 0.0  # when the last batch was delivered

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Batcher[T]:
        if self._thread is None:
            self._stopping = False
            self._running = True
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
            self._running = False
            pending, self._jobs = list(self._jobs), deque()
            self._queued_tokens = 0
            self._cond.notify_all()
        for job in pending:  # a clear error instead of hanging
            if not job.future.done():
                job.future.set_exception(NotReady("the server is shutting down"))
        self._thread.join(timeout)
        self._thread = None

    # ------------------------------------------------------------------ submit
    def submit(
        self,
        items: Sequence[T],
        tokens: int | Sequence[int],
        reserved: bool = False,
        *,
        typical: bool = True,
    ) -> Future:
        """Admit a job; the future resolves to ``fn``'s rows for these items, in order.

        Args:
            items: what the model call takes.
            tokens: the cost of each item (a sequence), or the job's total (spread evenly).
            reserved: submitted inside :meth:`admission` (its place is already counted).
            typical: False for a job that says nothing about request sizes (the readiness
                probe): it stays out of the mean admitted cost that prices unpriced places.

        Raises:
            PayloadTooLarge: the job costs more than ``max_request_tokens``.
            Overloaded: the queue is full (``retry_after`` from the measured drain rate).
            NotReady: the batcher is not running.
        """
        return self._admit(items, tokens, reserved, typical).future

    async def run(
        self, items: Sequence[T], tokens: int | Sequence[int], reserved: bool = False
    ) -> np.ndarray:
        """Async: submit and await the result (the event loop is never blocked)."""
        return await asyncio.wrap_future(self.submit(items, tokens, reserved))

    def run_sync(
        self, items: Sequence[T], tokens: int | Sequence[int], *, typical: bool = True
    ) -> np.ndarray:
        """Blocking: for code running in a worker thread (e.g. ``Searcher``)."""
        return self.submit(items, tokens, typical=typical).result()

    # ------------------------------------------------------------------ worker
    @property
    def budget(self) -> int:
        """Token budget of the next model call: ``max_tokens``, or less where the measured
        drain rate computes fewer tokens in ``max_batch_ms`` (see the module docstring)."""
        if not self.max_batch_s:
            return self.max_tokens
        if not self._rate:
            return min(self.max_tokens, FIRST_BATCH_TOKENS)
        timed = max(int(self._rate * self.max_batch_s), MIN_BATCH_TOKENS)
        return min(self.max_tokens, timed)

    def _take(self, job: Job[T], budget: int, at_least_one: bool) -> _Slice[T] | None:
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
        fresh = [j for j in active if not j.started]
        if fresh and len(fresh) < len(active) and not self._fresh_only:
            self._fresh_only = True  # new jobs get the next call to themselves
            return self._fill(fresh, self.budget)
        after_fresh, self._fresh_only = self._fresh_only, False
        budget = self.budget
        if after_fresh:  # interactive traffic: the next small request waits for half a call
            budget = max(budget // 2, min(budget, MIN_BATCH_TOKENS))
        return self._round_robin(active, budget)

    def _fill(self, jobs: list[Job[T]], budget: int) -> list[_Slice[T]]:
        """Whole jobs (or the first items of one) in order while ``budget`` lasts."""
        plan: list[_Slice[T]] = []
        for job in jobs:
            if budget <= 0:
                break
            s = self._take(job, budget, at_least_one=not plan)
            if s is not None:
                plan.append(s)
                budget -= sum(job.costs[s.start : s.end])
        return plan

    def _round_robin(self, active: list[Job[T]], budget: int) -> list[_Slice[T]]:
        """An equal share of ``budget`` each, then what is left to the oldest."""
        share = max(budget // len(active), 1)
        plan: list[_Slice[T]] = []
        for job in active:  # pass 1: an equal share each, the oldest job always progresses
            s = self._take(job, min(share, budget), at_least_one=not plan)
            if s is not None:
                plan.append(s)
                budget -= sum(job.costs[s.start : s.end])
        return plan + self._fill(active, budget) if budget > 0 else plan  # pass 2

    def _loop(self) -> None:
        while True:
            with self._cond:
                idle = False
                while not self._stopping and not any(
                    j.remaining and not j.future.cancelled() for j in self._jobs
                ):
                    idle = True
                    self._cond.wait()
                if self._stopping:
                    return
                if idle or not self._last_end:  # busy time (the drain rate's) starts again
                    self._busy_since = time.perf_counter()
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
        budget = self.budget
        with self._cond:
            while not self._stopping:
                pending = sum(sum(j.costs[j.next :]) for j in self._jobs)
                remaining = deadline - time.perf_counter()
                if pending >= budget or remaining <= 0:
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
        if self.on_batch is not None:
            jobs = len({id(s.job) for s in plan})
            self.on_batch(self.name, jobs, len(out), tokens, seconds)
        offset = 0
        for s in plan:
            n = s.end - s.start
            self._deliver(s, out[offset : offset + n])
            offset += n
        end = time.perf_counter()  # busy wall time of this batch: planning to delivery
        if any(s.job.metered for s in plan):
            self._measured(tokens, end - max(self._busy_since, self._last_end))
        self._last_end = end

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
        self, job: Job[T], result: np.ndarray | None = None, error: Exception | None = None
    ) -> None:
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                self._queued_tokens -= sum(job.costs[job.done :]) if error is not None else 0
        if job.future.done():
            return
        job.finished = time.perf_counter()
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
