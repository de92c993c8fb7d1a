"""Chunked rerank (max over windows) vs truncation on SYNTHETIC long product pages.

Home Depot products carry titles only, so long pages are built, for speed, by concatenating
real Home Depot titles: **quality on real long descriptions needs real descriptions**; this
measures the mechanism, not a catalog. For each test query with >= 2 judged products of >= 2
distinct grades, each judged product P becomes:

* ``late``: a page whose body is FILLER random other product titles with P's own title
  inserted at a random place in the second half, and no head: the decisive text sits where
  truncation never looks;
* ``title-head``: P's title as the head (kept in every window) and the filler as the body:
  what chunking costs when the decisive text is already first (filler windows can only add
  noise to the max).

Rows: ``titles`` (P's title alone: the ceiling), ``truncate`` (rankwise, ``max_length``
tokens per pair as today), ``chunks max N`` / ``chunks mean-top2 N`` (rankwise chunked rerank,
``max_chunks_per_doc=N``), and the peer ``sentence-transformers CrossEncoder.predict`` with
the same model and ``max_length`` (it truncates; TEI, infinity and FlagEmbedding do the
same). Quality: rerank-only nDCG@10 over each query's judged products (linear gains). Speed:
wall seconds of the scoring call, cold (rankwise's score cache off), pairs and tokens run.

The cross-encoder: a MiniLM cross-encoder that ``rankwise tune`` trained on Home Depot
*train* queries (``--reranker``; trained at 64 tokens per pair, run here at ``--max-length``).
No pretrained cross-encoder installs offline (../shared/MODELS.md).

    PYTHONPATH=src python benchmarks/long_docs.py --reranker /work/bench-cache/tune-hd-i19/reranker
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rankwise.data import load_beir
from rankwise.evaluate.metrics import compute_metrics
from rankwise.models import Reranker
from rankwise.models.chunking import ChunkPolicy, LongDocument, score_chunked, split_windows

DATA = Path("/work/shared/data/homedepot")
OUT = Path(__file__).parent / "results"
FILLER = 16  # filler titles per page (~300 tokens)
NOTES = [
    "Reading: the `tokens` column is the cost (what the model runs); `seconds` were measured on",
    "a 2-core machine shared with other jobs (load average 10-14 during the run) and move with",
    "that load more than with the variant, so compare tokens. Quality: random order already",
    "scores ~0.89 on this judged-only metric (../shared/MODELS.md) and the tuned cross-encoder",
    "barely beats it on plain titles, so nDCG differences of ~0.01 over 15 queries are noise:",
    "this run shows the mechanism and its cost, not a quality gain; that needs a strong",
    "cross-encoder and real long descriptions.",
]


def ndcg(per_query_scores: dict[str, dict[str, float]], qrels) -> float:
    judged = {q: qrels[q] for q in per_query_scores}
    return float(compute_metrics(per_query_scores, judged, (10,), ("ndcg",)).mean()["ndcg@10"])


def build_pages(ds, qids, rng):
    titles = [d["title"] for d in ds.corpus.values()]
    pages: dict[str, dict[str, dict[str, LongDocument]]] = {"late": {}, "title-head": {}}
    for q in qids:
        for kind in pages:
            pages[kind][q] = {}
        for pid in ds.qrels[q]:
            own = ds.corpus[pid]["title"]
            filler = [titles[i] for i in rng.integers(0, len(titles), FILLER)]
            late = list(filler)
            late.insert(int(rng.integers(FILLER // 2, FILLER + 1)), own)
            pages["late"][q][pid] = LongDocument("", ". ".join(late))
            pages["title-head"][q][pid] = LongDocument(f"{own}\n", ". ".join(filler))
    return pages


def run_rankwise(reranker, ds, qids, docs_of, policy: ChunkPolicy | None):
    """(run, seconds, pairs, tokens) for one variant; cold: the score cache is off."""
    run: dict[str, dict[str, float]] = {}
    seconds = 0.0
    pairs = tokens = 0
    with reranker.score_cache_disabled():
        for q in qids:
            query = ds.queries[q]
            pids = list(docs_of(q))
            docs = [docs_of(q)[p] for p in pids]
            if policy is None:
                texts = [d.text for d in docs]
                t = time.perf_counter()
                scores = reranker.score(query, texts)
                seconds += time.perf_counter() - t
                windows = [[x] for x in texts]
            else:
                t = time.perf_counter()
                scores = score_chunked(reranker, query, docs, policy).scores
                seconds += time.perf_counter() - t
                windows = split_windows(reranker, query, docs, policy)
            flat = [w for ws in windows for w in ws]
            counts = reranker.count_tokens([query, *flat])
            pairs += len(flat)
            tokens += sum(min(counts[0] + c, reranker.max_length) for c in counts[1:])
            run[q] = {p: float(s) for p, s in zip(pids, scores, strict=True)}
    return run, seconds, pairs, tokens


def run_peer(model_path, max_length, ds, qids, docs_of):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(model_path), max_length=max_length, device="cpu")
    run, seconds, pairs = {}, 0.0, 0
    for q in qids:
        pids = list(docs_of(q))
        batch = [(ds.queries[q], docs_of(q)[p].text) for p in pids]
        t = time.perf_counter()
        scores = ce.predict(batch, batch_size=32, show_progress_bar=False)
        seconds += time.perf_counter() - t
        pairs += len(batch)
        run[q] = {p: float(s) for p, s in zip(pids, scores, strict=True)}
    return run, seconds, pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reranker", default="/work/bench-cache/tune-hd-i19/reranker")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    ds = load_beir(DATA, "test")
    eligible = sorted(
        q for q, rel in ds.qrels.items() if len(rel) >= 2 and len(set(rel.values())) >= 2
    )
    qids = [str(q) for q in rng.permutation(eligible)[: args.queries]]
    pages = build_pages(ds, qids, rng)
    reranker = Reranker(args.reranker, max_length=args.max_length)
    rows = []
    titles = {q: {p: LongDocument(ds.corpus[p]["title"]) for p in ds.qrels[q]} for q in qids}
    run, s, n, tok = run_rankwise(reranker, ds, qids, titles.__getitem__, None)
    rows.append({"set": "titles", "system": "rankwise (title only: the ceiling)",
                 "ndcg@10": ndcg(run, ds.qrels), "seconds": s, "pairs": n, "tokens": tok})  # fmt: skip
    variants = [("truncate", None)] + [
        (f"chunks {how} {n}", ChunkPolicy(n, overlap_tokens=16, aggregate=how))
        for how, n in (("max", 2), ("max", 4), ("mean-top2", 4))
    ]
    for kind, by_q in pages.items():
        for name, policy in variants:
            run, s, n, tok = run_rankwise(reranker, ds, qids, by_q.__getitem__, policy)
            rows.append({"set": kind, "system": f"rankwise {name}", "ndcg@10": ndcg(run, ds.qrels),
                         "seconds": s, "pairs": n, "tokens": tok})  # fmt: skip
        run, s, n = run_peer(args.reranker, args.max_length, ds, qids, by_q.__getitem__)
        rows.append({"set": kind, "system": "sentence-transformers CrossEncoder (truncates)",
                     "ndcg@10": ndcg(run, ds.qrels), "seconds": s, "pairs": n, "tokens": None})  # fmt: skip
    for r in rows:
        base = next(x for x in rows if x["set"] == r["set"] and x["system"] == "rankwise truncate") \
            if r["set"] != "titles" else r  # fmt: skip
        r["time_vs_truncate"] = (
            round(r["seconds"] / base["seconds"], 2) if base["seconds"] else None
        )
    result = {
        "benchmark": "long_docs",
        "pages": "SYNTHETIC: real Home Depot titles concatenated (speed and mechanism only; "
        "quality on real long descriptions needs real descriptions)",
        "filler_titles_per_page": FILLER,
        "reranker": args.reranker,
        "max_length": reranker.max_length,
        "queries": len(qids),
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "long_docs.json").write_text(json.dumps(result, indent=2))
    md = [
        "# Chunked rerank vs truncation on SYNTHETIC long pages (Home Depot titles)",
        "",
        f"Pages are **synthetic**: {FILLER} random real Home Depot titles as filler; `late` puts the",
        "product's own title at a random place in the second half (no head), `title-head` keeps it",
        "as the head of every window. Speed and mechanism only: quality on real long descriptions",
        f"needs real descriptions. Reranker: `{args.reranker}` (MiniLM cross-encoder tuned on Home",
        f"Depot train queries), {reranker.max_length} tokens per pair; {len(qids)} test queries,",
        "rerank-only nDCG@10 over each query's judged products; time cold (score cache off).",
        "",
        "| pages | system | nDCG@10 | pairs | tokens | seconds | time vs truncate |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['set']} | {r['system']} | {r['ndcg@10']:.4f} | {r['pairs']} | "
            f"{r['tokens'] if r['tokens'] is not None else '–'} | {r['seconds']:.1f} | "
            f"{r['time_vs_truncate']}x |"
        )
    md += ["", *NOTES]
    md += ["", f"Command: `PYTHONPATH=src python benchmarks/long_docs.py --reranker {args.reranker} "
           f"--queries {args.queries} --max-length {args.max_length}`; {result['seconds']} s total "
           "on a shared 2-core machine (compare ratios within the run)."]  # fmt: skip
    (OUT / "long_docs.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
