"""The cascade (recall → ColBERT → cross-encoder) and the side index it reads, on a tiny M3."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_m3 import build_tiny_m3

from rankwise.cascade import maxsim, parse_cascade
from rankwise.catalog import Catalog
from rankwise.errors import InvalidRequest, UnsupportedFeature
from rankwise.models import Embedder, Reranker
from rankwise.models.m3 import lexical_score
from rankwise.search import Searcher

CATEGORIES = ["phone", "fruit", "shoes", "tools"]
WORDS = "apple iphone smartphone fresh red apples running shoes mesh cordless drill battery".split()


def _records(n=80):
    rng = np.random.default_rng(0)
    return [
        {
            "id": f"p{i:03d}",
            "title": " ".join(rng.choice(WORDS, size=3 + i % 5)),
            "text": "summer breathable" if i % 3 else "",
            "category": CATEGORIES[i % 4],
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def m3(tmp_path_factory):
    return Embedder(str(build_tiny_m3(tmp_path_factory.mktemp("m3"))), device="cpu")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, m3):
    uri = str(tmp_path_factory.mktemp("idx"))
    cat = Catalog.open(uri, m3, outputs=("dense", "sparse", "colbert"))
    cat.add(_records())
    return cat


@pytest.fixture(scope="module")
def searcher(catalog, tiny_reranker_dir):
    return Searcher(catalog, Reranker(str(tiny_reranker_dir)), mode="hybrid")


# -- parsing ------------------------------------------------------------------------------------
def test_parse_orders_and_depths():
    c = parse_cascade("hybrid:200, colbert:50,rerank:10")
    assert [(s.name, s.depth) for s in c.stages] == [
        ("hybrid", 200),
        ("colbert", 50),
        ("rerank", 10),
    ]
    assert [p.label() for p in c.prefixes()] == [
        "hybrid:200",
        "hybrid:200,colbert:50",
        "hybrid:200,colbert:50,rerank:10",
    ]
    assert parse_cascade("bm25:100,rerank:10").recall.name == "lexical"
    assert parse_cascade("sparse:100,colbert:20").needs() == ("sparse", "colbert")


@pytest.mark.parametrize(
    ("spec", "msg"),
    [
        ("colbert:50,rerank:10", "first \\(recall\\) stage 'colbert'"),
        ("hybrid:200,rerank:10,colbert:5", "recall, colbert, rerank"),
        ("hybrid:50,colbert:100", "deeper than the hybrid:50"),
        ("hybrid", "needs a depth"),
        ("hybrid:0", "at least 1"),
        ("hybrid:100,splade:10", "not one of colbert, rerank"),
        ("", "cascade must be a string"),
    ],
)
def test_parse_errors_name_the_problem(spec, msg):
    with pytest.raises(InvalidRequest, match=msg):
        parse_cascade(spec)


# -- MaxSim ---------------------------------------------------------------------------------------
def test_maxsim_equals_brute_force():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    docs = [rng.normal(size=(n, 8)).astype(np.float32) for n in (1, 3, 7)] + [np.zeros((0, 8))]
    got = maxsim(q, docs)
    for d, g in zip(docs, got, strict=True):
        ref = 0.0
        if len(d):
            ref = sum(max(float(qi @ dj) for dj in d) for qi in q) / len(q)
        assert g == pytest.approx(ref, rel=1e-5, abs=1e-6)


# -- the cascade end to end -----------------------------------------------------------------------
def test_cascade_stages_run_in_order_at_their_depths(searcher, catalog, m3):
    query = "apple iphone smartphone"
    resp = searcher.search(query, cascade="hybrid:30,colbert:10,rerank:5")
    assert [(s["stage"], s["depth"], s["scored"]) for s in resp.stages] == [
        ("hybrid", 30, 30),
        ("colbert", 10, 30),
        ("rerank", 5, 10),  # the cross-encoder scores K2 pairs, not K1
    ]
    assert resp.reranked and len(resp.results) == 5
    assert {"embed", "recall", "colbert", "rerank", "total"} <= set(resp.timings)
    # ColBERT kept the 10 best of the 30 recalled by MaxSim over the stored vectors
    recalled = searcher.recall(query, mode="hybrid", top_k=30)
    qv = m3.encode_multi([query], "query", ("colbert",)).colbert[0]
    ref = maxsim(qv, catalog.side.colbert([h.id for h in recalled]))
    # The tiny random model's MaxSim sums are threaded float sums, so two products
    # whose scores differ by less than float noise may swap at the cut: "kept" is
    # every product whose reference score reaches the 10th best, less that noise.
    tol = 2e-3
    ref_by_id = {h.id: float(s) for h, s in zip(recalled, ref, strict=True)}
    tenth = np.sort(ref)[::-1][9]
    kept = {i for i, s in ref_by_id.items() if s >= tenth - tol}
    assert {r.id for r in resp.results} <= kept
    colbert_only = searcher.search(query, cascade="hybrid:30,colbert:10")
    got = {r.id for r in colbert_only.results}
    assert len(got) == 10 and got <= kept and not colbert_only.reranked
    # and nothing clearly better than what it kept was dropped
    assert all(ref_by_id[i] <= min(ref_by_id[g] for g in got) + tol for i in set(ref_by_id) - got)
    scores = [r.colbert_score for r in colbert_only.results]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(sorted(scores, reverse=True), np.sort(ref)[::-1][:10], atol=2e-3)


def test_sparse_recall_matches_lexical_scores_and_filters_first(searcher, catalog, m3):
    query = "cordless drill battery"
    qw = m3.encode_multi([query], "query", ("sparse",)).sparse[0]
    ref = {
        r["id"]: lexical_score(qw, catalog.side.sparse.get(r["id"]))
        for batch in catalog.store.iter_records()
        for r in batch
    }
    resp = searcher.search(query, cascade="sparse:10")
    want = sorted((i for i in ref if ref[i] > 0), key=lambda i: -ref[i])[:10]
    assert [r.id for r in resp.results] == want
    np.testing.assert_allclose(
        [r.recall_score for r in resp.results], [ref[i] for i in want], rtol=1e-4
    )
    tools = searcher.search(query, cascade="sparse:8", filters={"category": "tools"})
    assert len(tools.results) == 8 and all(r.record["category"] == "tools" for r in tools.results)
    fused = searcher.search(query, cascade="fused:20,colbert:5")
    assert len(fused.results) == 5 and fused.stages[0]["stage"] == "fused"


def test_side_index_persists_reports_size_and_follows_deletes(catalog, m3):
    again = Catalog.open(catalog.store.uri, m3)  # an index with a side index opens it
    assert again.side is not None and again.side.outputs == ("sparse", "colbert")
    v = again.side.colbert(["p001"])[0]
    np.testing.assert_allclose(v, catalog.side.colbert(["p001"])[0])
    info = again.side.info()
    assert info["counts"]["sparse"] == 80 and info["counts"]["colbert_dim"] == 24
    assert info["disk_bytes_per_product"] > 0 and info["memory_bytes_per_product"]["colbert"] > 0
    again.delete(["p079"])
    assert Catalog.open(catalog.store.uri, m3).side.colbert(["p079"]) == [None]


def test_cascade_on_a_dense_only_index_says_what_is_missing(tmp_path, m3):
    cat = Catalog.open(str(tmp_path / "dense"), m3)
    cat.add(_records(10))
    with pytest.raises(UnsupportedFeature, match="colbert vectors"):
        Searcher(cat, mode="dense").search("apple", cascade="dense:5,colbert:2")


def _reverse_recall_blend():
    """A blend trained to prefer products the first stage ranked low: its order differs
    from the cross-encoder's, so a response in blend order proves the blend ran."""
    from rankwise.blend import BlendModel, BlendSpec, BlendStage

    rng = np.random.default_rng(3)
    per, n_queries = 20, 30
    rank = np.tile(np.arange(1, per + 1, dtype=np.float32), n_queries)
    X = np.column_stack([rng.normal(size=rank.size), rank, rng.normal(size=rank.size)])
    y = np.digitize(rank, [8, 14, 18])
    spec = BlendSpec(max_move=None)
    return BlendStage(
        BlendModel.fit(X.astype(np.float32), y, [per] * n_queries, spec, num_rounds=20)
    )


@pytest.mark.parametrize(
    ("spec", "whole_spec"),
    [
        ("hybrid:30,colbert:10,rerank:4", "hybrid:30,colbert:10,rerank:10"),
        ("hybrid:30,colbert:4", "hybrid:30,colbert:30"),
    ],
)
def test_cascade_applies_the_blend_stage_to_every_candidate_then_cuts(
    catalog, searcher, spec, whole_spec
):
    """Before the fix the cascade returned before the blend: ``--cascade`` + ``--blend``
    silently dropped the blend (no blend_score, cross-encoder order)."""
    blend = _reverse_recall_blend()
    blended = Searcher(catalog, searcher.reranker, mode="hybrid", blend=blend)
    query = "apple iphone smartphone"
    resp = blended.search(query, cascade=spec, explain=True)
    # the reference: the last stage keeps all it scored, blended by hand, cut to 4
    whole = searcher.search(query, cascade=whole_spec).results
    want = blend.apply(query, whole, explain=True)[:4]
    assert [r.id for r in resp.results] == [r.id for r in want]
    assert [r.rank for r in resp.results] == [1, 2, 3, 4]
    assert all(r.blend_score is not None and r.explain is not None for r in resp.results)
    assert [r.id for r in resp.results] != [r.id for r in whole[:4]]  # the blend moved them
    assert "blend" in resp.timings and resp.stages[-1]["depth"] == 4
