"""The evaluation runner end to end with tiny real models on a small BEIR folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankwise.errors import DataError, InvalidRequest
from rankwise.evaluate import evaluate, parse_systems, read_run, write_run

DOCS = {
    "p1": "apple iphone 15 pro smartphone 256gb black",
    "p2": "fresh red apples fruit 1kg bag",
    "p3": "summer breathable running shoes mesh lightweight",
    "p4": "leather dress shoes for men brown oxford",
    "p5": "cordless drill 18v lithium battery kit",
    "p6": "wireless bluetooth headphones noise cancelling",
    "p7": "stainless steel kitchen sink faucet",
    "p8": "the quick brown fox jumps over the lazy dog",
    "p9": "苹果手机 iPhone 15 黑色 256G 全网通",
    "p10": "无线电钻 锂电池 充电式",
    "u1": "summer running shoes for kids",  # u*: in no judgment (global pool only)
    "u2": "iphone 15 case black",
    "u3": "夏季透气跑步鞋 网面 轻便",
    "u4": "真皮皮鞋 男士 商务 正装",
}
QUERIES = {
    "q1": "iphone smartphone",
    "q2": "running shoes",
    "q3": "cordless drill battery",
    "q4": "kitchen faucet",
    "q5": "brown fox",
    "q9": "unjudged query",
}
QRELS = [
    ("q1", "p1", 2), ("q1", "p9", 1), ("q1", "p2", 0),
    ("q2", "p3", 2), ("q2", "p4", 1),
    ("q3", "p5", 2), ("q3", "p10", 2), ("q3", "p6", 0),
    ("q4", "p7", 1),
    ("q5", "p8", 0),  # no relevant document: skipped by convention
]  # fmt: skip


def write_beir(root: Path, qrels=QRELS, docs=DOCS) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for d, t in docs.items():
            fh.write(json.dumps({"_id": d, "title": t, "text": ""}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for q, t in QUERIES.items():
            fh.write(json.dumps({"_id": q, "text": t}) + "\n")
    with (root / "qrels" / "test.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, d, g in qrels:
            fh.write(f"{q}\t{d}\t{g}\n")
    return root


@pytest.fixture(scope="module")
def models(tiny_embedder_dir, tiny_reranker_dir):
    from rankwise.models import Embedder, Reranker

    return Embedder(str(tiny_embedder_dir)), Reranker(str(tiny_reranker_dir))


@pytest.fixture(scope="module")
def report(models, tmp_path_factory):
    root = write_beir(tmp_path_factory.mktemp("beir") / "tinyset")
    emb, rr = models
    logs: list[str] = []
    rep = evaluate(
        root,
        systems="lexical,dense,hybrid,hybrid+rerank,rerank-only",
        embedder=emb,
        reranker=rr,
        top_k=5,
        top_n=2,
        ks=(1, 2, 5),
        index_dir=tmp_path_factory.mktemp("idx"),
        min_precision=0.5,
        show_progress=False,
        log=logs.append,
    )
    rep.logs = logs
    return rep


def test_every_system_runs_on_both_pools(report):
    labels = [r.label for r in report.results]
    assert labels == [
        "lexical [test]", "dense [test]", "hybrid [test]", "hybrid+rerank [test]",
        "lexical [global]", "dense [global]", "hybrid [global]", "hybrid+rerank [global]",
        "dense [judged]", "rerank-only [judged]",
    ]  # fmt: skip
    for r in report.results:
        assert r.metrics.query_ids == ["q1", "q2", "q3", "q4"] and r.metrics.skipped == ["q5"]
        assert set(r.metrics.values) >= {"ndcg@1", "map@2", "hit_rate@2"}
        # a reranked system returns Top-N (2): its @5 would count 2 documents, not computed
        has_5 = {"ndcg@5", "recall@5"} <= set(r.metrics.values)
        assert has_5 == ("+rerank" not in r.system), r.label


def test_k_beyond_what_a_system_returns_is_marked_not_comparable(report):
    """Issue 19 item 6: nDCG@5 of a Top-2 system read as a collapse; now it is '–'."""
    rerank = report.result("hybrid+rerank", "test")
    assert rerank.depth == 2 and report.result("hybrid", "test").depth == 5
    md = report.to_markdown()
    row = next(line for line in md.splitlines() if line.startswith("| hybrid+rerank | test |"))
    assert row.endswith("| – |"), row  # the @5 column of the first metric table
    assert "ndcg@5" not in report.to_dict()["results"][3]["metrics"]["mean"]


def test_pools_restrict_what_systems_return(report):
    test_pool = {d for q, d, _ in QRELS}
    for r in report.results:
        docs = {d for ranked in r.run.values() for d in ranked}
        if r.pool == "test":
            assert docs <= test_pool
        if r.system == "hybrid+rerank":
            assert all(len(v) <= 2 for v in r.run.values())  # Top-N
        elif r.system == "dense" and r.pool != "judged":
            assert all(len(v) == 5 for v in r.run.values())  # Top-K
        elif r.system == "lexical":  # BM25 returns only products sharing a term
            assert all(len(v) <= 5 for v in r.run.values())
    assert any(
        d not in test_pool
        for r in report.results
        if r.pool == "global"
        for v in r.run.values()
        for d in v
    )
    judged = report.result("rerank-only").run
    assert {q: set(v) for q, v in judged.items()} == {
        q: {d for qq, d, _ in QRELS if qq == q} for q in ["q1", "q2", "q3", "q4", "q5"]
    }


def test_latency_significance_separation_calibration(report):
    lat = report.result("hybrid+rerank", "global").latency_ms()
    assert {"embed", "dense", "lexical", "recall", "rerank", "total"} <= set(lat)
    assert "embed" not in report.result("lexical", "test").latency_ms()
    pairs = {(c["system"], c["baseline"], c["pool"]) for c in report.comparisons}
    assert ("hybrid+rerank", "hybrid", "global") in pairs and ("dense", "lexical", "test") in pairs
    assert ("rerank-only", "dense", "judged") in pairs
    assert all(0.0 <= c["p_value"] <= 1.0 and c["metric"] == "ndcg@2" for c in report.comparisons)
    assert [s.n_positive for s in report.separation] == [7, 7]  # embedder, then reranker
    assert [c.objective for c in report.calibration] == ["f1", "precision"] * 2  # emb, reranker
    assert report.calibration[2].model.endswith("tiny-reranker0")


def test_index_is_reused_and_reports_are_written(report, models, tmp_path):
    assert any("embedded 14 documents" in m for m in report.logs)
    assert any("embedded 14 documents" in m for m in report.notes)  # kept in the report
    paths = report.save(tmp_path / "out", save_runs=True)
    md = paths["markdown"].read_text()
    assert "| hybrid+rerank | global |" in md and "Paired significance" in md
    assert "without any relevant document are left out" in md
    data = json.loads(paths["json"].read_text())
    assert data["results"][0]["metrics"]["skipped_queries"] == ["q5"]
    assert "per_query" in data["results"][0]["metrics"]
    assert paths["png"].stat().st_size > 10_000
    run_file = tmp_path / "out" / "runs" / "hybrid_rerank.global.trec"
    assert read_run(run_file) == report.result("hybrid+rerank", "global").run


def test_second_run_reuses_the_cached_index(models, tmp_path):
    root = write_beir(tmp_path / "tinyset")
    logs: list[str] = []
    kw = dict(
        systems="dense",
        embedder=models[0],
        index_dir=tmp_path / "idx",
        show_progress=False,
        log=logs.append,
    )
    first = evaluate(root, **kw)
    assert any("embedded" in m for m in logs) and any("indexed" in m for m in logs)
    logs.clear()
    second = evaluate(root, **kw)
    assert logs == []
    assert first.result("dense", "global").run == second.result("dense", "global").run


def test_missing_reranker_and_external_runs(models, tmp_path):
    root = write_beir(tmp_path / "tinyset")
    run = write_run({"q1": {"p1": 2.0, "p2": 1.0}, "q2": {"p3": 1.0}}, tmp_path / "ext.trec")
    rep = evaluate(
        root, systems="lexical+rerank,rerank-only", embedder=models[0], runs={"bm25-ext": run},
        pools=["test"], index_dir=tmp_path / "idx", show_progress=False,
    )  # fmt: skip
    notes = [r.note for r in rep.results if r.metrics is None]
    assert len(notes) == 2 and all("no cross-encoder" in n for n in notes)
    ext = rep.result("bm25-ext", "external")
    assert ext.metrics.per_query("ndcg@1") == {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q4": 0.0}
    assert "no cross-encoder" in rep.to_markdown()
    bad = write_run({"q1": {"nope": 1.0}}, tmp_path / "bad.trec")
    with pytest.raises(DataError, match="not in the corpus"):
        evaluate(root, systems=[], runs={"bad": bad})


def test_bad_inputs_give_clear_errors(tmp_path):
    root = write_beir(tmp_path / "a")
    with pytest.raises(DataError, match="qrels file not found"):
        evaluate(root, split="dev", systems=[])
    unknown = write_beir(tmp_path / "b", qrels=[*QRELS, ("q1", "p404", 1)])
    with pytest.raises(DataError, match="documents not in corpus"):
        evaluate(unknown, systems=[])
    empty = write_beir(tmp_path / "c", qrels=[], docs={})
    with pytest.raises(DataError, match="corpus is empty"):
        evaluate(empty, systems=[])
    with pytest.raises(InvalidRequest, match="unknown system"):
        parse_systems("lexical,bm42")
    with pytest.raises(InvalidRequest, match="need an embedder"):
        evaluate(root, systems="dense")


def test_cli_eval_writes_reports_and_maps_errors(tmp_path, tiny_embedder_dir, capsys):
    from rankwise.cli import main

    root = write_beir(tmp_path / "tinyset")
    out = tmp_path / "out"
    args = ["eval", "--data", str(root), "--systems", "lexical,dense", "--k", "1,5", "--top-k", "5"]
    args += ["--embedder", str(tiny_embedder_dir), "--index-dir", str(tmp_path / "idx")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--out", str(out), "--save-run"])
    assert exit_.value.code == 0
    assert "| dense | global |" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "report.png", "runs"}
    assert (out / "runs" / "dense.global.trec").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--data", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "missing corpus.jsonl" in capsys.readouterr().err


def test_thresholds_chosen_on_train_are_checked_on_test(models, tmp_path):
    root = write_beir(tmp_path / "tinyset")
    (root / "qrels" / "train.tsv").write_text("q9\tp6\t1\nq9\tp1\t0\nq9\tu2\t0\nq2\tu1\t2\n")
    rep = evaluate(
        root, systems="rerank-only", embedder=models[0], reranker=models[1],
        calibration_split="train", index_dir=tmp_path / "idx", show_progress=False,
    )  # fmt: skip
    assert [(c.split, c.n_pairs) for c in rep.calibration] == [("train", 4), ("train", 4)]
    assert all(c.heldout["split"] == "test" and c.heldout["n_pairs"] == 10 for c in rep.calibration)
    assert "held out: P / R / F1" in rep.to_markdown()


def test_ties_are_scored_in_the_order_served(models, tmp_path):
    """Two products with the same title tie in BM25: a Top-1 cut and a Top-5 list of the same
    ranking must agree on their first result (trec_eval's tie-break by doc id used to score
    an order the search never served, so Top-N and Top-K disagreed)."""
    docs = {**DOCS, "t_a": "garden hose 50 ft", "t_z": "garden hose 50 ft"}
    qrels = [*QRELS, ("q6", "t_a", 2), ("q6", "t_z", 0)]
    root = write_beir(tmp_path / "ties", qrels=qrels, docs=docs)
    with (root / "queries.jsonl").open("a") as fh:
        fh.write(json.dumps({"_id": "q6", "text": "garden hose"}) + "\n")
    emb, _ = models
    by_k = {}
    for k in (1, 5):
        rep = evaluate(root, systems="lexical", embedder=emb, top_k=k, ks=(1,), pools=("global",),
                       index_dir=tmp_path / "idx", show_progress=False)  # fmt: skip
        result = rep.result("lexical", "global")
        first = max(result.run["q6"], key=result.run["q6"].get)
        by_k[k] = (first, result.metrics.per_query("ndcg@1")["q6"])
    assert by_k[1] == by_k[5]
