"""`rankwise tune blend` and `rankwise search --blend` through the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.catalog import Catalog

RANKWISE = str(Path(sys.executable).parent / "rankwise")
KINDS = ["drill", "shoes", "sink", "headphones"]


def run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RANKWISE_RERANKER": ""}
    return subprocess.run(
        [RANKWISE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_embedder_dir):
    from rankwise.models import Embedder

    root = tmp_path_factory.mktemp("tb")
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    products = [
        {"id": f"p{i}", "title": f"{KINDS[i % 4]} model {i}", "text": "",
         "category": KINDS[i % 4], "popularity": float(i % 7)}
        for i in range(40)
    ]  # fmt: skip
    with (beir / "corpus.jsonl").open("w") as fh:
        for p in products:
            fh.write(json.dumps({"_id": p["id"], "title": p["title"], "text": ""}) + "\n")
    queries = {f"q{j}": f"{KINDS[j % 4]} model" for j in range(24)}
    queries.update({f"q{j}": f"{KINDS[j % 4]} {j}" for j in range(24, 40)})
    with (beir / "queries.jsonl").open("w") as fh:
        for q, t in queries.items():
            fh.write(json.dumps({"_id": q, "text": t}) + "\n")
    events = []
    with (beir / "qrels" / "train.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for j, (q, t) in enumerate(queries.items()):
            kind = KINDS[j % 4]
            for p in products:  # popular products of the query's kind are the relevant ones
                if p["category"] == kind:
                    grade = 2 if p["popularity"] >= 4 else 0
                    fh.write(f"{q}\t{p['id']}\t{grade}\n")
                    for ts in range(int(p["popularity"])):
                        events.append({"query": t, "product_id": p["id"], "event": "click",
                                       "ts": 1000 * ts + j, "position": 1 + ts % 5,
                                       "user_id": f"u{j % 3}"})  # fmt: skip
    log = root / "events.jsonl"
    log.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    index = root / "index"
    with Catalog.open(str(index), Embedder(str(tiny_embedder_dir))) as cat:
        cat.add(products)
    return {"beir": beir, "index": index, "events": log, "root": root}


def test_tune_blend_then_search_with_explain(setup, tiny_embedder_dir):
    out = setup["root"] / "blend"
    common = ["--index", setup["index"], "--embedder", tiny_embedder_dir, "--mode", "lexical"]
    res = run(
        "tune", "blend", "--data", setup["beir"], *common, "--reranker", "none",
        "--events", setup["events"], "--labels", "events", "--eta", "1", "--numeric",
        "popularity", "--monotone", "popularity=+1", "--max-move", "2", "--rounds", "20",
        "--out", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["labels"] == "events" and report["weighted"] is True
    assert report["train_queries"] > 0 and (out / "blend.json").is_file()
    res = run("search", "drill model", *common, "--blend", out, "--explain", "--json",
              "--user", "u1", "--top-k", "10", "--top-n", "5")  # fmt: skip
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert len(body["results"]) == 5
    for r in body["results"]:
        assert "popularity" in r["explain"]["contributions"]
        assert abs(r["rank"] - r["explain"]["base_rank"]) <= 2


def test_tune_blend_on_judged_labels_learns_the_signal(setup, tiny_embedder_dir):
    """The default ``--labels judged``: qrels grades train the blend (no event log); here the
    relevant products are the popular ones, so the blend must beat the unblended order."""
    out = setup["root"] / "blend_judged"
    res = run(
        "tune", "blend", "--data", setup["beir"], "--index", setup["index"], "--embedder",
        tiny_embedder_dir, "--mode", "lexical", "--reranker", "none", "--numeric",
        "popularity", "--monotone", "popularity=+1", "--rounds", "20", "--out", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["labels"] == "judged" and report["weighted"] is False
    assert report["dev"]["queries"] > 0
    assert report["dev"]["ndcg@10_blend"] > report["dev"]["ndcg@10_base"] + 0.1
    assert (out / "blend.json").is_file()


def test_tune_blend_bad_input_is_a_message_not_a_traceback(setup, tiny_embedder_dir):
    bad = setup["root"] / "bad.jsonl"
    bad.write_text('{"query": "q", "product_id": "p1", "event": "click", "ts": 1}\n{"query": 5}\n')
    common = ["--data", setup["beir"], "--index", setup["index"], "--embedder", tiny_embedder_dir,
              "--reranker", "none", "--out", setup["root"] / "x"]  # fmt: skip
    res = run("tune", "blend", *common, "--events", bad)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "bad.jsonl:2: field 'query'" in res.stderr
