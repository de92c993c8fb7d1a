"""The whole tuning loop in one call: split → mine → score → train → evaluate → report.

:func:`tune_run` works on a BEIR folder: ``qrels/train.tsv`` queries are tuned on (with a
dev slice held out by a stable hash of the query), ``qrels/test.tsv`` queries are only
used for the before/after evaluation, which is :func:`rankwise.evaluate.evaluate` run
twice (base models, tuned models) on the test pool and the global pool. Output::

    OUT/data/{train,dev}.jsonl           examples from the qrels (FlagEmbedding JSONL)
    OUT/data/{train,dev}.mined.jsonl     with mined hard negatives (+ teacher scores)
    OUT/embedder/                        the tuned bi-encoder (loads with Embedder(OUT/embedder))
    OUT/reranker/                        the tuned cross-encoder, when a reranker base is given
    OUT/eval/{before,after}.{md,json}    the evaluation engine's own reports
    OUT/report.md, OUT/report.json       before/after table, stage wall times, settings
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rankwise.data import BeirDataset, document_text, load_beir
from rankwise.errors import InvalidRequest
from rankwise.evaluate.significance import describe_test
from rankwise.tune.data import (
    TrainExample,
    from_beir,
    read_examples,
    split_by_query,
    stable_fraction,
    write_examples,
)
from rankwise.tune.embedder import EmbedderTrainConfig, train_embedder
from rankwise.tune.mine import MiningConfig, mine_hard_negatives
from rankwise.tune.promote import (
    PromotionConfig,
    calibrated_searcher,
    dev_query_ids,
    first_stage_negatives,
    promote,
)
from rankwise.tune.reranker import RerankerTrainConfig, train_reranker
from rankwise.tune.score import score_examples
from rankwise.tune.training import TrainResult, describe_checkpoints

log = logging.getLogger(__name__)

#: The one significance test of the report (the evaluation engine's, with its seed).
SIGNIFICANCE = describe_test("randomization")

#: Metrics of the before/after table.
REPORT_METRICS = ("ndcg@10", "recall@10", "mrr@10", "recall@1")


@dataclass
class TuneRunConfig:
    """Settings of :func:`tune_run` (see the CLI ``rankwise tune run --help``)."""

    data: Path
    base: str
    out: Path
    reranker_base: str | None = None
    teacher: str | None = None
    pos_threshold: int = 1
    max_train_queries: int | None = None
    dev_fraction: float = 0.05
    min_dev_queries: int = 30
    mining: MiningConfig = field(default_factory=MiningConfig)
    embedder: EmbedderTrainConfig = field(default_factory=EmbedderTrainConfig)
    reranker: RerankerTrainConfig = field(default_factory=RerankerTrainConfig)
    pools: tuple[str, ...] = ("test", "global")
    rerank_pools: tuple[str, ...] | None = None
    top_k: int = 50
    top_n: int = 10
    max_eval_queries: int | None = None
    rerank_max_queries: int | None = None
    index_dir: Path | None = None
    reuse: bool = True
    promotion: PromotionConfig = field(default_factory=PromotionConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d, default=str))


def _reused(folder: Path, reuse: bool, say: Callable[[str], None]) -> TrainResult | None:
    """The saved :class:`TrainResult` of a finished training in ``folder``, if reusing."""
    path = folder / "rankwise_tune.json"
    if not (reuse and path.is_file()):
        return None
    say(f"[tune] reusing the model trained earlier in {folder}")
    d = json.loads(path.read_text())
    d["out_dir"] = Path(d["out_dir"])
    d["losses"] = [tuple(x) for x in d["losses"]]
    return TrainResult(**d)


def test_pool_dataset(ds: BeirDataset, max_queries: int | None = None) -> BeirDataset:
    """``ds`` restricted to its test pool: the documents judged for the evaluated queries
    (the first ``max_queries`` by sorted id). Its global pool equals the original's test pool.
    """
    qids = sorted(ds.qrels)[:max_queries] if max_queries else sorted(ds.qrels)
    qrels = {q: ds.qrels[q] for q in qids}
    corpus = {d: ds.corpus[d] for d in sorted({d for docs in qrels.values() for d in docs})}
    return BeirDataset(ds.path, ds.split, corpus, {q: ds.queries[q] for q in qids}, qrels)


def _subsample(examples: list[TrainExample], n: int | None) -> list[TrainExample]:
    """At most ``n`` examples, picked by a stable hash of the query (reproducible)."""
    if n is None or n >= len(examples):
        return examples
    return sorted(examples, key=lambda ex: stable_fraction("sample:" + ex.query))[:n]


def tune_run(cfg: TuneRunConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the loop; returns the report dict (also written to ``OUT/report.{md,json}``)."""
    from rankwise.config import model_or_none
    from rankwise.evaluate import evaluate
    from rankwise.evaluate.indexes import corpus_vectors, dataset_root
    from rankwise.models import Embedder, Reranker

    # "none" switches the reranker (and the teacher) off, as everywhere else
    cfg = replace(
        cfg, reranker_base=model_or_none(cfg.reranker_base), teacher=model_or_none(cfg.teacher)
    )
    if cfg.reranker_base is None:
        say("[tune] no reranker base (--reranker-base): reranker training and rerank rows skipped")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    index_dir = Path(cfg.index_dir or out / "cache")
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        say(f"[tune] {name}: {timings[name]:.1f}s")

    # 1. data and split
    t = time.perf_counter()
    train_ds = load_beir(cfg.data, "train")
    examples = _subsample(from_beir(train_ds, threshold=cfg.pos_threshold), cfg.max_train_queries)
    train, dev = split_by_query(examples, cfg.dev_fraction, cfg.min_dev_queries)
    judged_dev = dev  # before mining: positives among their judged documents only
    if len(dev) < cfg.min_dev_queries:
        say(
            f"[tune] warning: {len(dev)} dev queries, fewer than --min-dev-queries "
            f"{cfg.min_dev_queries}: the dev checks cannot decide much"
        )
    write_examples(train, out / "data" / "train.jsonl")
    write_examples(dev, out / "data" / "dev.jsonl")
    say(
        f"[tune] {len(train)} train and {len(dev)} dev queries (positives: grade >= {cfg.pos_threshold})"
    )
    stage("split", t)

    # the gates and the calibration serve the run's own Top-K / Top-N
    promo = replace(cfg.promotion, fusion=replace(cfg.promotion.fusion, top_k=cfg.top_k),
                    top_n=cfg.top_n)  # fmt: skip
    dev_qids = dev_query_ids(train_ds, dev)
    calib_qids = [q for q in sorted(train_ds.qrels) if q not in set(dev_qids)]

    # 2. mining with the base embedder (its corpus vectors are shared with the evaluation)
    t = time.perf_counter()
    # the base runs at the length the tuned model is trained at: before/after compare equal
    # lengths (and the tuned folder records its length, so it loads at the same one)
    base_emb = Embedder(cfg.base, max_length=cfg.embedder.max_length)
    # the base embedder's calibrated first stage: its real candidates become negatives, and
    # it is what a tuned model must beat to be promoted
    base_searcher, base_pipeline, _ = calibrated_searcher(
        train_ds, base_emb, index_dir, calib_qids, promo, say=say
    )
    stage("calibrate_base", t)
    t = time.perf_counter()
    root = dataset_root(index_dir, train_ds.path.name, train_ds.corpus, base_emb)
    ids, vectors = corpus_vectors(train_ds.corpus, base_emb, root, log=say)
    mined_files = [out / "data" / f"{part}.mined.jsonl" for part in ("train", "dev")]
    mining_file = out / "data" / "mining.json"
    if cfg.reuse and mining_file.is_file() and all(f.is_file() for f in mined_files):
        say(f"[tune] reusing the negatives mined earlier in {out / 'data'}")
        train, dev = (read_examples(f) if f.stat().st_size else [] for f in mined_files)
        mining = json.loads(mining_file.read_text())
    else:
        corpus = [document_text(train_ds.corpus[i]) for i in ids]
        teacher = Reranker(cfg.teacher) if cfg.teacher else None
        mined, report = mine_hard_negatives(
            train + dev, corpus, base_emb, cfg.mining, teacher=teacher, doc_vectors=vectors
        )
        train, dev = mined[: len(train)], mined[len(train) :]
        n_first = promo.first_stage_negatives
        train = first_stage_negatives(train, base_searcher, n_first)
        dev = first_stage_negatives(dev, base_searcher, n_first)
        stage("mine", t)
        # 3. teacher scores
        if teacher is not None:
            t = time.perf_counter()
            train = score_examples(train, teacher)
            dev = score_examples(dev, teacher)
            stage("score", t)
        write_examples(train, mined_files[0])
        write_examples(dev, mined_files[1])
        mining = report.to_dict()
        mining_file.write_text(json.dumps(mining, indent=2, default=str))

    # 4. training (a finished model in OUT is reused when cfg.reuse: reruns skip it)
    t = time.perf_counter()
    emb_result = _reused(out / "embedder", cfg.reuse, say)
    if emb_result is None:
        emb_result = train_embedder(train, cfg.base, out / "embedder", cfg.embedder)
        stage("train_embedder", t)
        say(f"[tune] embedder: {describe_checkpoints(emb_result.checkpoints)}")
    rr_result = None
    if cfg.reranker_base:
        t = time.perf_counter()
        rr_result = _reused(out / "reranker", cfg.reuse, say)
        if rr_result is None:
            # what the reranker replaces: the tuned embedder's order of the same candidates
            fs_emb = Embedder(str(out / "embedder"))

            def first_stage(query: str, docs: Sequence[str]):
                return fs_emb.encode_documents(list(docs)) @ fs_emb.encode_queries([query])[0]

            rr_result = train_reranker(
                train,
                cfg.reranker_base,
                out / "reranker",
                cfg.reranker,
                dev=dev,
                judged_dev=judged_dev,
                first_stage=first_stage,
                first_stage_name="tuned embedder cosine",
                min_dev_queries=cfg.min_dev_queries,
            )
            stage("train_reranker", t)
            say(f"[tune] reranker: {describe_checkpoints(rr_result.checkpoints)}")
        for w in rr_result.warnings:
            say(f"[tune] warning: {w}")

    # 5. promotion: each tuned model must beat what it would replace on the dev queries
    t = time.perf_counter()
    tuned_emb = Embedder(str(out / "embedder"))
    tuned_rr = Reranker(str(out / "reranker")) if cfg.reranker_base else None
    tuned_searcher, tuned_pipeline, _ = calibrated_searcher(
        train_ds, tuned_emb, index_dir, calib_qids, promo, say=say
    )
    serving_emb, pipeline, gates = promote(
        train_ds, dev_qids, (base_emb, base_searcher, base_pipeline),
        (tuned_emb, tuned_searcher, tuned_pipeline), tuned_rr, promo, say=say,
    )  # fmt: skip
    pipeline.save(out / "pipeline.json")
    stage("promote", t)

    # 6. before/after with the evaluation engine. With pools == ("test",) every evaluation
    # runs over the test-pool documents only: the same pool, without embedding the corpus.
    common = dict(
        split="test", top_k=cfg.top_k, top_n=cfg.top_n, ks=(1, 5, 10), pools=cfg.pools,
        index_dir=index_dir, max_queries=cfg.max_eval_queries, log=say,
    )  # fmt: skip
    test_ds = load_beir(cfg.data, "test")
    pool_only = tuple(cfg.pools) == ("test",)
    source = test_pool_dataset(test_ds, cfg.max_eval_queries) if pool_only else test_ds
    reranked = None
    if tuned_rr is not None:
        # Reranking is the costly stage: it goes first, cfg.rerank_pools may restrict it to
        # the test pool and cfg.rerank_max_queries to fewer queries; its own "hybrid" run is
        # the baseline it is compared with (same queries).
        t = time.perf_counter()
        rerank_pools = tuple(cfg.rerank_pools or cfg.pools)
        n_rr = cfg.rerank_max_queries or cfg.max_eval_queries
        rr_source = test_pool_dataset(test_ds, n_rr) if rerank_pools == ("test",) else test_ds
        reranked = evaluate(
            rr_source, systems="hybrid,hybrid+rerank,rerank-only", embedder=tuned_emb,
            reranker=tuned_rr,
            **{**common, "pools": rerank_pools, "max_queries": n_rr},
        )  # fmt: skip
        reranked.save(out / "eval", stem="rerank")
        stage("evaluate_rerank", t)
    t = time.perf_counter()
    before = evaluate(source, systems="lexical,dense,hybrid", embedder=base_emb, **common)
    before.save(out / "eval", stem="before")
    stage("evaluate_before", t)
    t = time.perf_counter()
    after = evaluate(source, systems="dense,hybrid", embedder=tuned_emb, **common)
    after.save(out / "eval", stem="after")
    stage("evaluate_after", t)
    t = time.perf_counter()
    promoted = evaluate(
        source, systems="calibrated+rerank" if tuned_rr else "calibrated",
        embedder=serving_emb, reranker=tuned_rr, pipeline=pipeline, **common,
    )  # fmt: skip
    promoted.save(out / "eval", stem="promoted")
    stage("evaluate_promoted", t)

    report = {
        "config": cfg.to_dict(),
        "wall_seconds": timings,
        "data": {"train_queries": len(train), "dev_queries": len(dev)},
        "max_length": {
            "embedder_before": base_emb.max_length,
            "embedder_after": tuned_emb.max_length,
            "reranker": tuned_rr.max_length if tuned_rr is not None else None,
        },
        "significance": SIGNIFICANCE,
        "mining": mining,
        "embedder_training": emb_result.to_dict(),
        "reranker_training": rr_result.to_dict() if rr_result else None,
        "table": compare_reports(before, after, cfg.pools, reranked),
        "promotion": gates,
        "pipeline": pipeline.to_dict(),
        "promoted": promoted_rows(before, promoted, cfg.pools),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    say(f"[tune] report: {out / 'report.md'}")
    return report


# Rows of the before/after table: (label, system in "before", system in "after").
_ROWS = (
    ("lexical (BM25)", "lexical", None),
    ("dense", "dense", "dense"),
    ("hybrid", "hybrid", "hybrid"),
    ("hybrid + rerank (tuned CE) vs tuned hybrid", "@rerank:hybrid", "@rerank:hybrid+rerank"),
    # each query's judged documents: the tuned embedder's order vs the tuned reranker's
    ("rerank-only (tuned CE) vs tuned dense order", "@rerank:dense", "@rerank:rerank-only"),
)


def promoted_rows(before, promoted, pools: Sequence[str]) -> list[dict[str, Any]]:
    """The promoted pipeline against the best single stage of the base models, per pool
    (nDCG@10 and the paired test), so the report never hides a loss to BM25 alone."""
    from rankwise.evaluate import randomization_test

    rows = []
    for pool in pools:
        served = next((r for r in promoted.results if r.pool == pool and r.metrics), None)
        if served is None:
            continue
        # nDCG@10, or the deepest nDCG the served Top-N allows (no @k past what it returns)
        metric = next((m for m in ("ndcg@10", "ndcg@5", "ndcg@1") if m in served.metrics.values),
                      None)  # fmt: skip
        singles = {}
        for system in ("lexical", "dense"):
            try:
                singles[system] = before.result(system, pool).metrics.values[metric]
            except (KeyError, AttributeError):
                continue
        if not singles or metric is None:
            continue
        best = max(singles, key=lambda k: singles[k].mean())
        vals = served.metrics.values[metric]
        rows.append({
            "pool": pool, "system": served.system, "metric": metric, "best_single": best,
            "best_single_value": float(singles[best].mean()), "value": float(vals.mean()),
            "delta": float(vals.mean() - singles[best].mean()),
            "p": randomization_test(vals, singles[best], n_resamples=2000),
        })  # fmt: skip
    return rows


def compare_reports(before, after, pools: Sequence[str], reranked=None) -> list[dict[str, Any]]:
    """Rows ``{pool, system, metric: {before, after, delta, p}}`` with paired p-values.

    The p-value is the evaluation engine's paired randomisation test over per-query values.
    ``reranked`` (optional) holds ``hybrid`` and ``hybrid+rerank`` of the tuned models.
    """
    from rankwise.evaluate import randomization_test
    from rankwise.evaluate.significance import N_RESAMPLES, SEED

    def find(report, system, pool):
        try:
            r = report.result(system, pool)
        except KeyError:
            return None
        return r.metrics

    def lookup(default, system, pool):
        if system.startswith("@rerank:"):
            return find(reranked, system[8:], pool) if reranked is not None else None
        return find(default, system, pool)

    def mean(metrics, m):  # None: not computed (a system that returns fewer than k results)
        return (
            float(metrics.values[m].mean()) if metrics is not None and m in metrics.values else None
        )

    rows = []
    for pool in (*pools, "judged") if reranked is not None else pools:
        for label, b_sys, a_sys in _ROWS:
            b = lookup(before, b_sys, pool)
            a = lookup(after, a_sys, pool) if a_sys else None
            if b is None and a is None:
                continue
            row: dict[str, Any] = {"pool": pool, "system": label}
            for m in REPORT_METRICS:
                cell: dict[str, float | None] = {"before": mean(b, m), "after": mean(a, m)}
                if cell["before"] is not None and cell["after"] is not None:
                    cell["delta"] = cell["after"] - cell["before"]
                    # the evaluation engine's test, resamples and seed: the same comparison
                    # gets the same p-value here and in eval/*.md
                    cell["p"] = randomization_test(
                        a.values[m], b.values[m], n_resamples=N_RESAMPLES, seed=SEED
                    )
                row[m] = cell
            rows.append(row)
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: settings, stage wall times, before/after table."""
    cfg = report["config"]
    lines = [
        f"# Tuning report: {Path(cfg['data']).name}",
        "",
        f"- base embedder: `{cfg['base']}`; reranker base: `{cfg['reranker_base']}`; "
        f"teacher: `{cfg['teacher']}`",
        f"- train/dev queries: {report['data']['train_queries']}/{report['data']['dev_queries']} "
        f"(positives: grade >= {cfg['pos_threshold']}); evaluation: test split",
        "- mining: {negatives} negatives for {queries} queries; dropped {dropped_known} known "
        "positives, {dropped_similarity} by the similarity guard, {dropped_teacher} by the "
        "teacher guard; {filled_random} random fills".format(
            **{k: "n/a" if v is None else v for k, v in report["mining"].items()}
        ),
        "- wall times (s): " + ", ".join(f"{k} {v}" for k, v in report["wall_seconds"].items()),
        "",
        "Before = base models, after = tuned models, at the lengths "
        + _lengths(report.get("max_length"))
        + ". For the hybrid + rerank row, before = tuned hybrid without rerank; for the "
        "rerank-only row (pool judged: each test query's judged documents), before = the "
        "tuned embedder's order of the same documents. p = "
        + report.get("significance", "paired randomisation test")
        + "; – = not comparable (a system that returns fewer than k results).",
        "",
        "| pool | system | "
        + " | ".join(f"{m} before → after (Δ, p)" for m in REPORT_METRICS)
        + " |",
        "|---|---|" + "---|" * len(REPORT_METRICS),
    ]
    for row in report["table"]:
        cells = []
        for m in REPORT_METRICS:
            c = row[m]
            if c.get("delta") is None:
                cells.append(f"{_fmt(c['before'])} → {_fmt(c['after'])}")
            else:
                cells.append(
                    f"{c['before']:.4f} → {c['after']:.4f} ({c['delta']:+.4f}, p={c['p']:.3g})"
                )
        lines.append(f"| {row['pool']} | {row['system']} | " + " | ".join(cells) + " |")
    gates = report.get("promotion") or {}
    if gates:
        lines += ["", f"**Promotion** (gate: paired test on {gates['dev_queries']} held-out train "
                  f"queries, {gates['metric']}, alpha {gates['alpha']})"]  # fmt: skip
        for key in ("embedder", "reranker"):
            if gates.get(key):
                lines.append(f"- {gates[key]['reason']}")
        pl = report.get("pipeline") or {}
        langs = ", ".join(f"{k}: {v['mode']}" for k, v in (pl.get("by_language") or {}).items())
        lines.append(
            f"- serving: embedder `{gates.get('serving_embedder')}`; recall "
            f"{pl.get('default', {}).get('mode')}" + (f" ({langs})" if langs else "")
        )
    if report.get("promoted"):
        lines += ["", "| pool | promoted pipeline | metric | best single stage (base) | promoted | Δ vs best single (p) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in report["promoted"]:
            lines.append(
                f"| {r['pool']} | {r['system']} | {r['metric']} | {r['best_single']} "
                f"{r['best_single_value']:.4f} | {r['value']:.4f} | {r['delta']:+.4f} (p={r['p']:.3g}) |"
            )
    for name in ("embedder_training", "reranker_training"):
        res = report.get(name)
        if res:
            losses = res["losses"]
            first, last = (losses[0][1], losses[-1][1]) if losses else (None, None)
            lines += [
                "",
                f"**{name.replace('_', ' ')}**: {res['global_step']} steps, {res['rows']} rows "
                f"({res['dropped']} dropped), {_secs(res['seconds'])}; loss {_fmt(first)} → {_fmt(last)}",
            ]
            if res.get("config"):
                keys = ("max_steps", "batch_size", "group_size", "learning_rate", "max_length")
                keys += (
                    "temperature",
                    "objective",
                    "related_label",
                    "distill_weight",
                    "freeze_embeddings",
                )
                cfg_items = {k: res["config"][k] for k in keys if k in res["config"]}
                lines.append(f"settings: {json.dumps(cfg_items)}")
            if res.get("dev"):
                lines.append(f"dev (before → after): {json.dumps(res['dev'])}")
            fs = res.get("first_stage")
            if fs:
                lines.append(
                    f"judged dev check vs the first stage ({fs['scorer']}, {fs['queries']} "
                    f"queries): nDCG@10 first stage {fs['ndcg@10']:.4f}, tuned reranker "
                    f"{fs['reranker_ndcg@10']:.4f} ({fs['delta']:+.4f})"
                )
            ck = res.get("checkpoints")
            if ck:
                lines.append(f"checkpoints: {describe_checkpoints(ck)}")
            for w in res.get("warnings") or []:
                lines.append(f"WARNING: {w}")
    return "\n".join(lines) + "\n"


def _lengths(lengths: dict[str, Any] | None) -> str:
    if not lengths:
        return "not recorded"
    out = f"embedder {lengths['embedder_before']} → {lengths['embedder_after']} tokens"
    if lengths.get("reranker"):
        out += f", reranker {lengths['reranker']} tokens per pair"
    return out


def _secs(x: float | None) -> str:
    return "time not recorded" if x is None else f"{x:.0f}s"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def check_pools(pools: Sequence[str]) -> tuple[str, ...]:
    bad = [p for p in pools if p not in ("test", "global")]
    if bad:
        raise InvalidRequest(f"unknown pool {bad[0]!r}; choose from test, global")
    return tuple(pools)
