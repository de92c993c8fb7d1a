"""`rankwise tune blend`: train the final ranking stage (logic: :mod:`rankwise.tune.blend`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rankwise.cli.common import MODEL, err_console, load_embedder, load_reranker, with_settings
from rankwise.cli.tune import tune_app

if TYPE_CHECKING:
    from rankwise.config import Settings


@tune_app.command("blend")
@with_settings("index", "embedder", "reranker", "mode", "top_k", *MODEL)
def tune_blend_command(
    data: Annotated[Path, typer.Option("--data", help="BEIR folder whose corpus the index holds.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Blend folder to write.")],
    split: Annotated[str, typer.Option(help="Judged queries to train on.")] = "train",
    events: Annotated[
        Path | None, typer.Option(help="Event log JSONL: behaviour and personal features.")
    ] = None,
    labels: Annotated[
        str, typer.Option(help="judged (qrels grades) or events (the log's later half).")
    ] = "judged",
    numeric: Annotated[
        str, typer.Option(help="Numeric product fields, e.g. popularity,stock,price.")
    ] = "",
    monotone: Annotated[
        str, typer.Option(help="Constraints, e.g. stock=+1,rerank_logit=+1.")
    ] = "rerank_logit=+1",
    max_move: Annotated[int, typer.Option(min=0, help="Most places a product moves.")] = 3,
    eta: Annotated[
        float | None, typer.Option(help="Position-bias exponent for IPW of logged events.")
    ] = None,
    max_queries: Annotated[int, typer.Option(min=1, help="At most N queries.")] = 2000,
    rounds: Annotated[int, typer.Option(min=1, help="Boosting rounds.")] = 200,
    *,
    s: Settings,
) -> None:
    """Train the blend stage (LightGBM lambdarank with monotone constraints and a movement
    cap) over the served pipeline's Top-K; report dev nDCG@10 against the unblended order."""
    from rankwise.blend import BlendSpec
    from rankwise.catalog import Catalog
    from rankwise.search import Searcher
    from rankwise.tune.blend import parse_monotone, tune_blend

    spec = BlendSpec(
        numeric_fields=tuple(f.strip() for f in numeric.split(",") if f.strip()),
        behaviour=events is not None, monotone=parse_monotone(monotone), max_move=max_move,
        events=str(events.resolve()) if events else None, eta=eta,
    )  # fmt: skip
    with Catalog.open(s.index, load_embedder(s), create=False) as cat:
        rr = load_reranker(s) if s.reranker else None
        searcher = Searcher(cat, rr, top_k=s.top_k, mode=s.mode)
        report = tune_blend(
            searcher, str(data), spec, str(out), split=split, labels=labels,
            max_queries=max_queries, num_rounds=rounds, log=err_console.print,
        )  # fmt: skip
    print(json.dumps(report, indent=2, default=str))
