"""Searcher: fusion order, threshold, rerank=False, filters before Top-N, skip rule, cache."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.catalog import Catalog
from rankwise.errors import InvalidRequest
from rankwise.search import Searcher, SkipRule, rrf_fuse, weighted_fuse
from rankwise.store import Hit

CATEGORIES = ["phone", "fruit", "shoes", "tools"]


def _hits(ids, scores=None):
    scores = scores or [1.0 / (i + 1) for i in range(len(ids))]
    return [Hit(i, s, {"title": i}) for i, s in zip(ids, scores, strict=True)]


def test_rrf_order_matches_the_formula():
    dense = _hits(["a", "b", "c"])
    lexical = _hits(["c", "a", "d"])
    fused = rrf_fuse([dense, lexical], k=60)
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert [h.id for h in fused] == sorted(expected, key=lambda i: -expected[i])
    assert [h.id for h in fused] == ["a", "c", "b", "d"]
    for h in fused:
        assert h.score == pytest.approx(expected[h.id])


def test_rrf_ties_keep_first_seen_and_weights_shift_the_order():
    fused = rrf_fuse([_hits(["x"]), _hits(["y"])])
    assert [h.id for h in fused] == ["x", "y"]  # equal scores: first list first
    fused = rrf_fuse([_hits(["x"]), _hits(["y"])], weights=[0.2, 0.8])
    assert [h.id for h in fused] == ["y", "x"]


def test_interpolation_weighs_standardised_scores_whatever_their_scale():
    from rankwise.ranking import interpolate

    logits = np.array([2.0, 0.0, 1.0, -1.0])  # reranker: a > c > b > d
    recall = np.array([10.0, 30.0, 20.0, 40.0])  # recall (e.g. BM25): d > b > c > a
    order = lambda key: list(np.argsort(-key, kind="stable"))  # noqa: E731
    assert order(interpolate(logits, recall, 1.0)) == [0, 2, 1, 3]
    assert order(interpolate(logits, recall, 0.0)) == [3, 1, 2, 0]
    half = interpolate(logits, recall, 0.5)
    # z(logits) = [1.34, -0.45, 0.45, -1.34], z(recall) = [-1.34, 0.45, -0.45, 1.34]: all tie
    assert np.allclose(half, 0.0)
    # a recall score 1,000x larger moves nothing: each list is standardised per query
    assert np.allclose(interpolate(logits, recall * 1000, 0.3), interpolate(logits, recall, 0.3))
    # a constant list carries no order and adds nothing
    assert order(interpolate(logits, np.ones(4), 0.5)) == order(logits)


def test_weighted_fusion_normalises_each_list():
    dense = _hits(["a", "b"], [0.9, 0.1])  # a → 1.0, b → 0.0
    lexical = _hits(["b", "c"], [30.0, 10.0])  # b → 1.0, c → 0.0
    fused = weighted_fuse([dense, lexical], (0.3, 0.7))
    assert [(h.id, round(h.score, 6)) for h in fused] == [("b", 0.7), ("a", 0.3), ("c", 0.0)]


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, tiny_embedder_dir, tiny_reranker_dir):
    from rankwise.models import Embedder, Reranker

    catalog = Catalog.open(str(tmp_path_factory.mktemp("idx")), Embedder(str(tiny_embedder_dir)))
    records = [
        {
            "id": f"p{i:03d}",
            "title": f"{CATEGORIES[i % 4]} product {i} apple iphone shoes drill",
            "text": "summer breathable" if i % 3 else "",
            "category": CATEGORIES[i % 4],
            "price": float(i),
        }
        for i in range(120)
    ]
    # Few phones are cheap: an unfiltered Top-K would hold only a handful of them.
    catalog.add(records)
    return Searcher(catalog, Reranker(str(tiny_reranker_dir)), top_k=20, top_n=5)


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_filters_apply_before_top_n(searcher, mode):
    resp = searcher.search(
        "apple iphone",
        mode=mode,
        top_k=10,
        top_n=8,
        filters={"category": "tools", "price": {"lt": 60}},
    )
    ids = [r.id for r in resp.results]
    # 15 tools products have price < 60 (i = 3, 7, ..., 59): a post-filter of an
    # unfiltered Top-10 would return about 10 / 4 of them; prefiltering returns 8.
    assert len(ids) == 8
    assert all(r.record["category"] == "tools" and r.record["price"] < 60 for r in resp.results)


def test_rerank_false_returns_first_stage(searcher):
    first = searcher.recall("apple iphone", mode="hybrid", top_k=20)
    resp = searcher.search("apple iphone", rerank=False, top_n=5)
    assert not resp.reranked
    assert [r.id for r in resp.results] == [h.id for h in first[:5]]
    assert all(r.rerank_score is None and r.relevance is None for r in resp.results)


def test_rerank_orders_by_logit_and_reports_both_scores(searcher):
    resp = searcher.search("apple iphone", top_n=5)
    assert resp.reranked and len(resp.results) == 5
    logits = [r.rerank_score for r in resp.results]
    assert logits == sorted(logits, reverse=True)
    for r in resp.results:
        assert r.relevance == pytest.approx(1 / (1 + np.exp(-r.rerank_score)), abs=1e-6)
        assert isinstance(r.rerank_score, float)
    # reranked scores equal the reranker's own scores for the same documents
    from rankwise.data import document_text

    direct = searcher.reranker.score(
        "apple iphone", [document_text(r.record) for r in resp.results]
    )
    np.testing.assert_allclose(direct, logits, rtol=1e-5, atol=1e-5)


def test_threshold_keeps_only_relevant(searcher):
    all_results = searcher.search("drill", top_n=20).results
    rels = sorted(r.relevance for r in all_results)
    thr = rels[len(rels) // 2]
    kept = searcher.search("drill", top_n=20, threshold=thr).results
    assert kept and all(r.relevance >= thr for r in kept)
    assert len(kept) == sum(1 for x in rels if x >= thr)


def test_skip_rule_on_exact_title(searcher):
    s = Searcher(searcher.catalog, searcher.reranker, skip_rule=SkipRule(exact_title=True))
    title = searcher.catalog.store.get(["p007"])[0]["title"]
    resp = s.search(title.upper(), mode="lexical")
    if resp.results and resp.results[0].id == "p007":
        assert not resp.reranked and resp.skipped_reason == "exact title match"
    resp2 = s.search("summer", mode="lexical")
    assert resp2.reranked and resp2.skipped_reason is None


def test_bad_requests(searcher):
    with pytest.raises(InvalidRequest):
        searcher.search("   ")
    with pytest.raises(InvalidRequest):
        searcher.search("x", mode="fuzzy")


class DictCache:
    def __init__(self):
        self.data: dict[str, bytes] = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value):
        self.data[key] = value


def test_cache_returns_the_same_body(searcher):
    cache = DictCache()
    s = Searcher(searcher.catalog, searcher.reranker, cache=cache, top_n=3)
    a = s.search("apple iphone")
    b = s.search("apple iphone")
    assert not a.cached and b.cached
    assert [r.__dict__ for r in a.results] == [r.__dict__ for r in b.results]
    s.search("apple iphone", top_n=2)
    assert len(cache.data) == 2  # parameters are part of the key
