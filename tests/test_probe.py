"""The load-time probe of the batching cost model's per-pass overhead (models/probe.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.models import Reranker
from rankwise.models.probe import CAP, fit_overhead, measure_batch_overhead


class CostClock:
    """A runner whose every pass advances a clock by ``overhead + per_token * tokens``: the
    linear cost model with known constants, to check the probe's arithmetic exactly."""

    input_names = ("input_ids", "attention_mask")

    def __init__(self, overhead: float, per_token: float, noise: list[float] | None = None):
        self.overhead, self.per_token, self.now = overhead, per_token, 0.0
        self.noise = list(noise or [])

    def clock(self) -> float:
        return self.now

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        rows, width = inputs["input_ids"].shape
        assert set(inputs) == set(self.input_names)
        self.now += self.overhead + self.per_token * rows * width
        self.now += self.noise.pop(0) if self.noise else 0.0
        return np.zeros(rows, np.float32)


@pytest.mark.parametrize("overhead_tokens", [0.0, 8.0, 30.0, 100.0])
def test_probe_recovers_the_overhead(overhead_tokens):
    per_token = 1e-4
    runner = CostClock(overhead_tokens * per_token, per_token)
    got = measure_batch_overhead(runner, runner.input_names, 0, clock=runner.clock)
    assert got == pytest.approx(overhead_tokens, abs=1e-6)


def test_probe_takes_the_minimum_so_other_processes_load_does_not_inflate_it():
    per_token = 1e-4
    # two warm-up passes, then 5 x (small, big): every pass but one of each slowed by 50 ms
    noise = [0.0, 0.0] + [0.05] * 8 + [0.0, 0.0]
    runner = CostClock(8 * per_token, per_token, noise)
    got = measure_batch_overhead(runner, runner.input_names, 0, clock=runner.clock)
    assert got == pytest.approx(8.0, abs=1e-6)


def test_fit_is_clamped():
    assert fit_overhead(1.0, 8, 0.5, 128) == CAP  # big pass faster: all overhead
    assert fit_overhead(0.001, 8, 0.1, 128) == 0.0  # negative intercept clamps to 0


def test_reranker_on_cpu_measures_its_overhead_when_asked(tiny_reranker_dir, monkeypatch):
    table = Reranker(str(tiny_reranker_dir), score_cache_size=0)
    assert (table.batch_overhead, table.batch_overhead_source) == (30.0, "table")
    monkeypatch.setenv("RANKWISE_BATCH_OVERHEAD", "probe")
    probed = Reranker(str(tiny_reranker_dir), score_cache_size=0)
    assert probed.batch_overhead_source == "probe"
    assert 0.0 <= probed.batch_overhead <= CAP
    given = Reranker(str(tiny_reranker_dir), batch_overhead=12.5, score_cache_size=0)
    assert (given.batch_overhead, given.batch_overhead_source) == (12.5, "given")
    docs = ["cordless drill 18v", "garden hose " * 30, "led bulb"]
    np.testing.assert_allclose(
        probed.score("drill", docs), given.score("drill", docs), rtol=1e-5, atol=1e-5
    )
