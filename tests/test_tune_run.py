"""The one-command loop on a tiny BEIR set with tiny models, and the CLI around it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from test_tune_data import write_beir

from rankwise.cli import main as cli_main
from rankwise.tune.data import read_examples
from rankwise.tune.embedder import EmbedderTrainConfig
from rankwise.tune.mine import MiningConfig
from rankwise.tune.reranker import RerankerTrainConfig
from rankwise.tune.run import REPORT_METRICS, TuneRunConfig, tune_run

PRODUCTS = {
    "d1": "apple iphone 15 pro smartphone 256gb black",
    "d2": "fresh red apples fruit 1kg bag",
    "d3": "summer breathable running shoes mesh lightweight",
    "d4": "leather dress shoes for men brown oxford",
    "d5": "cordless drill 18v lithium battery kit",
    "d6": "wireless bluetooth headphones noise cancelling",
    "d7": "stainless steel kitchen sink faucet",
    "d8": "the quick brown fox jumps over the lazy dog",
    "d9": "新鲜红富士苹果 水果 5斤装",
    "d10": "无线电钻 锂电池 充电式",
}
QUERIES = {
    "q1": "apple phone", "q2": "red apples", "q3": "running shoes", "q4": "dress shoes",
    "q5": "drill battery", "q6": "headphones", "q7": "kitchen faucet", "q8": "苹果 水果",
    "q9": "电钻", "q10": "brown leather shoes",
}  # fmt: skip
QRELS = {
    "train": [("q1", "d1", 2), ("q1", "d2", 0), ("q2", "d2", 2), ("q3", "d3", 2), ("q4", "d4", 2),
              ("q5", "d5", 2), ("q6", "d6", 2), ("q7", "d7", 2), ("q7", "d5", 0),
              # judged non-positives for every train query (the judged dev check needs them)
              ("q2", "d1", 0), ("q3", "d4", 0), ("q4", "d3", 1), ("q5", "d7", 0), ("q6", "d8", 0)],
    "test": [("q8", "d9", 2), ("q9", "d10", 2), ("q10", "d4", 2), ("q10", "d3", 1)],
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny", PRODUCTS, QUERIES, QRELS)


def test_tune_run_writes_before_after_report(tiny_beir, tiny_embedder_dir, tmp_path):
    fast = dict(max_steps=2, batch_size=4, group_size=2, logging_steps=1, warmup_ratio=0.0)
    cfg = TuneRunConfig(
        data=tiny_beir,
        base=str(tiny_embedder_dir),
        out=tmp_path / "run",
        reranker_base=str(tiny_embedder_dir),
        pos_threshold=2,
        dev_fraction=0.3,
        mining=MiningConfig(rank_range=(1, 10), negative_number=2, margin=None),
        embedder=EmbedderTrainConfig(**fast),
        reranker=RerankerTrainConfig(max_length=32, **fast),
        top_k=10,
        top_n=3,
        rerank_pools=("test",),
        index_dir=tmp_path / "cache",
    )
    report = tune_run(cfg, say=lambda m: None)
    out = tmp_path / "run"
    for f in (
        "report.md",
        "report.json",
        "eval/before.md",
        "eval/after.json",
        "data/train.mined.jsonl",
    ):
        assert (out / f).is_file(), f
    # promotion: gates on the dev queries, the serving pipeline written, and the promoted
    # pipeline compared with the best single stage of the base models
    assert (out / "pipeline.json").is_file()
    gates = report["promotion"]
    assert {"embedder", "reranker", "serving_embedder"} <= set(gates)
    assert "promoted" in gates["reranker"]["reason"]  # "promoted" or "not promoted"
    assert {r["pool"] for r in report["promoted"]} == {"test", "global"}
    assert all(r["best_single"] in ("lexical", "dense") for r in report["promoted"])
    assert "**Promotion**" in (out / "report.md").read_text()
    mined = read_examples(out / "data" / "train.mined.jsonl")
    assert all(ex.neg and not set(ex.neg) & set(ex.pos) for ex in mined)
    rows = {(r["pool"], r["system"]) for r in report["table"]}
    for pool in ("test", "global"):
        assert (pool, "dense") in rows and (pool, "hybrid") in rows
    # reranking was evaluated on the test pool only, over the test-pool documents
    assert {p for p, s in rows if "hybrid + rerank" in s} == {"test"}
    # issue 19: a rerank-only row (each test query's judged documents), tuned CE vs the
    # tuned embedder's order of the same documents
    assert {p for p, s in rows if s.startswith("rerank-only")} == {"judged"}
    assert (out / "eval" / "rerank.json").is_file()
    # the reranker was also checked on held-out queries' judged (unmined) candidates
    assert {"judged_before", "judged_after"} <= set(report["reranker_training"]["dev"])
    dense = next(r for r in report["table"] if r["system"] == "dense")
    for m in REPORT_METRICS:
        assert set(dense[m]) == {"before", "after", "delta", "p"}
    # issue 19: before/after at equal lengths, the tuned models reload at theirs; the
    # reranker's judged dev check has the first stage's order as its baseline
    lengths = report["max_length"]
    assert lengths == {"embedder_before": 64, "embedder_after": 64, "reranker": 32}
    first = report["reranker_training"]["first_stage"]
    assert first["scorer"] == "tuned embedder cosine" and first["queries"] >= 1
    assert {"ndcg@10", "reranker_ndcg@10", "beats"} <= set(first)
    assert not (out / "embedder" / "checkpoints").exists()
    md = (out / "report.md").read_text()
    assert md.count("randomisation test (10,000 resamples, seed 0)") == 1
    assert "first stage (tuned embedder cosine" in md
    assert "| pool | system |" in md and "wall times" in md
    assert json.loads((out / "report.json").read_text())["wall_seconds"]["train_embedder"] >= 0
    # a rerun with the same settings reuses the negatives and models (the saved result, to
    # the second: a retrained model would have its own wall time)
    said: list[str] = []
    again = tune_run(cfg, say=said.append)
    assert again["embedder_training"] == report["embedder_training"]
    assert again["reranker_training"]["seconds"] == report["reranker_training"]["seconds"]
    assert any("reusing the negatives" in m for m in said)
    assert sum("reusing the model" in m for m in said) == 2
    # issue 14: new settings are never served by old outputs. More embedder steps and fewer
    # negatives: mined again, the embedder retrained (3 steps), the reranker too (it trains
    # on the new negatives)
    said.clear()
    changed = replace(
        cfg,
        embedder=replace(cfg.embedder, max_steps=3),
        mining=replace(cfg.mining, negative_number=1),
    )
    third = tune_run(changed, say=said.append)
    assert third["embedder_training"]["global_step"] == 3
    assert any("mining them again" in m for m in said)
    assert not any("reusing" in m for m in said)
    assert sum("training it again" in m for m in said) == 2  # embedder and reranker


def test_cli_convert_and_errors(tiny_beir, tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    with pytest.raises(SystemExit) as ok:
        cli_main(["tune", "convert", str(tiny_beir), "--out", str(out), "--threshold", "2"])
    assert ok.value.code == 0
    assert len(read_examples(out)) == 7
    assert "wrote 7 examples" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": []}\n')
    with pytest.raises(SystemExit) as err:
        cli_main(["tune", "embedder", str(bad), "--base", "x", "--out", str(tmp_path / "m")])
    assert err.value.code == 2
    assert f"{bad}:1: field 'pos' needs at least one positive" in capsys.readouterr().err
