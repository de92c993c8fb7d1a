"""The cross-request batcher on its own: grouping, slicing, budget, isolation, limits.

The model call here is a plain numpy function (the batcher is generic over it); the
HTTP tests in test_server.py run the same batcher with real models.
"""

from __future__ import annotations

import contextvars
import threading
import time

import numpy as np
import pytest

from rankwise.errors import NotReady, Overloaded, PayloadTooLarge
from rankwise.server.batcher import Batcher


class Recorder:
    """Model call returning len(text) per item, recording each call's items."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items: list[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot score {self.fail_on!r}")
        time.sleep(self.delay)
        return np.array([len(t) for t in items], dtype=np.float32)


def _gated():
    """(gate, model call): every call blocks until the gate is set (5 s at most)."""
    gate = threading.Event()

    def slow(items):
        gate.wait(5)
        return np.zeros(len(items), dtype=np.float32)

    return gate, slow


def _submit_all(b: Batcher, jobs: list[list[str]]) -> list:
    """Submit from many threads at once; returns results (arrays or exceptions) in job order."""
    out: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def go(i: int) -> None:
        barrier.wait()
        try:
            out[i] = b.run_sync(jobs[i], tokens=len(jobs[i]))
        except Exception as e:  # noqa: BLE001 - collected for assertions
            out[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_concurrent_jobs_form_batches_and_get_their_own_rows():
    rec = Recorder(delay=0.02)
    b = Batcher("t", rec, max_wait_ms=20).start()
    try:
        jobs = [[f"j{i}-" + "x" * k for k in range(1 + i % 4)] for i in range(16)]
        results = _submit_all(b, jobs)
    finally:
        b.stop()
    for job, res in zip(jobs, results, strict=True):
        assert np.array_equal(res, [len(t) for t in job])
    assert len(rec.calls) < len(jobs), "no cross-request batch formed"
    assert max(len(c) for c in rec.calls) > 4


def test_token_budget_caps_every_model_call_and_big_jobs_are_split():
    rec = Recorder(delay=0.01)
    b = Batcher("t", rec, max_tokens=4, max_wait_ms=20).start()
    try:
        jobs = [["a", "b", "c"] for _ in range(6)] + [[f"z{i}" for i in range(10)]]
        results = _submit_all(b, jobs)
    finally:
        b.stop()
    for job, res in zip(jobs, results, strict=True):
        assert np.array_equal(res, [len(t) for t in job])  # rows reassembled in order
    assert all(len(c) <= 4 for c in rec.calls)  # one token per item here
    assert sum(len(c) for c in rec.calls) == 28  # nothing computed twice


def test_small_job_gets_the_very_next_call_to_itself_not_a_full_batch():
    """A 200-item job runs as 50 batches of 4; a 2-item job sent while it runs gets the
    next model call, and that call holds only the new job (topping it up with the big
    job's items made the small request wait a full extra batch)."""
    rec = Recorder(delay=0.01)
    b = Batcher("t", rec, max_tokens=4, max_wait_ms=0).start()
    try:
        big = b.submit([f"big{i}" for i in range(200)], 200)
        while len(rec.calls) < 3:
            time.sleep(0.005)
        calls_before = len(rec.calls)
        small = b.run_sync(["s1", "s2"], 2)
        calls_until_small = next(i for i, c in enumerate(rec.calls) if "s1" in c) + 1
        assert big.result(10).shape == (200,)
    finally:
        b.stop()
    assert np.array_equal(small, [2, 2])
    # the call in progress (counted in calls_before) or one that started just before the
    # submit, then the small job's own
    assert calls_until_small - calls_before <= 2, (calls_before, calls_until_small)
    assert next(c for c in rec.calls if "s1" in c) == ["s1", "s2"]


def test_the_call_after_new_jobs_is_half_a_budget_so_the_next_small_request_waits_less():
    """Interactive clients send their next request as soon as one is answered, so it waits
    for the older job's call that started meanwhile: that call gets half the budget. With
    no new jobs around the big job runs full calls."""
    rec = Recorder(delay=0.01)
    b = Batcher("t", rec, max_tokens=1024, max_batch_ms=0, max_wait_ms=0).start()
    try:
        big = b.submit([f"big{i}" for i in range(400)], [64] * 400)  # 16 items a full call
        while len(rec.calls) < 3:
            time.sleep(0.005)
        for k in range(5):  # one client, one request after another
            b.run_sync([f"s{k}"], 1)
        assert big.result(20).shape == (400,)
    finally:
        b.stop()
    pairs = list(zip(rec.calls, rec.calls[1:], strict=False))
    after_small = [len(c) for p, c in pairs if p[0].startswith("s") and c[0].startswith("big")]
    others = [len(c) for p, c in pairs if p[0].startswith("big") and c[0].startswith("big")]
    assert len(after_small) == 5 and all(n == 8 for n in after_small), rec.calls
    assert others and max(others) == 16  # full calls where no new job came before


def test_a_stream_of_small_jobs_cannot_starve_a_big_one():
    """Aging: a call of new jobs only is never followed by another while the big job waits,
    so the big job gets at least every other call (half the budget after a call of new
    jobs, the full budget otherwise)."""
    rec = Recorder(delay=0.005)
    b = Batcher("t", rec, max_tokens=4, max_wait_ms=0).start()
    stop = threading.Event()

    def stream(k: int) -> None:
        i = 0
        while not stop.is_set():
            b.run_sync([f"s{k}-{i}"], 1)
            i += 1

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(4)]
    try:
        big = b.submit([f"big{i}" for i in range(60)], 60)
        for t in threads:
            t.start()
        assert big.result(10).shape == (60,)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        b.stop()
    first = next(i for i, c in enumerate(rec.calls) if c[0].startswith("big"))
    last = max(i for i, c in enumerate(rec.calls) if any(t.startswith("big") for t in c))
    without_big = [not any(t.startswith("big") for t in c) for c in rec.calls[first : last + 1]]
    assert not any(a and b_ for a, b_ in zip(without_big, without_big[1:], strict=False)), (
        "big job skipped twice"
    )
    assert sum(without_big) > 0, "no small job was interleaved"


def test_request_over_the_cost_limit_is_413_before_queueing():
    rec = Recorder()
    b = Batcher("t", rec, max_request_tokens=100).start()
    try:
        with pytest.raises(PayloadTooLarge, match="100"):
            b.submit(["a", "b"], [60, 50])
        assert b.depth == 0 and not rec.calls
        assert np.array_equal(b.run_sync(["ok"], 100), [2])
    finally:
        b.stop()


def test_queue_token_limit_and_retry_after_from_the_measured_drain_rate():
    gate, slow = _gated()
    b = Batcher("t", slow, max_tokens=1000, max_queue_tokens=1000, max_wait_ms=0).start()
    try:
        b._rate = 100.0  # as if measured: 100 tokens/s
        first = b.submit(["a"] * 10, [90] * 10)  # 900 tokens admitted
        with pytest.raises(Overloaded) as err:
            b.submit(["b"] * 2, [100, 100])
        assert err.value.retry_after == 9  # 900 queued tokens / 100 tokens per second
        gate.set()
        assert first.result(5).shape == (10,)
        assert b.queued_tokens == 0 and b.depth == 0
        assert b.drain_rate is not None and b.drain_rate > 0
    finally:
        gate.set()
        b.stop()


def test_a_failing_job_fails_alone():
    rec = Recorder(delay=0.01, fail_on="poison")
    b = Batcher("t", rec, max_wait_ms=30).start()
    try:
        jobs = [["ok", f"fine{i}"] for i in range(7)] + [["poison", "ok"]]
        results = _submit_all(b, jobs)
        again = b.run_sync(["still", "alive"], 2)  # the worker survived
    finally:
        b.stop()
    assert isinstance(results[-1], ValueError)
    assert all(isinstance(r, np.ndarray) for r in results[:-1])
    assert np.array_equal(again, [5, 5])


def test_full_queue_is_overloaded_with_retry_after():
    gate, slow = _gated()
    b = Batcher("t", slow, max_queue=2, max_wait_ms=0).start()
    try:
        running = b.submit(["a"], 1)
        time.sleep(0.05)  # the worker holds "a"; now fill the queue
        queued = [b.submit(["b"], 1), b.submit(["c"], 1)]
        with pytest.raises(Overloaded) as err:
            b.submit(["d"], 1)
        assert err.value.retry_after >= 1
        gate.set()
        assert running.result(5).shape == (1,)
        assert all(f.result(5).shape == (1,) for f in queued)
    finally:
        gate.set()
        b.stop()


def test_disabled_batching_runs_one_job_per_call():
    rec = Recorder(delay=0.01)
    b = Batcher("t", rec, enabled=False, max_wait_ms=20).start()
    try:
        results = _submit_all(b, [["a", "bb"] for _ in range(8)])
    finally:
        b.stop()
    assert all(np.array_equal(r, [1, 2]) for r in results)
    assert len(rec.calls) == 8


def test_submit_after_stop_is_not_ready():
    b = Batcher("t", Recorder()).start()
    b.stop()
    with pytest.raises(NotReady):
        b.submit(["a"], 1)


def test_admission_holds_a_place_before_pricing_so_a_burst_gets_429_at_once():
    """A request holds its place from before it is tokenised: with one place taken, the
    next request is refused at once, not after its own (slow) tokenisation."""
    b = Batcher("t", Recorder(), max_queue=1).start()

    def other_request() -> None:  # another request: its own context
        with b.admission():
            pass

    try:
        with b.admission():
            with pytest.raises(Overloaded):
                contextvars.Context().run(other_request)
            with b.admission():  # the same request again (middleware, then route): no-op
                assert b._pending == 1
            fut = b.submit(["a"], 1, reserved=True)  # the held place becomes the job
            assert np.array_equal(fut.result(5), [1])
        contextvars.Context().run(other_request)  # released: admitted again
        assert b._pending == 0
    finally:
        b.stop()


def test_retry_after_counts_requests_still_being_priced():
    gate, slow = _gated()
    b = Batcher("t", slow, max_queue=3, max_wait_ms=0).start()
    try:
        b._rate = 100.0
        first = b.submit(["a"], [100])  # mean admitted cost: 100 tokens
        time.sleep(0.05)
        held = [(contextvars.Context(), b.admission()) for _ in range(3)]  # three requests
        for ctx, place in held:  # three places held, unpriced
            ctx.run(place.__enter__)
        with pytest.raises(Overloaded) as err:
            b.submit(["b"], [1])
        for ctx, place in held:
            ctx.run(place.__exit__, None, None, None)
        # 100 queued + 3 pending × 100 (mean cost) = 400 tokens at 100 tokens/s
        assert err.value.retry_after == 4
        gate.set()
        first.result(5)
    finally:
        gate.set()
        b.stop()


def test_a_held_place_becomes_the_job_not_a_second_place():
    """Two requests hold the queue's two places, then submit their jobs: both are
    admitted. Counting a submitted job and its still-held place both (the first version)
    filled the queue at half its size: in a 600-request burst only 13 were admitted."""
    gate, slow = _gated()
    b = Batcher("t", slow, max_queue=2, max_wait_ms=0).start()
    try:
        running = b.submit(["x"], 1)  # the worker is busy with it
        while not b._jobs[0].started:
            time.sleep(0.005)
        held = [(contextvars.Context(), b.admission()) for _ in range(2)]
        for ctx, place in held:
            ctx.run(place.__enter__)
        futures = [ctx.run(b.submit, ["a"], 1, True) for ctx, _ in held]  # reserved
        assert b.depth == 2 and b._pending == 0
        for ctx, place in held:
            ctx.run(place.__exit__, None, None, None)
        assert b._pending == 0
        gate.set()
        assert running.result(5).shape == (1,)
        assert all(f.result(5).shape == (1,) for f in futures)
    finally:
        gate.set()
        b.stop()


def test_calls_are_bounded_in_time_by_the_measured_drain_rate():
    """A model at 5,000 tokens/s and a 100 ms bound: after the first call (no rate yet:
    FIRST_BATCH_TOKENS) each call holds about 500 tokens, not the 100,000 of max_tokens."""
    from rankwise.server.batcher import FIRST_BATCH_TOKENS

    calls: list[int] = []

    def model(items):
        calls.append(len(items))
        time.sleep(0.0002 * len(items))  # 0.2 ms per 1-token item
        return np.ones(len(items), dtype=np.float32)

    b = Batcher("t", model, max_tokens=100_000, max_batch_ms=100, max_wait_ms=0).start()
    try:
        out = b.run_sync(["x"] * 6000, tokens=6000)
    finally:
        b.stop()
    assert len(out) == 6000 and out.all()
    assert calls[0] == FIRST_BATCH_TOKENS
    assert len(calls) > 5 and all(200 <= n <= 700 for n in calls[1:-1]), calls  # -1: the rest
    unbounded: list[int] = []
    b = Batcher("t", lambda items: (unbounded.append(len(items)), np.ones(len(items)))[1],
                max_tokens=100_000, max_batch_ms=0, max_wait_ms=0).start()  # fmt: skip
    try:
        b.run_sync(["x"] * 6000, tokens=6000)
    finally:
        b.stop()
    assert unbounded == [6000]


def test_drain_rate_follows_the_last_seconds_not_a_quiet_past():
    """A quiet server's fast batches must not set the rate (and Retry-After) of a burst."""
    from rankwise.server.admission import DrainMeter

    m = DrainMeter(horizon=5.0, min_batches=3)
    for i in range(32):  # 1,000 tokens/s while quiet
        rate = m.add(100, 0.1, at=i * 0.1)
    assert rate == pytest.approx(1000)
    for i in range(60):  # then 250 tokens/s in a burst, for 24 s
        rate = m.add(100, 0.4, at=3.2 + 0.4 * (i + 1))
    assert rate == pytest.approx(250)
    m = DrainMeter(horizon=5.0, min_batches=3)
    for at in (0.0, 100.0, 200.0):  # idle gaps: the last few batches still count
        rate = m.add(100, 0.1, at=at)
    assert rate == pytest.approx(1000) and len(m._batches) == 3


def _request(b: Batcher, before: float, after: float, items=("a",), tokens=10):
    """One request as the server makes it: a held place, ``before`` seconds of work (body,
    validation, tokens), the model job, ``after`` seconds (the response); own context."""

    def go():
        with b.admission():
            time.sleep(before)
            fut = b.submit(list(items), tokens, reserved=True)
            fut.result(5)
            time.sleep(after)

    contextvars.Context().run(go)


def test_request_cost_outside_the_model_is_measured_on_requests_served_alone():
    b = Batcher("t", Recorder(delay=0.2), max_wait_ms=0).start()
    try:
        assert b.request_cost is None
        _request(b, 0.15, 0.1)  # 0.25 s of its own work around 0.2 s of model time
        assert b.request_cost is not None and 0.24 <= b.request_cost < 0.4
        # a request that shares the server is not measured (its time includes waits)
        gate = threading.Event()
        shared = threading.Thread(
            target=lambda: contextvars.Context().run(_held_until, b, gate), daemon=True
        )
        shared.start()
        while b._pending == 0:
            time.sleep(0.005)
        _request(b, 1.0, 0.0)
        gate.set()
        shared.join(5)
        assert b.request_cost < 0.4  # still the alone request's cost
    finally:
        b.stop()


def _held_until(b: Batcher, gate: threading.Event) -> None:
    with b.admission():
        gate.wait(5)


def test_retry_after_adds_each_unfinished_requests_cost_outside_the_model():
    """A burst of small requests drains at the speed of their HTTP work, not the model's:
    Retry-After = queued tokens / drain rate + unfinished requests × request cost."""
    gate, slow = _gated()
    b = Batcher("t", Recorder(), max_queue=3, max_wait_ms=0).start()
    try:
        _request(b, 0.5, 0.0)  # measured alone: ~0.5 s per request outside the model
        cost = b.request_cost
        assert 0.49 <= cost < 0.7
        b.fn = slow  # the model now blocks: the queue fills
        b._rate = 1000.0  # as if measured: 1,000 tokens/s
        jobs = [b.submit(["x"], 100)]
        while not b._jobs[0].started:  # the worker holds the first; three more fill the queue
            time.sleep(0.005)
        jobs += [b.submit(["x"], 100) for _ in range(3)]  # 400 tokens, 4 requests unfinished
        with pytest.raises(Overloaded) as err:
            b.submit(["y"], 1)
        # 400 / 1000 + 4 × cost, rounded up: 3 s with cost ~0.5 (not 1 s from tokens alone)
        assert err.value.retry_after == pytest.approx(np.ceil(0.4 + 4 * cost))
        assert err.value.retry_after >= 3
        gate.set()
        for j in jobs:
            j.result(5)
    finally:
        gate.set()
        b.stop()


def test_places_are_priced_by_their_declared_body_size_until_their_jobs_are():
    """Retry-After counts a place still being read at its Content-Length (4 bytes a token),
    not at the mean of earlier jobs (a server that served 2-document reranks priced a burst
    of 50-document ones at a 25th of their cost)."""
    gate, slow = _gated()
    b = Batcher("t", slow, max_queue=3, max_wait_ms=0).start()
    try:
        b._rate = 100.0
        b._job_tokens = 1.0  # earlier jobs were tiny
        held = [(contextvars.Context(), b.admission(body_bytes=400)) for _ in range(3)]
        for ctx, place in held:  # three places, 400 bytes each: 100 tokens each
            ctx.run(place.__enter__)
        with pytest.raises(Overloaded) as err:
            b.submit(["x"], 1)
        assert err.value.retry_after == 3  # 300 tokens at 100 tokens/s (not 3 × 1 token)
        for ctx, place in held:  # unread places leave no tokens behind
            ctx.run(place.__exit__, None, None, None)
        assert b._pending == 0 and b._pending_tokens == 0 and b._pending_estimated == 0
    finally:
        gate.set()
        b.stop()


def test_a_probe_job_does_not_price_the_mean_admitted_cost():
    b = Batcher("t", Recorder(), max_wait_ms=0).start()
    try:
        b.run_sync(["a" * 8] * 8, 1024, typical=False)
        assert b._job_tokens is None and b.drain_rate is not None
        b.run_sync(["a"], 10)
        assert b._job_tokens == 10
    finally:
        b.stop()
