"""Every metric against the reference implementations (ranx, pytrec_eval) on random runs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import pytrec_eval
import ranx

from rankwise.errors import InvalidRequest
from rankwise.evaluate.metrics import METRICS, compute_metrics, parse_ks, rank_documents

KS = (1, 3, 5, 10, 20)


def random_set(seed: int, n_queries: int = 40, ties: bool = False):
    """Graded qrels 0..3 and a run; some queries have only grade-0 judgments."""
    rng = random.Random(seed)
    qrels, run = {}, {}
    for qi in range(n_queries):
        q = f"q{qi}"
        docs = [f"d{j}" for j in rng.sample(range(200), 30)]
        judged = rng.sample(docs, rng.randint(1, 12)) + [f"x{qi}"]  # x: judged, never retrieved
        only_zero = qi % 9 == 0
        qrels[q] = {d: 0 if only_zero else rng.choice([0, 0, 1, 2, 3]) for d in judged}
        if ties:  # few distinct values: many ties, broken by doc id
            run[q] = {d: float(rng.randint(0, 4)) for d in docs}
        else:
            run[q] = {d: rng.random() for d in docs}
    return qrels, run


def ranx_means(qrels, run, names):
    res = ranx.evaluate(qrels, run, names, return_mean=False, make_comparable=False)
    return {n: np.asarray(res[n]) for n in names}


@pytest.mark.parametrize("threshold", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_ranx(seed, threshold):
    qrels, run = random_set(seed)
    run = {q: run[q] for q in qrels}  # ranx aligns queries by dict order
    ours = compute_metrics(run, qrels, KS, threshold=threshold, no_relevant="zero")
    ours_exp = compute_metrics(
        run, qrels, KS, ["ndcg"], threshold=threshold, gain="exponential", no_relevant="zero"
    )
    order = [ours.query_ids.index(q) for q in qrels]
    ranx_name = {
        "ndcg": "ndcg",
        "recall": "recall",
        "precision": "precision",
        "mrr": "mrr",
        "map": "map",
        "hit_rate": "hit_rate",
    }
    names = [f"{ranx_name[m]}@{k}-l{threshold}" for m in METRICS for k in KS]
    names += [f"ndcg_burges@{k}-l{threshold}" for k in KS]
    ref = ranx_means(qrels, run, names)
    for m in METRICS:
        for k in KS:
            np.testing.assert_allclose(
                ours.values[f"{m}@{k}"][order],
                ref[f"{m}@{k}-l{threshold}"],
                atol=1e-6,
                err_msg=f"{m}@{k}",
            )
    for k in KS:
        np.testing.assert_allclose(
            ours_exp.values[f"ndcg@{k}"][order], ref[f"ndcg_burges@{k}-l{threshold}"], atol=1e-6
        )


@pytest.mark.parametrize("threshold", [1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_trec_eval(ties, threshold):
    qrels, run = random_set(7, ties=ties)
    del run["q5"]  # a query the run lacks
    ours = compute_metrics(run, qrels, KS, threshold=threshold, no_relevant="zero")
    ks = ",".join(map(str, KS))
    measures = {f"recall.{ks}", f"P.{ks}", f"map_cut.{ks}", f"success.{ks}", f"ndcg_cut.{ks}"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=threshold).evaluate(run)
    names = {
        "recall": "recall_{}",
        "precision": "P_{}",
        "map": "map_cut_{}",
        "hit_rate": "success_{}",
        "ndcg": "ndcg_cut_{}",
    }
    for m, ref_name in names.items():
        if m == "ndcg" and threshold != 1:
            continue  # trec_eval's ndcg ignores -l; ranx covers thresholds above
        for k in KS:
            want = [ref.get(q, {}).get(ref_name.format(k), 0.0) for q in ours.query_ids]
            np.testing.assert_allclose(ours.values[f"{m}@{k}"], want, atol=1e-6, err_msg=f"{m}@{k}")
    for k in KS:  # MRR@k = trec_eval recip_rank on the run cut at k (in trec_eval's order)
        cut = {q: {d: s[d] for d in rank_documents(s, k)} for q, s in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(
            qrels, {"recip_rank"}, relevance_level=threshold
        ).evaluate(cut)
        want = [rr.get(q, {}).get("recip_rank", 0.0) for q in ours.query_ids]
        np.testing.assert_allclose(ours.values[f"mrr@{k}"], want, atol=1e-6, err_msg=f"mrr@{k}")


def test_ties_broken_by_doc_id_descending_like_trec_eval():
    assert rank_documents({"a": 1.0, "c": 1.0, "b": 2.0, "d": 1.0}) == ["b", "d", "c", "a"]
    assert rank_documents({"a": 1.0, "c": 1.0, "b": 2.0, "d": 1.0}, k=2) == ["b", "d"]


def test_queries_without_relevant_documents_follow_the_convention():
    qrels = {"q1": {"a": 2, "b": 0}, "q2": {"c": 0}, "q3": {"e": 1}}
    run = {"q1": {"a": 0.9, "b": 0.8}, "q2": {"c": 0.5}}  # q3 missing from the run
    skip = compute_metrics(run, qrels, (1, 2))
    assert skip.query_ids == ["q1", "q3"] and skip.skipped == ["q2"]
    assert skip.mean()["ndcg@1"] == pytest.approx(0.5)  # q1 = 1, q3 (not retrieved) = 0
    zero = compute_metrics(run, qrels, (1, 2), no_relevant="zero")
    assert zero.query_ids == ["q1", "q2", "q3"] and zero.skipped == []
    assert zero.per_query("recall@2") == {"q1": 1.0, "q2": 0.0, "q3": 0.0}
    assert zero.mean()["mrr@1"] == pytest.approx(1 / 3)
    d = skip.to_dict(per_query=True)
    assert d["no_relevant"] == "skip" and d["skipped_queries"] == ["q2"]
    assert d["per_query"]["ndcg@1"] == {"q1": 1.0, "q3": 0.0}


def test_threshold_changes_what_counts_as_relevant():
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 0.9, "b": 0.1}}
    assert compute_metrics(run, qrels, [1], threshold=1).mean()["precision@1"] == 1.0
    assert compute_metrics(run, qrels, [1], threshold=2).mean()["precision@1"] == 0.0


def test_bad_arguments_are_clear_errors():
    assert parse_ks("10, 1,5") == (1, 5, 10)
    with pytest.raises(InvalidRequest, match="cut-offs"):
        parse_ks("1,x")
    with pytest.raises(InvalidRequest, match="positive"):
        parse_ks([0, 5])
    with pytest.raises(InvalidRequest, match="unknown metric"):
        compute_metrics({}, {"q": {"a": 1}}, [1], ["bleu"])
