"""GPU out-of-memory backoff, by fault injection: no GPU here, so a wrapper around the real runner
raises the real ``torch.cuda.OutOfMemoryError`` type when a batch holds more padded tokens than
a pretend device fits. The model, tokeniser and batching are the real ones (tiny random model)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rankwise.errors import DeviceOutOfMemory
from rankwise.models import Embedder, Reranker
from rankwise.models.backoff import OomBackoff, length_bucket

_BASE = [
    "apple iphone 15 pro smartphone 256gb black",
    "fresh red apples fruit 1kg bag",
    "summer breathable running shoes mesh lightweight " * 6,
    "leather dress shoes for men brown oxford",
    "cordless drill 18v lithium battery kit",
    "wireless bluetooth headphones noise cancelling stainless steel kitchen sink faucet " * 3,
    "stainless steel kitchen sink faucet",
    "the quick brown fox jumps over the lazy dog",
]
DOCS = [f"{d} model {i}" for i, d in enumerate(_BASE * 4)]  # 32 distinct documents


class OomAbove:
    """The real runner, except that a batch of more than ``max_tokens`` padded tokens raises
    ``torch.cuda.OutOfMemoryError`` (as a device with that much room would)."""

    def __init__(self, runner, max_tokens: int):
        self.runner, self.max_tokens = runner, max_tokens
        self.input_names = runner.input_names
        self.shapes: list[tuple[int, int]] = []
        self.failures = 0

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        rows, width = inputs["input_ids"].shape
        self.shapes.append((rows, width))
        if rows * width > self.max_tokens:
            self.failures += 1
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {rows * width} tokens of activations"
            )
        return self.runner(inputs)


def _greedy(model):
    model.batch_overhead = None  # plain filling, as on a GPU: big batches that can OOM
    return model


def test_oom_halves_the_batch_and_scores_match(tiny_reranker_dir, caplog):
    model = _greedy(Reranker(str(tiny_reranker_dir), batch_size=64, score_cache_size=0))
    expected = model.score("apple phone", DOCS)
    faulty = OomAbove(model.runner, max_tokens=400)
    model.runner = faulty
    with caplog.at_level(logging.WARNING, logger="rankwise.models.backoff"):
        got = model.score("apple phone", DOCS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert faulty.failures >= 1
    # every pair was scored exactly once by a batch that fit
    ok = [(r, w) for r, w in faulty.shapes if r * w <= 400]
    assert sum(r for r, _ in ok) == len(DOCS)
    warnings = [r for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == len(model.oom_backoff.limits) >= 1  # one line per bucket


def test_oom_limit_is_remembered_and_logged_once(tiny_reranker_dir, caplog):
    model = _greedy(Reranker(str(tiny_reranker_dir), batch_size=64, score_cache_size=0))
    faulty = OomAbove(model.runner, max_tokens=400)
    model.runner = faulty
    first = model.score("apple phone", DOCS)
    failures = faulty.failures
    assert failures >= 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rankwise.models.backoff"):
        second = model.score("apple phone", DOCS)
    assert faulty.failures == failures  # the learnt size is used at once: no failed attempt
    assert not [r for r in caplog.records if "out of memory" in r.getMessage()]
    np.testing.assert_allclose(second, first, rtol=1e-6, atol=1e-6)


def test_embedder_backs_off_too(tiny_embedder_dir):
    model = _greedy(Embedder(str(tiny_embedder_dir), batch_size=64))
    expected = model.encode_documents(DOCS)
    model.runner = faulty = OomAbove(model.runner, max_tokens=300)
    got = model.encode_documents(DOCS)
    assert faulty.failures >= 1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_one_row_that_does_not_fit_is_a_clear_error(tiny_reranker_dir):
    model = _greedy(Reranker(str(tiny_reranker_dir), batch_size=64, score_cache_size=0))
    model.runner = OomAbove(model.runner, max_tokens=4)
    with pytest.raises(DeviceOutOfMemory, match="does not fit in device memory"):
        model.score("apple phone", DOCS[:3])


def test_other_runtime_errors_are_not_swallowed(tiny_reranker_dir):
    model = _greedy(Reranker(str(tiny_reranker_dir), batch_size=64, score_cache_size=0))

    def broken(inputs):
        raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")

    broken.input_names = model.runner.input_names
    model.runner = broken
    with pytest.raises(RuntimeError, match="CUBLAS"):
        model.score("apple phone", DOCS[:3])


def test_a_limit_learnt_on_short_rows_caps_longer_buckets():
    backoff = OomBackoff()
    calls: list[int] = []

    def fits_8(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(rows) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return rows.astype(np.float32)

    out = backoff.run(np.arange(32), 100, fits_8)
    assert calls[:3] == [32, 16, 8] and max(calls[3:]) <= 8
    assert np.concatenate([c for c, _ in out]).tolist() == list(range(32))
    assert backoff.limits == {128: 8}
    assert backoff.limit(100) == backoff.limit(500) == 8  # longer rows: no more than that
    assert backoff.limit(40) is None  # shorter rows have not failed
    assert length_bucket(1) == 16 and length_bucket(129) == 256
