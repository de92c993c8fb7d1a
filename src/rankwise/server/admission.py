"""Admission for one model's queue: pricing, limits, 413/429 and an honest Retry-After.

The :class:`~rankwise.server.batcher.Batcher` worker loop builds on this class; what is
here runs on the *callers'* threads (and the HTTP middleware), before anything is queued:

- a job costing more than ``max_request_tokens`` is refused at once
  (:class:`~rankwise.errors.PayloadTooLarge`, 413 naming the limit);
- a job that would take the queue over ``max_queue`` jobs or ``max_queue_tokens`` tokens
  is refused at once (:class:`~rankwise.errors.Overloaded`, 429) with ``retry_after`` =
  the tokens still to compute divided by the **measured drain rate**, plus the requests
  still to finish times the **measured cost of one request outside the model**.

The drain rate is tokens per second of the worker's *busy wall time* (batch planning,
the model call, delivering rows; idle gaps excluded) over the last batches, weighted by
tokens. An average of per-call rates (the first version) was dominated by small,
overhead-bound calls and overstated Retry-After up to 44x in a burst.

The per-request cost is what a request takes besides its model time (reading and parsing
the body, validation, tokenisation, building and sending the response), measured on
requests that had the server to themselves (the median of the last 32), so it is the
serial cost of that work, not a wait. Without it a burst of small requests, whose drain is
bound by that work and not by the model, got 0.3x the drain it then took (serve_pressure
(b): 256 five-document reranks, 2.5 s of model time, drained in 8 s).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from rankwise.errors import NotReady, Overloaded, PayloadTooLarge

T = TypeVar("T")

#: bytes of a request body per model token, to price a place before its body is read (JSON
#: text: English is ~4 characters a token, Chinese ~1 character = 3 UTF-8 bytes a token)
BODY_BYTES_PER_TOKEN = 4


class _Place:
    """A place held in one admission's queue by the current request (see ``admission``)."""

    def __init__(self, estimate: int | None = None) -> None:
        self.submitted = False  # became a job: counted in the queue, no longer pending
        self.job: Job | None = None  # the job it became
        self.estimate = estimate  # tokens guessed from the declared body size, if known


#: the places the current request holds, by ``id(admission)``
_HELD: ContextVar[dict[int, _Place]] = ContextVar("rankwise_admission_held", default={})  # noqa: B039 - never mutated, replaced


#: set for the server's own warm-up requests (``run.warm_up_http``): their cost outside the
#: model is measured, but their tiny model calls stay out of the drain rate and the mean
#: admitted cost (8 two-pair calls made a cold burst's Retry-After 45 s for a 5.8 s drain)
WARM_UP: ContextVar[bool] = ContextVar("rankwise_warm_up", default=False)


@dataclass
class Job(Generic[T]):
    """One request's items and their costs, and how far the worker has got with them."""

    items: list[T]
    costs: list[int]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    next: int = 0  # first item not yet handed to the model
    done: int = 0  # items whose rows are in ``out``
    out: np.ndarray | None = None
    started: bool = False
    finished: float | None = None  # perf_counter when its result or error was set
    metered: bool = True  # its batches count in the drain rate (not a warm-up's)

    @property
    def tokens(self) -> int:
        return sum(self.costs)

    @property
    def remaining(self) -> int:
        return len(self.items) - self.next


def spread(tokens: int | Sequence[int], n: int) -> list[int]:
    """Per-item costs: given per item, or a total spread evenly (each at least 1)."""
    if isinstance(tokens, int | np.integer):
        each = max(int(tokens), n) // max(n, 1)
        return [max(each, 1)] * n
    costs = [max(int(t), 1) for t in tokens]
    if len(costs) != n:
        raise ValueError(f"{len(costs)} token counts for {n} items")
    return costs


class DrainMeter:
    """Tokens per busy second over the batches of the last ``horizon`` seconds (at least the
    last ``min_batches``; at most ``window``), token-weighted.

    A window of the last 32 batches alone (the first version) kept the rate of a quiet
    server into a burst, whose connections slow the model down on the same 2 cores
    (serve_pressure (b): the queue drained at ~0.4x the idle rate). The horizon lets the
    rate follow a burst after a few seconds. It does not fix a short burst: in (b)'s 9 s
    burst all 344 429s are decided in its first second, before any of its batches is
    measured (Retry-After 2 s after an idle phase: 0.27-0.8x the drain; 13 s on a cold
    server: 1.7-4.4x)."""

    def __init__(self, window: int = 256, horizon: float = 5.0, min_batches: int = 3):
        self.horizon = horizon
        self.min_batches = min_batches
        self._batches: deque[tuple[int, float, float]] = deque(maxlen=window)

    def add(self, tokens: int, seconds: float, at: float | None = None) -> float:
        """Record one batch (delivered at ``at``, perf_counter seconds); returns the rate."""
        at = time.perf_counter() if at is None else at
        self._batches.append((tokens, max(seconds, 1e-6), at))
        while len(self._batches) > self.min_batches and self._batches[0][2] < at - self.horizon:
            self._batches.popleft()
        return sum(b[0] for b in self._batches) / sum(b[1] for b in self._batches)


class Admission(Generic[T]):
    """Queue accounting and the admission checks of one model's batcher.

    Args:
        name: model label for messages ("rerank", "embed").
        max_queue: jobs waiting for their first batch (default 256); more → ``Overloaded``.
        max_queue_tokens: tokens admitted and not finished (default: unbounded).
        max_request_tokens: cost limit of one job (default: unbounded) → ``PayloadTooLarge``.
        on_reject: optional hook called when a job is refused because the queue is full.
    """

    def __init__(
        self,
        name: str,
        *,
        max_queue: int = 256,
        max_queue_tokens: int | None = None,
        max_request_tokens: int | None = None,
        on_reject: Callable[[], None] | None = None,
    ):
        self.name = name
        self.max_queue = max_queue
        self.max_queue_tokens = max_queue_tokens
        self.max_request_tokens = max_request_tokens
        self.on_reject = on_reject
        self._cond = threading.Condition()
        self._jobs: deque[Job[T]] = deque()  # admitted, not finished (arrival order)
        self._queued_tokens = 0  # tokens of admitted items not yet computed
        self._pending = 0  # requests holding a place while they are being priced
        self._pending_estimated = 0  # of those, the ones whose body size was declared ...
        self._pending_tokens = 0  # ... and their tokens guessed from it
        self._job_tokens: float | None = None  # mean cost of admitted jobs (EWMA)
        self._rate: float | None = None  # measured tokens per busy second
        self._meter = DrainMeter()
        #: seconds a request takes outside the model, from requests served alone (last 32)
        self._request_costs: deque[float] = deque(maxlen=32)
        self._running = False

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
        """Measured tokens per second of busy worker time (None before the first batch)."""
        return self._rate

    def _measured(self, tokens: int, seconds: float) -> None:
        self._rate = self._meter.add(tokens, seconds)

    @property
    def request_cost(self) -> float | None:
        """Measured seconds one request takes outside the model (None before any request was
        served alone)."""
        costs = list(self._request_costs)  # one C-level copy: /metrics reads it unlocked
        return float(np.median(costs)) if costs else None

    def retry_after(self, extra_tokens: int = 0) -> float:
        """Seconds until the queue has drained: the tokens now waiting (plus ``extra_tokens``)
        at the measured drain rate, plus each unfinished request's cost outside the model
        (:attr:`request_cost`); 1 s when nothing has been measured yet. Requests still
        being priced (holding a place) count at their declared body size where it is
        known, else at the mean admitted cost: in a burst most places are held by them,
        and leaving them out made Retry-After 1 s for a queue that took 20 s to drain."""
        if not self._rate:
            return 1.0
        unknown = self._pending - self._pending_estimated
        pending = self._pending_tokens + unknown * (self._job_tokens or 0.0)
        model = (self._queued_tokens + pending + extra_tokens) / self._rate
        around = (len(self._jobs) + self._pending) * (self.request_cost or 0.0)
        return max(1.0, model + around)

    def is_full(self) -> bool:
        """Cheap, lock-free look (the HTTP middleware's, before a body is read): would a
        new request be refused now? :meth:`admission` / :meth:`submit` still decide."""
        waiting = sum(1 for j in list(self._jobs) if not j.started) + self._pending
        return waiting >= self.max_queue or bool(
            self.max_queue_tokens is not None
            and self._jobs
            and self._queued_tokens > self.max_queue_tokens
        )

    def overloaded(self) -> Overloaded:
        """The 429 for a full queue, with Retry-After from the drain rate."""
        if self.on_reject is not None:
            self.on_reject()
        retry = math.ceil(self.retry_after())
        waiting = self.depth + self._pending
        what = (
            f"{waiting} requests"
            if waiting >= self.max_queue
            else f"{self._queued_tokens:,} tokens (limit {self.max_queue_tokens:,})"
        )
        return Overloaded(
            f"the {self.name} queue is full ({what} waiting); retry in {retry}s",
            retry_after=retry,
        )

    def _unpend(self, place: _Place) -> None:
        self._pending -= 1
        if place.estimate is not None:
            self._pending_estimated -= 1
            self._pending_tokens -= place.estimate

    @contextmanager
    def admission(self, body_bytes: int | None = None) -> Iterator[None]:
        """Hold a place in the queue from *before* the request is priced (tokenising a big
        request takes a while, and runs in a thread pool that a burst saturates): a full
        queue answers 429 at once instead of after the caller's tokenisation. Submit
        within it with ``reserved=True`` (the place is the job's). ``body_bytes`` (the
        request's Content-Length) prices the place for Retry-After until its job is priced.

        Re-entrant per task: the HTTP middleware takes the place before the body is read,
        and the route's own ``admission()`` inside it (same context) is then a no-op."""
        held = _HELD.get()
        if id(self) in held:
            yield
            return
        with self._cond:
            self._check_full(0)
            alone = not self._jobs and not self._pending  # nothing to wait for or share with
            place = _Place(None if body_bytes is None else body_bytes // BODY_BYTES_PER_TOKEN)
            self._pending += 1
            if place.estimate is not None:
                self._pending_estimated += 1
                self._pending_tokens += place.estimate
        token = _HELD.set({**held, id(self): place})
        entered = time.perf_counter()
        try:
            yield
        finally:
            _HELD.reset(token)
            with self._cond:
                if not place.submitted:
                    self._unpend(place)
                job = place.job
                if alone and job is not None and job.finished is not None:
                    in_queue = job.finished - job.enqueued  # waiting for and in the model
                    self._request_costs.append(max(time.perf_counter() - entered - in_queue, 0))

    def check_admission(self, tokens: int = 0) -> None:
        """Raise ``Overloaded`` when a job of ``tokens`` would not be admitted now (used by
        searches, which are admitted before their recall runs)."""
        with self._cond:
            self._check_full(tokens)

    def _check_full(self, tokens: int, reserved: bool = False) -> None:
        waiting = sum(1 for j in self._jobs if not j.started) + self._pending - int(reserved)
        full_tokens = (
            self.max_queue_tokens is not None
            and self._jobs
            and self._queued_tokens + tokens > self.max_queue_tokens
        )
        if waiting >= self.max_queue or full_tokens:
            raise self.overloaded()

    def _admit(
        self, items: Sequence[T], tokens: int | Sequence[int], reserved: bool, typical: bool = True
    ) -> Job[T]:
        """Price and queue a job (the caller's thread); see ``Batcher.submit``."""
        items = list(items)
        job: Job[T] = Job(items, spread(tokens, len(items)))
        if WARM_UP.get():
            job.metered = typical = False
        if not items:
            job.future.set_result(np.zeros((0,), dtype=np.float32))
            return job
        cost = job.tokens
        if self.max_request_tokens is not None and cost > self.max_request_tokens:
            raise PayloadTooLarge(
                f"this request costs {cost:,} tokens; the limit per request is "
                f"{self.max_request_tokens:,} (max_request_tokens): send fewer or shorter texts"
            )
        place = _HELD.get().get(id(self)) if reserved else None
        reserved = place is not None and not place.submitted  # a second job queues anew
        with self._cond:
            if not self._running:
                raise NotReady(f"the {self.name} model is not running")
            self._check_full(cost, reserved)
            if place is not None and reserved:  # the held place becomes this job
                place.submitted = True
                place.job = job
                self._unpend(place)
            if typical:
                self._job_tokens = (
                    cost if self._job_tokens is None else 0.9 * self._job_tokens + 0.1 * cost
                )
            self._jobs.append(job)
            self._queued_tokens += cost
            self._cond.notify()
        return job
