"""The report of :func:`rankwise.tune.run.tune_run`: before/after rows and markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankwise.evaluate.significance import describe_test
from rankwise.tune.training import describe_checkpoints

#: The one significance test of the report (the evaluation engine's, with its seed).
SIGNIFICANCE = describe_test("randomization")

#: Metrics of the before/after table.
REPORT_METRICS = ("ndcg@10", "recall@10", "mrr@10", "recall@1")


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
