"""Lexical engine choice: rankwise's bm25s + jieba/Snowball vs LanceDB's native FTS.

Measures, on KUAKE-QTR (Chinese) and Home Depot (English) test queries: index build
time, query latency (p50) and quality (nDCG@10, recall@100 via ranx). LanceDB FTS is run
with each tokeniser that could work offline for Chinese (``icu``, ``ngram`` 2-gram) and
``jieba/default`` (needs a downloaded model: reported as unavailable when it fails).

    .venv/bin/python benchmarks/lexical_choice.py [--queries 300]

Writes ``benchmarks/results/lexical_choice.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS
from ranx import Qrels, Run, evaluate

from rankwise.data import load_beir
from rankwise.lexical import LexicalIndex

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).parent / "results"

LANCE_CONFIGS = {
    "lancedb-fts simple": {"base_tokenizer": "simple"},
    "lancedb-fts icu": {"base_tokenizer": "icu", "stem": False},
    "lancedb-fts icu+stem": {"base_tokenizer": "icu", "stem": True},
    "lancedb-fts ngram2": {
        "base_tokenizer": "ngram",
        "ngram_min_length": 2,
        "ngram_max_length": 2,
        "stem": False,
    },
    "lancedb-fts jieba/default": {"base_tokenizer": "jieba/default", "stem": False},
}


def _quality(qrels: dict, run: dict) -> dict[str, float]:
    run = {q: d for q, d in run.items() if d}
    for q in qrels:
        run.setdefault(q, {"__none__": 0.0})
    scores = evaluate(Qrels(qrels), Run(run), ["ndcg@10", "recall@100"])
    return {k: round(float(v), 4) for k, v in scores.items()}


def bench_bm25s(ids, texts, queries) -> dict:
    t = time.perf_counter()
    index = LexicalIndex.build(ids, texts)
    build = time.perf_counter() - t
    run, lat = {}, []
    for qid, q in queries.items():
        t = time.perf_counter()
        hits = index.search(q, 100)
        lat.append(time.perf_counter() - t)
        run[qid] = {i: s for i, s in hits}
    return {"build_s": build, "p50_ms": 1000 * float(np.median(lat)), "run": run}


def bench_lance(ids, texts, queries, config: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        table = lancedb.connect(d).create_table("t", pa.table({"id": ids, "text": texts}))
        t = time.perf_counter()
        try:
            table.create_index("text", config=FTS(**config))
        except Exception as e:  # noqa: BLE001 - report any tokenizer failure as unavailable
            return {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        build = time.perf_counter() - t
        run, lat = {}, []
        for qid, q in queries.items():
            t = time.perf_counter()
            try:
                rows = table.search(q, query_type="fts").select(["id"]).limit(100).to_list()
            except Exception:  # noqa: BLE001 - e.g. a query the tokeniser turns into nothing
                rows = []
            lat.append(time.perf_counter() - t)
            run[qid] = {r["id"]: float(r["_score"]) for r in rows}
    return {"build_s": build, "p50_ms": 1000 * float(np.median(lat)), "run": run}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=300, help="test queries per dataset")
    args = ap.parse_args(argv)
    results = {}
    for name in ("kuake_qtr", "homedepot"):
        ds = load_beir(DATA / name, "test")
        ids = list(ds.corpus)
        texts = [f"{d['title']} {d['text']}" for d in ds.corpus.values()]
        qids = sorted(ds.qrels)[: args.queries]
        queries = {q: ds.queries[q] for q in qids}
        qrels = {q: ds.qrels[q] for q in qids}
        engines = {"bm25s+jieba/snowball (rankwise)": bench_bm25s(ids, texts, queries)}
        for label, cfg in LANCE_CONFIGS.items():
            engines[label] = bench_lance(ids, texts, queries, cfg)
        for label, r in engines.items():
            if "run" in r:
                r.update(_quality(qrels, r.pop("run")))
                r["build_s"], r["p50_ms"] = round(r["build_s"], 2), round(r["p50_ms"], 2)
            print(name, label, r, file=sys.stderr)
        results[name] = {"docs": len(ids), "queries": len(qids), "engines": engines}
    OUT.mkdir(exist_ok=True)
    (OUT / "lexical_choice.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    lines = ["# Lexical engine choice", "", "`.venv/bin/python benchmarks/lexical_choice.py`", ""]
    lines += [
        "| dataset | engine | build s | query p50 ms | nDCG@10 | recall@100 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for label, e in r["engines"].items():
            if "error" in e:
                lines.append(f"| {name} | {label} | unavailable: {e['error'][:80]} | | | |")
            else:
                lines.append(
                    f"| {name} ({r['docs']} docs, {r['queries']} q) | {label} | {e['build_s']} | "
                    f"{e['p50_ms']} | {e['ndcg@10']} | {e['recall@100']} |"
                )
    (OUT / "lexical_choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
