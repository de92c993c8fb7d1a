"""Issue 19: evaluation and tuning as a newcomer meets them. Each test failed on the code
before the fix: tuned models reloaded at the wrong length, the judged dev check had no
first-stage baseline, mining re-embedded the positives, ``none`` was a model name, ``all``
was not a split, @k past Top-N, two p-values for one comparison, warm rerank latency,
colour codes / 80-column wrapping in piped output and checkpoints left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_eval_runner import write_beir as write_eval_beir
from test_tune_train import FAST, make_examples

from rankwise.tune.data import TrainExample, split_by_query
from rankwise.tune.embedder import EmbedderTrainConfig, train_embedder
from rankwise.tune.reranker import RerankerTrainConfig, train_reranker

SRC = str(Path(__file__).resolve().parents[1] / "src")


# -------------------------------------------------------------- 1. lengths travel with a model
def test_tuned_models_reload_at_their_trained_length_and_prompts(tiny_embedder_dir, tmp_path):
    from rankwise.models import Embedder, Reranker

    examples = make_examples(8)
    # a folder name the spec table knows (MiniLM: 256 tokens) must not win over the training
    out = tmp_path / "all-minilm-l6-v2-tuned"
    cfg = EmbedderTrainConfig(max_steps=1, group_size=2, max_length=40, **FAST)
    cfg.query_instruction = "query: "
    train_embedder(examples, str(tiny_embedder_dir), out, cfg)
    emb = Embedder(str(out))
    assert emb.max_length == 40
    assert emb.spec.query_instruction == "query: " and emb.spec.pooling == "cls"
    assert Embedder(str(out), max_length=64).max_length == 64  # an argument still overrides
    rcfg = RerankerTrainConfig(max_steps=1, group_size=2, max_length=48, **FAST)
    train_reranker(examples, str(tiny_embedder_dir), tmp_path / "rr", rcfg)
    assert Reranker(str(tmp_path / "rr")).max_length == 48


# -------------------------------------------------------------- 2. judged dev vs first stage
def overlap(query: str, docs) -> list[float]:
    """A first stage: words shared with the query (the positives of make_examples repeat
    the query's words, so this order is perfect on them)."""
    q = set(query.split())
    return [float(len(q & set(d.split()))) for d in docs]


def test_judged_dev_check_compares_with_the_first_stage(tiny_embedder_dir, tmp_path):
    examples = make_examples(12, seed=3)
    judged = [TrainExample(e.query, e.pos, e.neg[:2], related=e.neg[2:3]) for e in examples[8:]]
    cfg = RerankerTrainConfig(max_steps=2, group_size=3, max_length=32, **FAST)
    result = train_reranker(
        examples[:8], str(tiny_embedder_dir), tmp_path / "rr", cfg,
        judged_dev=judged, first_stage=overlap, first_stage_name="word overlap",
        min_dev_queries=10,
    )  # fmt: skip
    fs = result.first_stage
    assert fs["scorer"] == "word overlap" and fs["queries"] == 4
    assert fs["ndcg@10"] == pytest.approx(1.0)  # the first stage's own order, same candidates
    assert fs["reranker_ndcg@10"] == pytest.approx(result.dev["judged_after"]["ndcg@10"])
    assert result.dev["first_stage"]["ndcg@10"] == pytest.approx(1.0)
    assert fs["beats"] is False and fs["delta"] <= 0
    assert any("first stage's own order" in w for w in result.warnings), result.warnings
    assert any("only 4 judged dev queries (minimum 10)" in w for w in result.warnings)
    saved = json.loads((tmp_path / "rr" / "rankwise_tune.json").read_text())
    assert saved["first_stage"]["beats"] is False


def test_dev_split_tops_up_to_a_minimum_count():
    examples = [TrainExample(f"query {i}", [f"doc {i}"], []) for i in range(200)]
    _, small = split_by_query(examples, 0.01)
    train, dev = split_by_query(examples, 0.01, min_dev=25)
    assert len(dev) == 25 and len(train) == 175
    assert {e.query for e in small} <= {e.query for e in dev}  # the fraction's picks stay
    assert len(split_by_query(examples[:10], 0.0, min_dev=25)[1]) == 5  # at most half


# -------------------------------------------------------------- 3. mining reuses corpus vectors
def test_mining_reuses_the_corpus_vectors_for_positives(tiny_embedder_dir):
    from rankwise.models import Embedder
    from rankwise.tune.mine import MiningConfig, mine_hard_negatives

    class Recording(Embedder):  # the real model, recording what it is asked to embed
        documents: list[str] = []

        def encode_documents(self, texts, show_progress=False):
            self.documents += list(texts)
            return super().encode_documents(texts, show_progress)

    emb = Recording(str(tiny_embedder_dir))
    examples = make_examples(6, seed=4)
    corpus = list(dict.fromkeys([t for e in examples for t in (*e.pos, *e.neg)]))
    vectors = Embedder(str(tiny_embedder_dir)).encode_documents(corpus)
    extra = TrainExample("kitchen sink", ["a positive that is not in the corpus"], [])
    cfg = MiningConfig(rank_range=(1, 5), negative_number=2, margin=0.0)
    mined, _ = mine_hard_negatives(
        [*examples, extra], corpus, emb, cfg, doc_vectors=vectors, show_progress=False
    )
    assert emb.documents == ["a positive that is not in the corpus"]
    emb.documents = []  # without given vectors: the same negatives (same vectors reused)
    again, _ = mine_hard_negatives([*examples, extra], corpus, emb, cfg, show_progress=False)
    assert [e.neg for e in again] == [e.neg for e in mined]
    assert sorted(emb.documents) == sorted([*corpus, "a positive that is not in the corpus"])


# -------------------------------------------------------------- 4. none means no reranker
def test_reranker_none_means_no_reranker_everywhere(tmp_path, tiny_embedder_dir, capsys):
    from rankwise.cli import main
    from rankwise.config import load_settings

    assert load_settings(reranker="none").reranker is None
    assert load_settings(reranker="OFF").reranker is None
    root = write_eval_beir(tmp_path / "tinyset")
    args = ["eval", "--data", str(root), "--systems", "dense,hybrid+rerank,rerank-only"]
    args += ["--embedder", str(tiny_embedder_dir), "--index-dir", str(tmp_path / "idx")]
    args += ["--top-k", "5", "--k", "1,5", "--pools", "test", "--json"]
    for extra in (["--reranker", "none"], []):  # [] = the hub default, not cached here
        with pytest.raises(SystemExit) as exit_:
            main([*args, *extra])
        captured = capsys.readouterr()
        assert exit_.value.code == 0, captured.err
        assert "skipping hybrid+rerank, rerank-only:" in captured.err
        notes = {r["system"]: r["note"] for r in json.loads(captured.out)["results"]}
        assert "no cross-encoder" in notes["hybrid+rerank"] and notes["dense"] is None
    with pytest.raises(SystemExit) as exit_:  # a named reranker that fails is an error
        main([*args, "--reranker", str(tmp_path / "missing")])
    assert exit_.value.code == 2 and "folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["rerank", "q", "--reranker", "none", "-d", str(root / "queries.jsonl")])
    assert exit_.value.code == 2 and "--reranker none" in capsys.readouterr().err


# -------------------------------------------------------------- 5. splits
def test_split_all_and_comma_lists(tmp_path, tiny_embedder_dir):
    from rankwise.data import load_beir
    from rankwise.evaluate import evaluate

    root = write_eval_beir(tmp_path / "tinyset")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq9\tp6\t1\n")
    for split in ("all", "train,test", "test, train"):
        ds = load_beir(root, split)
        assert sorted(ds.qrels) == ["q1", "q2", "q3", "q4", "q5", "q9"], split
        assert ds.split_counts() == {"test": 5, "train": 1}
    rep = evaluate(
        root, split="all", systems="dense", embedder=str(tiny_embedder_dir), pools=["test"],
        index_dir=tmp_path / "idx", show_progress=False,
    )  # fmt: skip
    assert rep.split == "test,train" and rep.config["queries_per_split"] == {"test": 5, "train": 1}
    assert any("qrels test (5), train (1)" in n for n in rep.notes)


# -------------------------------------------------------------- 6. one test, one seed
def test_tune_report_p_values_equal_the_evaluation_reports(tmp_path):
    """The same comparison, in the tuning table and in the evaluation report, has one p."""
    from rankwise.evaluate import compute_metrics
    from rankwise.evaluate.report import EvaluationReport, SystemResult
    from rankwise.evaluate.significance import compare_systems
    from rankwise.tune.run_report import compare_reports

    rng = np.random.default_rng(0)  # two runs over 40 queries (data, not a model's output)
    qrels = {f"q{i}": {f"d{i}": 1, f"e{i}": 0} for i in range(40)}
    runs = [  # the second ranks the relevant document a little higher on average
        {q: {d: rng.normal() + (up if d[0] == "d" else 0.0) for d in ds} for q, ds in qrels.items()}
        for up in (0.0, 0.5)
    ]
    ks = (1, 5, 10)
    names = ("hybrid", "hybrid+rerank")
    res = [
        SystemResult(s, "test", compute_metrics(r, qrels, ks), r, {})
        for s, r in zip(names, runs, strict=True)
    ]
    comparisons = compare_systems(res, "ndcg@10", "randomization")
    reranked = EvaluationReport("x", "test", {}, res, comparisons)
    empty = EvaluationReport("x", "test", {}, [])
    row = next(
        r for r in compare_reports(empty, empty, ["test"], reranked) if "rerank" in r["system"]
    )
    assert 0.0 < comparisons[0]["p_value"] < 1.0
    assert row["ndcg@10"]["p"] == comparisons[0]["p_value"]


# -------------------------------------------------------------- 7. cold rerank latency
def test_rerank_latency_is_measured_with_the_score_cache_off(tmp_path, tiny_embedder_dir, tiny_reranker_dir):  # fmt: skip
    from rankwise.evaluate import evaluate
    from rankwise.models import Embedder, Reranker

    root = write_eval_beir(tmp_path / "tinyset")
    rr = Reranker(str(tiny_reranker_dir))
    rr.score("warm", ["a cached pair"])
    rep = evaluate(
        root, systems="hybrid+rerank,rerank-only", embedder=Embedder(str(tiny_embedder_dir)),
        reranker=rr, top_k=5, top_n=2, ks=(1, 2), index_dir=tmp_path / "idx", show_progress=False,
    )  # fmt: skip
    # the second pool, the warm-up query and rerank-only re-score pairs: none hit the cache
    assert rr.score_cache_info() == {"hits": 0, "misses": 1, "size": 1}
    assert any("measured cold" in n for n in rep.notes)
    rr.score("warm", ["a cached pair"])  # and the cache is back afterwards
    assert rr.score_cache_info()["hits"] == 1


# -------------------------------------------------------------- 8. noise, wrapping, disk
def test_piped_cli_output_is_plain_unwrapped_and_checkpoints_are_removed(tiny_embedder_dir, tmp_path):  # fmt: skip
    from rankwise.tune.data import write_examples

    write_examples(make_examples(8), tmp_path / "train.jsonl")
    out = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" * 2) / "reranker"
    argv = ["tune", "reranker", str(tmp_path / "train.jsonl"), "--base", str(tiny_embedder_dir)]
    argv += ["--out", str(out), "--max-steps", "2", "--save-steps", "1", "--group-size", "3"]
    argv += ["--batch-size", "4", "--max-length", "32"]
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "rankwise.cli", *argv], capture_output=True, text=True,
        env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stream in (proc.stdout, proc.stderr):
        assert not re.search(r"\x1b\[[0-9;]*m", stream)  # no raw colour codes in a pipe
    assert "LOAD REPORT" not in proc.stderr and "pin_memory" not in proc.stderr
    assert "randomly initialised" in proc.stderr  # the one fact that matters, said once
    line = next(x for x in proc.stdout.splitlines() if x.startswith("trained 2 steps"))
    assert line.endswith(f"model in {out}")  # one line, not wrapped at 80 columns
    assert "removed 2 intermediate checkpoints" in proc.stdout
    assert not (out / "checkpoints").exists()
    saved = json.loads((out / "rankwise_tune.json").read_text())["checkpoints"]
    assert saved["count"] == 2 and saved["bytes"] > 0 and saved["kept"] is False


def test_tune_run_with_reranker_base_none_trains_no_reranker(tiny_embedder_dir, tmp_path):
    from test_tune_data import write_beir
    from test_tune_run import PRODUCTS, QRELS, QUERIES

    from rankwise.tune.mine import MiningConfig
    from rankwise.tune.run import TuneRunConfig, tune_run

    fast = dict(max_steps=1, batch_size=4, group_size=2, logging_steps=1, warmup_ratio=0.0)
    said: list[str] = []
    report = tune_run(
        TuneRunConfig(
            data=write_beir(tmp_path / "beir", PRODUCTS, QUERIES, QRELS),
            base=str(tiny_embedder_dir), out=tmp_path / "run", reranker_base="none",
            teacher="none", pos_threshold=2, min_dev_queries=2, pools=("test",),
            mining=MiningConfig(rank_range=(1, 10), negative_number=2, margin=None),
            embedder=EmbedderTrainConfig(**fast), top_k=10, index_dir=tmp_path / "cache",
        ),
        say=said.append,
    )  # fmt: skip
    assert report["reranker_training"] is None and not (tmp_path / "run" / "reranker").exists()
    assert not any("rerank" in r["system"] for r in report["table"])
    assert any("no reranker base" in m for m in said)
    assert report["data"]["dev_queries"] == 2  # topped up to --min-dev-queries
