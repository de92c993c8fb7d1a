"""Calibrated recall and the promotion gate on small judged sets built here, with real models:
where dense is noise (a random tiny embedder) calibration picks lexical; where lexical is
noise (no word shared, real MiniLM) it picks dense or hybrid; the choice persists beside the
index and the Searcher (and the CLI) use it; a reranker that contradicts the dev judgments is
not promoted, and search then says why it did not rerank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rankwise.catalog import Catalog
from rankwise.errors import ConfigError
from rankwise.models import Embedder, Reranker
from rankwise.recipe import (
    PIPELINE_FILE,
    Pipeline,
    RecallRecipe,
    RerankDecision,
    detect_language,
    find_pipeline,
)
from rankwise.search import NOT_PROMOTED, Searcher
from rankwise.tune.fusion import FusionConfig, calibrate_pipeline, tune_fusion

# Query words and a product that means the same with no word in common (BM25 finds nothing).
SYNONYMS = [
    ("couch", "comfortable three seat sofa for the living room"),
    ("automobile", "red sports car with leather seats"),
    ("puppy", "young dog playing in the garden"),
    ("physician", "doctor working at the city hospital"),
    ("infant", "newborn baby sleeping in a crib"),
    ("laptop", "portable notebook computer with 16gb memory"),
    ("sneakers", "running shoes with mesh upper"),
    ("stove", "cooktop oven range with four burners"),
    ("faucet", "kitchen sink tap in chrome"),
    ("refrigerator", "fridge freezer combo stainless steel"),
    ("trousers", "denim pants blue jeans"),
    ("jacket", "warm winter coat with hood"),
    ("bicycle", "mountain bike with 21 gears"),
    ("ocean", "waves crashing on the sea shore"),
    ("mobile phone", "smartphone with touchscreen"),
    ("lawn mower", "grass cutting machine petrol powered"),
    ("ladder", "folding aluminium steps for climbing up"),
    ("hammer", "tool for driving nails into wood"),
    ("rug", "soft carpet for the bedroom floor"),
    ("lamp", "bedside light with warm bulb"),
    ("kitten", "baby cat with soft fur"),
    ("boat", "small sailing vessel for the lake"),
    ("airplane", "passenger jet aircraft taking off"),
    ("cash", "money in paper banknotes and coins"),
    ("pillow", "cushion for resting your head in bed"),
    ("wristwatch", "analog clock worn on the arm"),
    ("spectacles", "eyeglasses with thin metal frames"),
    ("bucket", "plastic pail for carrying water"),
    ("garbage", "trash can waste bin with lid"),
    ("photograph", "picture taken with a camera"),
    ("teacher", "school instructor in a classroom"),
    ("guitar", "six string acoustic musical instrument"),
]


def write_beir(root: Path, docs: dict[str, str], queries: dict[str, str], qrels) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for i, t in docs.items():
            f.write(json.dumps({"_id": i, "title": t, "text": ""}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for i, t in queries.items():
            f.write(json.dumps({"_id": i, "text": t}) + "\n")
    with (root / "qrels" / "train.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, judged in qrels.items():
            for d, g in judged.items():
                f.write(f"{q}\t{d}\t{g}\n")
    return root


def build_index(path: Path, docs: dict[str, str], embedder) -> None:
    catalog_file = path.parent / f"{path.name}.jsonl"
    with catalog_file.open("w") as f:
        for i, t in docs.items():
            f.write(json.dumps({"id": i, "title": t}) + "\n")
    with Catalog.open(str(path), embedder) as cat:
        cat.ingest(catalog_file)


def synonym_set():
    docs = {f"d{i}": text for i, (_, text) in enumerate(SYNONYMS)}
    queries = {f"q{i}": word for i, (word, _) in enumerate(SYNONYMS)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(SYNONYMS))}
    return docs, queries, qrels


FILLER = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)


def keyword_set():
    """Each query is a word that only its product holds; the products share a long filler,
    which BM25 ignores (every product has it) and which drowns a random embedder's vectors."""
    docs = {f"d{i}": f"{word} {FILLER}" for i, (word, _) in enumerate(SYNONYMS)}
    queries = {f"q{i}": word for i, (word, _) in enumerate(SYNONYMS)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(SYNONYMS))}
    return docs, queries, qrels


CFG = FusionConfig(top_k=10, depths=(10, 20), min_language_queries=10)


def test_detect_language_by_script():
    assert detect_language("苹果手机") == "zh"
    assert detect_language("iPhone 15 手机壳") == "zh"
    assert detect_language("USB-C cable 线") == "en"
    assert detect_language("cordless drill 18v") == "en"
    assert detect_language("ノートパソコン") == "ja"
    assert detect_language("노트북") == "ko"
    assert detect_language("12345 !!") == "other"


def test_dense_noise_calibrates_to_lexical_and_persists(tmp_path, tiny_embedder_dir):
    emb = Embedder(str(tiny_embedder_dir))  # random weights: dense is noise
    docs, queries, qrels = keyword_set()
    index = tmp_path / "index"
    build_index(index, docs, emb)
    data = write_beir(tmp_path / "beir", docs, queries, qrels)
    pipeline, choices, _ = tune_fusion(data, str(index), emb, cfg=CFG, show_progress=False,
                                       log=lambda m: None)  # fmt: skip
    top = choices[0]
    assert top.scores["lexical"] > 0.9 > top.scores["dense"]
    assert pipeline.default.mode == "lexical", top.reason
    # persisted beside the index, with what it was chosen on
    saved = json.loads((index / PIPELINE_FILE).read_text())
    assert saved["default"]["mode"] == "lexical"
    assert saved["provenance"]["queries"] == len(queries)
    assert saved["provenance"]["groups"][0]["lexical"] > 0.9
    # the Searcher follows it by default; an explicit mode still overrides
    with Catalog.open(str(index), emb, create=False) as cat:
        s = Searcher(cat, top_k=10, top_n=5)
        resp = s.search(queries["q3"])
        assert resp.recipe == "lexical" and resp.mode == "lexical", resp
        assert resp.results[0].id == "d3"
        assert s.search(queries["q3"], mode="hybrid").mode == "hybrid"
        assert Searcher(cat, mode="dense").search(queries["q3"]).mode == "dense"


@pytest.mark.slow
def test_lexical_noise_calibrates_to_dense_or_hybrid(tmp_path, minilm_dir):
    emb = Embedder(str(minilm_dir))
    docs, queries, qrels = synonym_set()
    index = tmp_path / "index"
    build_index(index, docs, emb)
    with Catalog.open(str(index), emb, create=False) as cat:
        searcher = Searcher(cat, top_k=10, pipeline=None)
        pipeline, choices = calibrate_pipeline(searcher, queries, qrels, CFG,
                                               show_progress=False, log=lambda m: None)  # fmt: skip
    top = choices[0]
    assert top.scores["lexical"] < 0.05  # no shared word: BM25 finds nothing
    assert top.scores["dense"] > 0.6, top.scores
    assert pipeline.default.mode in ("dense", "hybrid"), top.reason
    # MiniLM covers English only: a Chinese query is served lexically whatever was chosen
    assert pipeline.dense_languages == ("en",)
    assert pipeline.route("红富士苹果")[1] == RecallRecipe("lexical")
    assert pipeline.route("couch")[1] == pipeline.default


def test_fused_recipe_must_beat_the_best_single_list(tmp_path, tiny_embedder_dir):
    """On equal-quality data the grid's best fused recipe is not significantly better than
    lexical alone: the single list is kept, and the reason says so."""
    import numpy as np

    from rankwise.tune.fusion import choose

    lex, dense = RecallRecipe("lexical"), RecallRecipe("dense")
    fused = RecallRecipe("hybrid", rrf_k=10)
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 40)
    per = {lex: base, dense: base - 0.2, fused: base + rng.normal(0.01, 0.2, 40)}
    c = choose("all", per, [lex, dense, fused], alpha=0.05)
    assert c.chosen == lex and "not significantly better" in c.reason
    per[fused] = base + 0.1
    assert choose("all", per, [lex, dense, fused], alpha=0.05).chosen == fused


def test_cross_fitted_confirmation_stops_a_lucky_recipe(tmp_path):
    """Picked among many recipes that are only noise around lexical, the luckiest one beats
    lexical on the queries that picked it (selection bias); cross-fitted (each half scored by
    the other half's pick) it does not, and the single list is kept. A real gain still passes."""
    import numpy as np

    from rankwise.tune.fusion import choose

    rng = np.random.default_rng(1)
    n = 400
    lex, dense = RecallRecipe("lexical"), RecallRecipe("dense")
    base = rng.uniform(0, 1, n)
    per = {lex: base, dense: base - 0.3}
    noise = [RecallRecipe("hybrid", rrf_k=k) for k in range(1, 121)]
    for r in noise:
        per[r] = base + rng.normal(0.0, 0.15, n)
    allowed = [lex, dense, *noise]
    same = choose("all", per, allowed, alpha=0.05)
    assert same.chosen.mode == "hybrid", same.reason  # the winner's curse, without a hold-out
    confirm = np.arange(n) % 2 == 0
    held = choose("all", per, allowed, alpha=0.05, confirm=confirm)
    assert held.chosen == lex, held.reason
    assert "cross-fitted over 200 + 200 queries" in held.reason
    assert "not significantly better" in held.reason
    real = RecallRecipe("hybrid", rrf_k=500)
    per[real] = base + 0.05 + rng.normal(0.0, 0.05, n)
    won = choose("all", per, [*allowed, real], alpha=0.05, confirm=confirm)
    assert won.chosen == real, won.reason


def test_cross_fitting_scores_each_half_with_the_other_halfs_pick():
    """Picked among weights that are only noise around the first stage, the luckiest one
    wins on the queries that picked it; cross-fitted, each query is scored at the weight
    picked without it, so the winner's curse is gone and a real gain still shows, on all
    queries rather than half of them."""
    from rankwise.evaluate.significance import randomization_test
    from rankwise.tune.gate import cross_fitted

    rng = np.random.default_rng(2)
    n = 400
    base = rng.uniform(0, 1, n)
    held = np.arange(n) % 2 == 1
    noise = {k: base + rng.normal(0.0, 0.15, n) for k in range(60)}
    best_in_sample = max(v.mean() for v in noise.values())
    assert best_in_sample > base.mean() + 0.01  # selection bias, without cross-fitting
    values, on_a, on_b = cross_fitted(noise, held)
    np.testing.assert_array_equal(values[held], noise[on_a][held])  # other half's pick
    np.testing.assert_array_equal(values[~held], noise[on_b][~held])
    assert on_a == max(noise, key=lambda k: noise[k][~held].mean())
    assert randomization_test(values, base, n_resamples=2000) > 0.05
    real = {**noise, "real": base + 0.03 + rng.normal(0.0, 0.05, n)}
    values, on_a, on_b = cross_fitted(real, held)
    assert on_a == on_b == "real"
    assert randomization_test(values, base, n_resamples=2000) < 0.05


def test_uncalibrated_search_routes_uncovered_languages_to_lexical(tmp_path, minilm_dir):
    emb = Embedder(str(minilm_dir))
    docs = {"a": "红富士苹果 新鲜水果", "b": "苹果手机 iPhone 15", "c": "fresh red apples fruit"}
    index = tmp_path / "index"
    build_index(index, docs, emb)
    with Catalog.open(str(index), emb, create=False) as cat:
        s = Searcher(cat, top_k=3, top_n=3)
        zh = s.search("红富士苹果")
        assert (zh.language, zh.mode) == ("zh", "lexical")
        en = s.search("red apples")
        assert (en.language, en.mode) == ("en", "hybrid")


def test_gate_keeps_out_a_reranker_that_contradicts_the_judgments(tmp_path, minilm_dir):
    """A cross-encoder trained to prefer the wrong products is refused on held-out judged
    queries; the pipeline records it, and search says why it skips reranking."""
    from rankwise.tune.data import TrainExample
    from rankwise.tune.gate import gate_reranker
    from rankwise.tune.reranker import RerankerTrainConfig, train_reranker

    emb = Embedder(str(minilm_dir))
    docs, queries, qrels = keyword_set()
    index = tmp_path / "index"
    build_index(index, docs, emb)
    # contradicting judgments: each query's own product is taught as a negative
    examples = [
        TrainExample(queries[f"q{i}"], [docs[f"d{(i + 1) % len(docs)}"]], [docs[f"d{i}"]])
        for i in range(len(docs))
    ]
    cfg = RerankerTrainConfig(max_steps=16, group_size=2, learning_rate=2e-4, max_length=32,
                              batch_size=8, logging_steps=1, save_steps=1000, warmup_ratio=0.0)  # fmt: skip
    train_reranker(examples, str(minilm_dir), tmp_path / "rr", cfg)
    rr = Reranker(str(tmp_path / "rr"), score_cache_size=0)
    with Catalog.open(str(index), emb, create=False) as cat:
        # hybrid: the product at rank 1 (BM25) among nine others for the reranker to reorder
        s = Searcher(cat, rr, top_k=10, top_n=5, pipeline=Pipeline(RecallRecipe("hybrid")))
        decision, gate = gate_reranker(s, queries, qrels, top_k=10, top_n=5,
                                       show_progress=False, log=lambda m: None)  # fmt: skip
        assert not decision.promoted and not gate.promoted
        # on its own it loses badly; no interpolation with recall rescues it either
        assert decision.scores["weights"]["1"] < decision.scores["first_stage"] - 0.2
        assert all(v <= decision.scores["first_stage"] for v in decision.scores["weights"].values())
        assert "not promoted" in decision.reason and "worse" in decision.reason
        # the weight orders the candidates: 0 keeps recall's order, 1 is the reranker's own
        hits = s.recall(queries["q0"], top_k=10)
        logits = s.rerank_logits(queries["q0"], hits)
        ids = lambda w: [r.id for r in s.rerank_results(hits, logits, top_n=10, weight=w)]  # noqa: E731
        assert ids(0.0) == [h.id for h in hits]
        assert ids(1.0) == [hits[i].id for i in np.argsort(-logits, kind="stable")]
        assert ids(1.0)[0] != "d0" and ids(0.0)[0] == "d0"
        kept = RerankDecision("m", rr.version, True, "promoted at 0", weight=0.0)
        s.pipeline = Pipeline(RecallRecipe("hybrid"), rerank=(kept,))
        served = s.search(queries["q0"], top_k=10, top_n=10)
        assert served.reranked and [r.id for r in served.results] == ids(0.0)
        with pytest.raises(ConfigError, match="weight"):
            RerankDecision("m", "v", True, "bad", weight=1.5)
        s.pipeline = s.pipeline.with_rerank(decision)
        resp = s.search(queries["q0"])
        assert not resp.reranked and resp.skipped_reason == NOT_PROMOTED
        assert resp.results[0].id == "d0"  # the first stage's order is served
        # a decision about another model version does not apply
        other = RerankDecision("x", "another-version", False, "refused")
        s.pipeline = Pipeline(RecallRecipe("hybrid"), rerank=(other,))
        assert s.search(queries["q0"]).reranked


def test_cli_tune_fusion_writes_the_pipeline_and_search_uses_it(tmp_path, tiny_embedder_dir):
    emb = Embedder(str(tiny_embedder_dir))
    docs, queries, qrels = keyword_set()
    index = tmp_path / "index"
    build_index(index, docs, emb)
    data = write_beir(tmp_path / "beir", docs, queries, qrels)
    rankwise = str(Path(sys.executable).parent / "rankwise")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RANKWISE_RERANKER": ""}
    common = ["--index", str(index), "--embedder", str(tiny_embedder_dir)]
    out = subprocess.run([rankwise, "tune", "fusion", "--data", str(data), *common, "--top-k", "10"],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "lexical" in out.stdout and find_pipeline(str(index)).default.mode == "lexical"
    res = subprocess.run([rankwise, "search", queries["q4"], *common, "--no-rerank", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["mode"] == "lexical" and body["results"][0]["id"] == "d4"
    bad = subprocess.run([rankwise, "tune", "fusion", "--data", str(tmp_path / "nope"), *common],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def _reference_scores(recipe, lists, qrels, top_k, metric="ndcg@10"):
    """The dict path: fuse() then compute_metrics(), as search and evaluation run them."""
    from rankwise.evaluate.metrics import compute_metrics
    from rankwise.search import fuse

    run = {}
    for q, (dense, lexical) in lists.items():
        depth = recipe.depth or top_k
        parts = {"dense": [dense], "lexical": [lexical], "hybrid": [dense[:depth], lexical[:depth]]}
        hits = fuse(parts[recipe.mode], recipe)[:top_k]
        run[q] = {h.id: float(len(hits) - r) for r, h in enumerate(hits)}
    name, _, k = metric.partition("@")
    m = compute_metrics(run, {q: qrels[q] for q in lists}, ks=(int(k),), metrics=(name,),
                        no_relevant="zero")  # fmt: skip
    return m.values[metric]


@pytest.mark.parametrize("metric", ["ndcg@10", "recall@5", "mrr@10"])
def test_vectorised_recipe_scores_equal_fuse_then_compute_metrics(metric):
    """RecipeScorer must reproduce fuse() exactly, ties included (equal RRF ranks, equal
    BM25 scores, a list shorter than the depth, an empty list, a query with no relevant doc)."""
    import random

    import numpy as np

    from rankwise.store import Hit
    from rankwise.tune.recipe_scores import RecipeScorer

    rng = random.Random(7)
    docs = [f"d{i:03d}" for i in range(120)]
    lists, qrels = {}, {}
    for qi in range(40):
        n_dense, n_lex = rng.choice([0, 3, 30, 60]), rng.choice([0, 5, 30, 60])
        dense_ids = rng.sample(docs, n_dense)
        lex_ids = rng.sample(docs[:60], n_lex)  # overlap with the dense list
        dense_scores = sorted((round(rng.random(), 1) for _ in dense_ids), reverse=True)
        lex_scores = sorted((float(rng.randint(0, 4)) for _ in lex_ids), reverse=True)  # ties
        lists[f"q{qi:02d}"] = (
            [Hit(d, s, {}) for d, s in zip(dense_ids, dense_scores, strict=True)],
            [Hit(d, s, {}) for d, s in zip(lex_ids, lex_scores, strict=True)],
        )
        judged = rng.sample(docs, 25)
        qrels[f"q{qi:02d}"] = {d: rng.choice([0, 0, 1, 2]) for d in judged}
    qrels["q00"] = {d: 0 for d in docs[:5]}  # no relevant document: scores 0
    recipes = FusionConfig(top_k=20, depths=(20, 40)).candidates()
    recipes += [RecallRecipe("hybrid", "rrf", 60, (0.5, 0.5), 20)]  # equal weights: rank ties
    scorer = RecipeScorer(lists, qrels, top_k=20, metric=metric)
    for recipe in recipes:
        expected = _reference_scores(recipe, lists, qrels, 20, metric)
        np.testing.assert_allclose(scorer.score(recipe), expected, atol=1e-12,
                                   err_msg=recipe.label())  # fmt: skip
