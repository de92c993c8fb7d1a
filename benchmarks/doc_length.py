"""Document-length policy for reranking: nDCG@10 against speed for each pair token cap.

    .venv/bin/python benchmarks/doc_length.py [--model DIR] [--max-lengths 32,48,64,96,128,256,512]
        [--dataset homedepot] [--queries 20] [--ndcg-queries 300] [--backend onnx]

rankwise's document text is the title, then the description (``rankwise.data.document_text``),
and the reranker cuts each (query, document) pair at ``max_length`` tokens, the query first
(at most half). So ``max_length`` *is* the policy "title + the first N tokens of the
description", N = max_length - query - title - 3. This script measures each cap on:

- quality: nDCG@10 of reranking each test query's judged documents (``--dataset``'s own
  title + text), pytrec_eval;
- speed: pairs/s (CPU-time based) and p50 latency of a Top-50 call on rerank_speed's workload
  (titles + pseudo descriptions of 40-320 tokens, since Home Depot has no descriptions);

and recommends the smallest cap whose nDCG@10 is within ``--tolerance`` (0.005) of the longest.
Run it on your own catalog in BEIR layout (with descriptions in ``text``) to choose the cap for
your data; the caps are timed round-robin in one process, so they share the machine's load.

Writes benchmarks/results/doc_length.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rerank_speed as rs  # noqa: E402
import speed_common as sc  # noqa: E402


def quality_items(dataset: str, n: int, seed: int = 0) -> tuple[list[dict], dict]:
    """``n`` test queries with >= 3 judged documents (and some grade spread), documents as
    rankwise shows them to the reranker."""
    from rankwise.data import document_text

    corpus, queries, qrels = _beir(dataset)
    test = sorted(q for q, d in qrels.items() if len(d) >= 3 and len(set(d.values())) > 1)
    random.Random(seed).shuffle(test)
    items = [
        {
            "qid": q,
            "query": queries[q],
            "ids": list(qrels[q]),
            "docs": [document_text(corpus[d]) for d in qrels[q]],
        }
        for q in test[:n]
    ]
    return items, {i["qid"]: qrels[i["qid"]] for i in items}


def _beir(name: str) -> tuple[dict, dict, dict]:
    from rankwise.data import load_beir

    ds = load_beir(Path(name) if Path(name).is_dir() else sc.DATA / name, split="test")
    return ds.corpus, ds.queries, ds.qrels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=sc.TRAINED_CE)
    ap.add_argument("--max-lengths", default="32,48,64,96,128,256,512")
    ap.add_argument("--dataset", default="homedepot", help="a ../shared/data set or a BEIR folder")
    ap.add_argument("--queries", type=int, default=20, help="speed: Top-50 calls")
    ap.add_argument("--ndcg-queries", type=int, default=300)
    ap.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--tolerance", type=float, default=0.005)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=sc.OUT / "doc_length")
    args = ap.parse_args()
    sc.require_model(args.model)
    import pytrec_eval
    from tqdm import tqdm

    from rankwise.models import Reranker

    os.environ["RANKWISE_ONNX_THREADS"] = str(args.threads)
    sc.set_threads(args.threads)
    caps = [int(x) for x in args.max_lengths.split(",")]
    machine = sc.machine_info(args.threads)
    speed = rs.build_workload(args.queries, 50, 0, args.model)["speed"]
    items, qrels = quality_items(args.dataset, args.ndcg_queries)
    models = {
        c: Reranker(
            str(args.model),
            backend=args.backend,
            quantize=args.quantize,
            max_length=c,
            token_cache_size=0,  # every cap tokenises for itself, as a first call would
            score_cache_size=0,
        )
        for c in caps
    }
    for m in models.values():  # warm-up
        m.score(speed[0]["query"], speed[0]["docs"][:8])
    times: dict[int, list[tuple[float, float]]] = {c: [] for c in caps}
    for i, item in enumerate(tqdm(speed, desc="Top-50 calls, caps round-robin")):
        for c in caps[i % len(caps) :] + caps[: i % len(caps)]:
            cpu, wall = time.process_time(), time.perf_counter()
            models[c].score(item["query"], item["docs"])
            times[c].append((time.process_time() - cpu, time.perf_counter() - wall))
    n_pairs = sum(len(i["docs"]) for i in speed)
    rows = {}
    for c in tqdm(caps, desc="nDCG@10 per cap"):
        run = {
            i["qid"]: {
                d: float(s)
                for d, s in zip(i["ids"], models[c].score(i["query"], i["docs"]), strict=True)
            }
            for i in items
        }
        per_q = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
        t = np.array(times[c])
        rows[c] = {
            "ndcg10": float(np.mean([v["ndcg_cut_10"] for v in per_q.values()])),
            "pairs_per_s": n_pairs / (t[:, 0].sum() / args.threads),
            "pairs_per_s_wall": n_pairs / t[:, 1].sum(),
            "p50_top50_ms": 1000 * float(np.median(t[:, 1])),
        }
    best = rows[max(caps)]["ndcg10"]
    recommended = min(c for c in caps if rows[c]["ndcg10"] >= best - args.tolerance)
    for r in rows.values():
        r["x_speed_vs_longest"] = r["pairs_per_s"] / rows[max(caps)]["pairs_per_s"]
    doc_tokens = _doc_token_stats(args.model, items)
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "model": str(args.model),
        "dataset": args.dataset,
        "backend": args.backend,
        "quantize": args.quantize,
        "ndcg_queries": len(items),
        "speed_pairs": n_pairs,
        "quality_doc_tokens": doc_tokens,
        "tolerance": args.tolerance,
        "recommended_max_length": recommended,
        "caps": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)


def _doc_token_stats(model: Path, items: list[dict]) -> dict:
    tok = sc.tokenizer(model)
    lens = [len(e.ids) for e in tok.encode_batch([d for i in items for d in i["docs"]])]
    return {"mean": float(np.mean(lens)), "p95": float(np.percentile(lens, 95)), "max": max(lens)}


def markdown(r: dict) -> str:
    m, d = r["machine"], r["quality_doc_tokens"]
    lines = [
        "# Document length policy: rerank max_length, nDCG@10 against speed",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {m['cpu_model']}, {m['threads']} threads; load average at start {m['loadavg_at_start']}, at end {r['loadavg_at_end']}.  ",
        f"Model: {r['model']} ({r['backend']}{', ' + r['quantize'] if r['quantize'] else ''}).  ",
        f"Quality: {r['ndcg_queries']} {r['dataset']} test queries, their judged documents as rankwise "
        f"builds them (title + text): {d['mean']:.0f} tokens on average, p95 {d['p95']:.0f}, max {d['max']}.  ",
        f"Speed: {r['speed_pairs']} pairs (Top-50 calls, titles + pseudo descriptions of 40-320 tokens).",
        "",
        "| max_length (pair tokens) | nDCG@10 | pairs/s (CPU-time) [wall] | x speed vs longest | p50 Top-50 ms |",
        "|---|---|---|---|---|",
    ]
    for c, x in r["caps"].items():
        mark = " **(recommended)**" if int(c) == r["recommended_max_length"] else ""
        lines.append(
            f"| {c}{mark} | {x['ndcg10']:.4f} | {x['pairs_per_s']:.1f} [{x['pairs_per_s_wall']:.1f}] | "
            f"{x['x_speed_vs_longest']:.2f} | {x['p50_top50_ms']:.0f} |"
        )
    lines += [
        "",
        f"Recommended: the smallest cap whose nDCG@10 is within {r['tolerance']} of the longest cap's.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
