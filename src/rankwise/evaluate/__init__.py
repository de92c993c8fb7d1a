"""Relevance evaluation: metrics, pools, runs, significance, separation, calibration.

>>> from rankwise.evaluate import evaluate
>>> report = evaluate("data/homedepot", split="test", systems="lexical,dense,hybrid",
...                   embedder="sentence-transformers/all-MiniLM-L6-v2")
>>> print(report.to_markdown()); report.save("eval-out", save_runs=True)

Lower level, for any run and qrels (e.g. the tuning stage's before/after reports):

>>> m = compute_metrics(run, qrels, ks=(1, 5, 10))
>>> m.mean()["ndcg@10"], m.per_query("mrr@10")
"""

from rankwise.evaluate.calibration import ThresholdChoice, calibrate_threshold
from rankwise.evaluate.metrics import (
    METRICS,
    Qrels,
    QueryMetrics,
    Run,
    compute_metrics,
    parse_ks,
    rank_documents,
)
from rankwise.evaluate.pools import POOLS, judged_candidates, pool_corpus, union_of_judged
from rankwise.evaluate.report import EvaluationReport, SystemResult
from rankwise.evaluate.runner import SYSTEMS, evaluate, parse_systems
from rankwise.evaluate.runs import check_run_ids, read_run, write_run
from rankwise.evaluate.separation import Separation, sample_negatives, separation
from rankwise.evaluate.significance import Comparison, compare, paired_ttest, randomization_test

__all__ = [
    "METRICS",
    "POOLS",
    "SYSTEMS",
    "Comparison",
    "EvaluationReport",
    "QueryMetrics",
    "Qrels",
    "Run",
    "Separation",
    "SystemResult",
    "ThresholdChoice",
    "calibrate_threshold",
    "check_run_ids",
    "compare",
    "compute_metrics",
    "evaluate",
    "judged_candidates",
    "paired_ttest",
    "parse_ks",
    "parse_systems",
    "pool_corpus",
    "randomization_test",
    "rank_documents",
    "read_run",
    "sample_negatives",
    "separation",
    "union_of_judged",
    "write_run",
]
