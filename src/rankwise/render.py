"""Rich tables for the CLI and the demo (presentation only; no search logic here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from rankwise.search import SearchResponse


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def results_table(resp: SearchResponse, *, title: str | None = None) -> Table:
    """One row per result: rank, id, title, recall score/rank, rerank logit and 0..1 relevance."""
    status = (
        "reranked" if resp.reranked else f"not reranked ({resp.skipped_reason or 'rerank off'})"
    )
    ms = resp.timings.get("total", 0.0) * 1000
    t = Table(
        title=title or f"{resp.query!r} · {resp.mode} · {status} · {ms:.0f} ms",
        title_justify="left",
    )
    for col, kw in [
        ("#", {"justify": "right"}),
        ("id", {}),
        ("title", {"overflow": "fold"}),
        ("recall", {"justify": "right"}),
        ("recall #", {"justify": "right"}),
        ("logit", {"justify": "right"}),
        ("relevance", {"justify": "right"}),
    ]:
        t.add_column(col, **kw)
    for r in resp.results:
        t.add_row(
            str(r.rank),
            r.id,
            str(r.record.get("title", "")),
            _fmt(r.recall_score, 4),
            str(r.recall_rank),
            _fmt(r.rerank_score, 2),
            _fmt(r.relevance),
        )
    return t


def rerank_table(query: str, rows: Sequence[dict[str, Any]]) -> Table:
    t = Table(title=f"rerank: {query!r}", title_justify="left")
    for col in ("#", "input #", "logit", "relevance", "document"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            str(r["rank"]),
            str(r["index"]),
            _fmt(r["score"], 2),
            _fmt(r["relevance"]),
            r["document"],
        )
    return t


def side_by_side(
    query: str,
    first: SearchResponse | Sequence[tuple[str, SearchResponse]],
    second: SearchResponse | None,
    unavailable: str | None,
) -> Table:
    """Demo view: first-stage results (one column per ``(label, response)``, or one response)
    beside reranked results for one query; ``unavailable`` fills the rerank column when
    there is no reranker."""
    columns = (
        [(f"first stage ({first.mode})", first)]
        if isinstance(first, SearchResponse)
        else list(first)
    )
    rerank_column = second is not None or len(columns) == 1
    t = Table(
        title=f"query: {query}",
        title_justify="left",
        show_lines=False,
        caption=None if rerank_column else f"reranked (cross-encoder): {unavailable or '-'}",
        caption_justify="left",
    )
    t.add_column("#", justify="right")
    for label, _ in columns:
        t.add_column(label, overflow="fold")
        t.add_column("score", justify="right")
    if rerank_column:
        t.add_column("reranked (cross-encoder)", overflow="fold")
        t.add_column("relevance", justify="right")
    n = max(len(r.results) for _, r in columns)
    for i in range(n):
        cells = [str(i + 1)]
        for _, resp in columns:
            a = resp.results[i] if i < len(resp.results) else None
            cells += (
                ["", ""] if a is None else [str(a.record.get("title", "")), _fmt(a.recall_score, 4)]
            )
        if not rerank_column:
            pass
        elif second is not None and i < len(second.results):
            b = second.results[i]
            cells += [str(b.record.get("title", "")), _fmt(b.relevance)]
        else:
            cells += [(unavailable or "-") if i == 0 else "", ""]
        t.add_row(*cells)
    return t


def fusion_table(choices: Sequence[Any]) -> Table:
    """Calibrated recall: per query group, lexical / dense / best fused / chosen (nDCG@10)."""
    t = Table(title="calibrated recall (train queries)", title_justify="left")
    for col in ("group", "queries", "lexical", "dense", "best fused", "chosen", "why"):
        t.add_column(col, overflow="fold")
    for c in choices:
        fused = {k: v for k, v in c.scores.items() if k.startswith("hybrid")}
        best = max(fused, key=fused.get) if fused else None
        t.add_row(
            c.group,
            str(c.queries),
            _fmt(c.scores.get("lexical"), 4),
            _fmt(c.scores.get("dense"), 4),
            f"{_fmt(fused[best], 4)} ({best})" if best else "-",
            c.chosen.label(),
            c.reason,
        )
    return t
