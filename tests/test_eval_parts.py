"""Runs I/O, pools, significance, separation and threshold calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rankwise.errors import DataError, InvalidRequest
from rankwise.evaluate.calibration import apply_threshold, calibrate_threshold
from rankwise.evaluate.pools import judged_candidates, pool_corpus, union_of_judged
from rankwise.evaluate.runs import check_run_ids, read_run, write_run
from rankwise.evaluate.separation import sample_negatives, separation
from rankwise.evaluate.significance import compare, paired_ttest, randomization_test

QRELS = {"q1": {"a": 2, "b": 0}, "q2": {"c": 1, "a": 0}}
CORPUS = {d: {"title": d, "text": ""} for d in "abcdef"}


def test_run_roundtrip_keeps_order_and_scores(tmp_path):
    run = {"q2": {"x": 0.5, "y": 0.5, "z": 2.0}, "q1": {"a": -1.25}}
    p = write_run(run, tmp_path / "runs" / "r.trec", tag="my system")
    lines = p.read_text().splitlines()
    assert lines[0] == "q1 Q0 a 1 -1.25 my_system"
    assert [ln.split()[2] for ln in lines[1:]] == ["z", "y", "x"]  # ties: doc id descending
    assert read_run(p) == run


@pytest.mark.parametrize(
    "text, msg",
    [
        ("q1 Q0 a 1 0.5\n", "expected 6 columns"),
        ("q1 Q0 a 1 high run\n", "not a number"),
        ("q1 Q0 a 1 1 r\nq1 Q0 a 2 0.5 r\n", "listed twice"),
        ("\n", "empty"),
    ],
)
def test_bad_run_files_name_the_line(tmp_path, text, msg):
    p = tmp_path / "bad.trec"
    p.write_text(text)
    with pytest.raises(DataError, match=msg):
        read_run(p)
    with pytest.raises(DataError, match="not found"):
        read_run(tmp_path / "missing.trec")


def test_run_naming_unknown_documents_is_an_error():
    check_run_ids({"q1": {"a": 1.0}}, CORPUS)
    with pytest.raises(DataError, match="1 documents not in the corpus"):
        check_run_ids({"q1": {"a": 1.0, "zz": 0.5}}, CORPUS)


def test_pools_select_the_right_documents():
    assert union_of_judged(QRELS) == {"a", "b", "c"}
    assert judged_candidates(QRELS) == {"q1": ["a", "b"], "q2": ["a", "c"]}
    assert set(pool_corpus(CORPUS, "test", QRELS)) == {"a", "b", "c"}
    assert set(pool_corpus(CORPUS, "global", QRELS)) == set("abcdef")
    with pytest.raises(InvalidRequest, match="unknown pool"):
        pool_corpus(CORPUS, "judged-ish", QRELS)


def test_significance_tests_match_scipy_and_detect_differences():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a - 0.05 + rng.normal(0, 0.05, 200)
    assert paired_ttest(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert randomization_test(a, b, 2000) < 0.01
    noise = a + rng.normal(0, 0.05, 200)
    assert randomization_test(a, noise, 2000) > 0.01
    assert paired_ttest(a, a) == 1.0 and randomization_test(a, a) == 1.0
    (c,) = compare({"new": a, "old": b}, "ndcg@10", [("new", "old")], test="ttest")
    assert c.delta == pytest.approx(float(np.mean(a - b)))
    assert c.wins + c.losses + c.ties == 200 and c.wins > c.losses
    with pytest.raises(InvalidRequest, match="same queries"):
        paired_ttest(a, b[:10])


def test_separation_uses_positives_and_zero_or_unjudged_negatives():
    scores = {"q1": {"a": 0.9, "b": 0.1, "e": 0.3}, "q2": {"c": 0.6, "a": 0.2}}
    s = separation(scores, QRELS, model="m")
    assert s.n_positive == 2 and s.n_negative == 3 and s.n_queries == 2
    assert s.mean_positive == pytest.approx(0.75)
    assert s.mean_negative == pytest.approx(0.2)
    assert s.gap == pytest.approx(0.55)
    assert s.macro_gap == pytest.approx(((0.9 - 0.2) + (0.6 - 0.2)) / 2)
    neg = sample_negatives(QRELS, list("abcdef"), per_query=2, seed=1)
    assert all(len(v) == 2 and not set(v) & set(QRELS[q]) for q, v in neg.items())
    assert neg == sample_negatives(QRELS, list("abcdef"), per_query=2, seed=1)


def test_threshold_calibration_f1_and_precision_floor():
    qrels = {"q": {f"d{i}": int(i >= 6) for i in range(10)}}
    rel = {"q": {f"d{i}": i / 10 for i in range(10)}}
    rel["q"]["d4"] = 0.95  # one confident mistake
    best = calibrate_threshold(rel, qrels)
    assert best.threshold == pytest.approx(0.6) and best.recall == 1.0
    assert best.precision == pytest.approx(0.8) and best.f1 == pytest.approx(8 / 9)
    strict = calibrate_threshold(rel, qrels, objective="precision", min_precision=1.0)
    assert not strict.met and strict.precision == pytest.approx(0.8)  # the most precise
    ok = calibrate_threshold(rel, qrels, objective="precision", min_precision=0.6)
    assert ok.met and ok.threshold == pytest.approx(0.5) and ok.precision == pytest.approx(4 / 6)
    with pytest.raises(DataError, match="relevant and non-relevant"):
        calibrate_threshold({"q": {"d9": 0.9}}, qrels)
    with pytest.raises(InvalidRequest, match="min_precision"):
        calibrate_threshold(rel, qrels, objective="precision")


def test_a_threshold_chosen_on_one_split_is_checked_on_another():
    qrels = {"q": {"a": 1, "b": 0, "c": 2, "d": 0}}
    rel = {"q": {"a": 0.9, "b": 0.7, "c": 0.4, "d": 0.1, "unjudged": 0.99}}
    got = apply_threshold(rel, qrels, 0.5)
    assert got == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "n_pairs": 4}
    assert apply_threshold(rel, qrels, 0.95)["precision"] == 0.0  # nothing kept
