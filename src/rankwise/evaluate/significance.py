"""Paired significance tests between systems on per-query metric values.

Both tests pair the systems query by query (the same queries, the same qrels):

* ``ttest``: Student's paired t-test (:func:`scipy.stats.ttest_rel`).
* ``randomization``: the paired randomisation (sign-flip permutation) test of the mean
  difference (:func:`scipy.stats.permutation_test` with ``permutation_type="samples"``),
  the test Smucker et al. (CIKM 2007) recommend for IR evaluation.

p-values are two-sided. Identical per-query values give p = 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from rankwise.errors import InvalidRequest
from rankwise.evaluate.templates import template_pairs

if TYPE_CHECKING:
    from rankwise.evaluate.report import SystemResult

TESTS = ("ttest", "randomization")
#: Resamples and seed of the randomisation test, one setting for every report (evaluation
#: and tuning), so the same comparison always gets the same p-value.
N_RESAMPLES = 10_000
SEED = 0


def describe_test(test: str = "randomization") -> str:
    """How p-values were computed, for a report's one statement of it."""
    if test == "ttest":
        return "paired t-test"
    return f"paired randomisation test ({N_RESAMPLES:,} resamples, seed {SEED})"


def paired_ttest(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test; ``a``, ``b``: float (n_queries,)."""
    a, b = _pair(a, b)
    if np.allclose(a, b):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def randomization_test(
    a: np.ndarray, b: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> float:
    """Two-sided p-value of the paired randomisation test of ``mean(a - b)``."""
    a, b = _pair(a, b)
    if np.allclose(a, b):
        return 1.0
    res = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise InvalidRequest(
            f"paired tests need per-query values for the same queries; got shapes {a.shape} and {b.shape}"
        )
    return a, b


@dataclass(frozen=True)
class Comparison:
    """System ``system`` against ``baseline`` on ``metric``: mean difference and p-value."""

    system: str
    baseline: str
    metric: str
    delta: float
    p_value: float
    test: str
    wins: int
    losses: int
    ties: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def compare(
    per_query: Mapping[str, np.ndarray],
    metric: str,
    pairs: Sequence[tuple[str, str]],
    test: str = "randomization",
    n_resamples: int = N_RESAMPLES,
) -> list[Comparison]:
    """Compare systems pairwise.

    Args:
        per_query: ``{system: values}`` for one metric, each float (n_queries,), aligned.
        metric: the metric name, carried into the results.
        pairs: ``(system, baseline)`` pairs to test.
        test: ``"randomization"`` or ``"ttest"``.
    """
    if test not in TESTS:
        raise InvalidRequest(f"unknown test {test!r}; choose from {', '.join(TESTS)}")
    out = []
    for system, baseline in pairs:
        a, b = _pair(per_query[system], per_query[baseline])
        p = paired_ttest(a, b) if test == "ttest" else randomization_test(a, b, n_resamples)
        diff = a - b
        out.append(
            Comparison(
                system,
                baseline,
                metric,
                float(diff.mean()) if diff.size else 0.0,
                p,
                test,
                int((diff > 1e-12).sum()),
                int((diff < -1e-12).sum()),
                int((np.abs(diff) <= 1e-12).sum()),
            )
        )
    return out


def compare_systems(results: Sequence[SystemResult], metric: str, test: str) -> list[dict]:
    """Each ``X+rerank`` against ``X``; every other system against the first of its pool;
    each ``X+rerank[template=T]`` also against ``X+rerank`` (``evaluate.templates``)."""
    by_pool: dict[str, dict[str, np.ndarray]] = {}
    for r in results:
        if r.metrics is not None and metric in r.metrics.values:
            by_pool.setdefault(r.pool, {})[r.system] = r.metrics.values[metric]
    out: list[dict] = []
    for pool, values in by_pool.items():
        names = list(values)
        pairs = [(s, s.split("+")[0]) for s in names if "+" in s and s.split("+")[0] in values]
        pairs += [(s, names[0]) for s in names[1:] if "+" not in s or s.split("+")[0] not in values]
        pairs += template_pairs(names)  # each rerank template against the default text
        for c in compare(values, metric, pairs, test=test):
            out.append({"pool": pool, **c.to_dict()})
    return out
