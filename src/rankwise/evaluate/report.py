"""Evaluation report: markdown tables, JSON with every metric, a PNG, TREC runs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.evaluate.calibration import ThresholdChoice
from rankwise.evaluate.metrics import METRICS, QueryMetrics
from rankwise.evaluate.runs import write_run
from rankwise.evaluate.separation import Separation
from rankwise.evaluate.significance import describe_test

#: Latency stages in pipeline order (``SearchResponse.timings`` keys plus the batched embed).
STAGES = ("embed", "dense", "lexical", "recall", "rerank", "total")

CONVENTIONS = (
    "Documents are ranked by score, ties broken by document id descending (trec_eval order).",
    "Binary metrics count grades >= the relevance threshold as relevant; nDCG uses the grade "
    "as a linear gain (trec_eval ndcg_cut / ranx ndcg) with grades below the threshold as 0.",
    "Queries without any relevant document are left out of the means (listed in the JSON as "
    "skipped_queries); a query a system returns nothing for scores 0.",
    "precision@k divides by k; map@k divides by the number of relevant documents.",
    "Test pool = the union of the documents judged for any evaluated query; global pool = the "
    "whole corpus; rerank-only = each query's own judged documents (classic reranking "
    "benchmark).",
    "+rerank systems return Top-N documents and first-stage systems Top-K: metrics at a k "
    "beyond what a system returns are not computed (– in the tables, absent from the JSON, "
    "not drawn in the plot), since they would count only the documents returned.",
    "Latency: ms per query per stage; embed is the batched query-embedding time divided by "
    "the number of queries (the Searcher is handed the query vectors), so total excludes it; "
    "one untimed warm-up query per system absorbs lazy index loads.",
)


@dataclass
class SystemResult:
    """One system on one pool: per-query metrics, the run, per-query stage latencies (s)."""

    system: str
    pool: str
    metrics: QueryMetrics | None
    run: dict[str, dict[str, float]]
    latency: dict[str, list[float]]
    note: str | None = None
    depth: int | None = None  # results the system returns per query (None: all it scores)

    @property
    def label(self) -> str:
        return f"{self.system} [{self.pool}]"

    def latency_ms(self) -> dict[str, dict[str, float]]:
        """``{stage: {"mean", "p50", "p95"}}`` in milliseconds."""
        out = {}
        for stage, secs in self.latency.items():
            a = np.asarray(secs) * 1000.0
            out[stage] = {
                "mean": float(a.mean()),
                "p50": float(np.percentile(a, 50)),
                "p95": float(np.percentile(a, 95)),
            }
        return out

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        return {
            "system": self.system,
            "pool": self.pool,
            "note": self.note,
            "depth": self.depth,
            "metrics": self.metrics.to_dict(per_query) if self.metrics else None,
            "latency_ms": self.latency_ms(),
        }


@dataclass
class EvaluationReport:
    """Everything one evaluation measured. ``save(out_dir)`` writes md, json, png, runs."""

    dataset: str
    split: str
    config: dict[str, Any]
    results: list[SystemResult]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    separation: list[Separation] = field(default_factory=list)
    calibration: list[ThresholdChoice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def result(self, system: str, pool: str | None = None) -> SystemResult:
        """The result of ``system`` (on ``pool`` if given, else its first pool)."""
        for r in self.results:
            if r.system == system and (pool is None or r.pool == pool):
                return r
        raise KeyError(f"{system} [{pool}]")

    # ------------------------------------------------------------------ JSON
    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "config": self.config,
            "conventions": list(CONVENTIONS),
            "results": [r.to_dict(per_query) for r in self.results],
            "significance": self.comparisons,
            "separation": [s.to_dict() for s in self.separation],
            "calibration": [c.to_dict() for c in self.calibration],
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
        }

    def to_json(self, per_query: bool = False, indent: int | None = None) -> str:
        """Strict JSON (NaN → null) of :meth:`to_dict`."""
        return json.dumps(_json_safe(self.to_dict(per_query)), indent=indent, ensure_ascii=False)

    # ------------------------------------------------------------------ markdown
    def to_markdown(self, heading_level: int = 1) -> str:
        h = "#" * heading_level
        c = self.config
        scored = [r for r in self.results if r.metrics is not None]
        skipped = len(scored[0].metrics.skipped) if scored else 0
        lines = [
            f"{h} Relevance evaluation: {self.dataset} ({self.split})",
            "",
            f"{c.get('n_queries')} queries ({skipped} without a relevant document skipped), "
            f"corpus {c.get('n_corpus')} documents, test pool {c.get('n_test_pool')}; "
            f"embedder `{c.get('embedder')}`, reranker `{c.get('reranker')}`; "
            f"Top-K {c.get('top_k')}, Top-N {c.get('top_n')}; relevant = grade >= "
            f"{c.get('threshold')}; {self.seconds:.0f} s.",
            "",
        ]
        ks = c.get("ks") or []
        for m in METRICS:
            lines += [f"{h}# {m}@k", "", _row(["system", "pool", *[f"@{k}" for k in ks]])]
            lines.append(_row(["---"] * (2 + len(ks))))
            for r in self.results:
                if r.metrics is None:
                    lines.append(_row([r.system, r.pool, r.note or "", *[""] * (len(ks) - 1)]))
                    continue
                mean = r.metrics.mean()
                cells = [f"{mean[f'{m}@{k}']:.4f}" if f"{m}@{k}" in mean else "–" for k in ks]
                lines.append(_row([r.system, r.pool, *cells]))
            lines.append("")
        if self.comparisons:
            metric = self.comparisons[0]["metric"]
            test = self.comparisons[0]["test"]
            lines += [
                f"{h}# Paired significance ({metric}, {describe_test(test)})",
                "",
                _row(["system", "baseline", "pool", "Δ", "p", "wins/losses/ties"]),
                _row(["---"] * 6),
            ]
            for cmp in self.comparisons:
                star = " *" if cmp["p_value"] < 0.05 else ""
                lines.append(
                    _row(
                        [
                            cmp["system"],
                            cmp["baseline"],
                            cmp["pool"],
                            f"{cmp['delta']:+.4f}",
                            f"{cmp['p_value']:.4g}{star}",
                            f"{cmp['wins']}/{cmp['losses']}/{cmp['ties']}",
                        ]
                    )
                )
            lines += ["", "`*` p < 0.05.", ""]
        timed = [r for r in self.results if r.latency]
        if timed:
            seen = {s for r in timed for s in r.latency}
            stages = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))
            lines += [
                f"{h}# Latency per query (ms, mean / p95)",
                "",
                _row(["system", "pool", *stages]),
                _row(["---"] * (2 + len(stages))),
            ]
            for r in timed:
                lat = r.latency_ms()
                cells = [
                    f"{lat[s]['mean']:.2f} / {lat[s]['p95']:.2f}" if s in lat else ""
                    for s in stages
                ]
                lines.append(_row([r.system, r.pool, *cells]))
            lines.append("")
        if self.separation:
            lines += [
                f"{h}# Separation (mean score of positives − negatives)",
                "",
                _row(["model", "gap", "macro gap", "mean pos", "mean neg", "pos", "neg"]),
                _row(["---"] * 7),
            ]
            for s in self.separation:
                lines.append(
                    _row(
                        [
                            s.model,
                            _f(s.gap),
                            _f(s.macro_gap),
                            _f(s.mean_positive),
                            _f(s.mean_negative),
                            str(s.n_positive),
                            str(s.n_negative),
                        ]
                    )
                )
            lines += [
                "",
                "Positives: grade >= threshold; negatives: judged grade 0 plus random corpus "
                "documents (cosine for embedders, sigmoid relevance for cross-encoders).",
                "",
            ]
        if self.calibration:
            lines += [
                f"{h}# Score threshold calibration (judged pairs)",
                "",
                _row(
                    ["model", "objective", "chosen on", "threshold", "precision", "recall", "F1"]
                    + ["met", "pairs", "held out: P / R / F1"]
                ),
                _row(["---"] * 10),
            ]
            for t in self.calibration:
                obj = t.objective + (f" >= {t.min_precision}" if t.min_precision else "")
                held = t.heldout
                check = (
                    f"{held['split']}: {_f(held['precision'])} / {_f(held['recall'])} / "
                    f"{_f(held['f1'])}"
                    if held
                    else "(same split)"
                )
                cells = [t.model, obj, t.split, f"{t.threshold:.4f}", _f(t.precision)]
                cells += [_f(t.recall), _f(t.f1), str(t.met), str(t.n_pairs), check]
                lines.append(_row(cells))
            lines += [
                "",
                "Cross-encoder thresholds apply to relevance = sigmoid(logit) in 0..1 (the "
                "Searcher's `threshold`); embedder thresholds to cosine similarity. Calibrate "
                "on a train split and check on test before setting one in production.",
                "",
            ]
        lines += [f"{h}# Conventions", "", *[f"- {x}" for x in (*CONVENTIONS, *self.notes)], ""]
        return "\n".join(lines)

    # ------------------------------------------------------------------ plot
    def plot(self, path: str | Path) -> Path:
        """PNG: nDCG@k per system (left); sorted per-query Δ of each comparison (right)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
        self.draw(left, right)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def draw(self, left: Any, right: Any) -> None:
        """Draw the two panels of :meth:`plot` on matplotlib axes (to combine reports)."""
        ks = self.config.get("ks") or []
        for r in self.results:
            if r.metrics is None:
                continue
            mean = r.metrics.mean()
            drawn = [k for k in ks if f"ndcg@{k}" in mean]  # only the comparable cut-offs
            left.plot(drawn, [mean[f"ndcg@{k}"] for k in drawn], marker="o", label=r.label)
        left.set(xlabel="k", ylabel="nDCG@k", title=f"{self.dataset} ({self.split}): nDCG@k")
        left.set_xscale("log")
        left.set_xticks(ks, [str(k) for k in ks])
        left.grid(alpha=0.3)
        left.legend(fontsize=7)
        for cmp in self.comparisons:
            a = self.result(cmp["system"], cmp["pool"]).metrics.values[cmp["metric"]]
            b = self.result(cmp["baseline"], cmp["pool"]).metrics.values[cmp["metric"]]
            delta = np.sort(a - b)[::-1]
            right.plot(
                np.arange(1, len(delta) + 1),
                delta,
                label=f"{cmp['system']} vs {cmp['baseline']} [{cmp['pool']}] "
                f"W{cmp['wins']}/L{cmp['losses']}",
            )
        right.axhline(0, color="black", linewidth=0.8)
        metric = self.comparisons[0]["metric"] if self.comparisons else ""
        right.set(
            xlabel="queries (sorted by Δ)",
            ylabel=f"Δ {metric}",
            title=f"{self.dataset}: per-query wins (above 0) and losses (below)",
        )
        right.grid(alpha=0.3)
        if self.comparisons:
            right.legend(fontsize=7)

    # ------------------------------------------------------------------ files
    def save(
        self, out_dir: str | Path, *, save_runs: bool = False, stem: str = "report"
    ) -> dict[str, Path]:
        """Write ``<stem>.md``, ``<stem>.json`` (with per-query values), ``<stem>.png`` and,
        with ``save_runs``, ``runs/<system>.<pool>.trec``. Returns the paths written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": out / f"{stem}.md",
            "json": out / f"{stem}.json",
        }
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        paths["json"].write_text(self.to_json(per_query=True, indent=1), encoding="utf-8")
        paths["png"] = self.plot(out / f"{stem}.png")
        if save_runs:
            for r in self.results:
                if r.run and r.pool != "external":
                    name = f"{r.system.replace('+', '_')}.{r.pool}"
                    paths[f"run:{r.label}"] = write_run(r.run, out / "runs" / f"{name}.trec", name)
        return paths


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _json_safe(x: Any) -> Any:
    """NaN/inf → None (strict JSON), numpy scalars → Python."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
