"""`rankwise index`, `search` and `rerank`: the catalog and query commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    CHUNKING,
    MODEL,
    SEARCH,
    STAGES,
    CascadeOpt,
    JsonOpt,
    console,
    err_console,
    load_embedder,
    load_reranker,
    with_settings,
)

if TYPE_CHECKING:
    from rankwise.config import Settings


# ----------------------------------------------------------------------------- index
@app.command()
@with_settings("index", "side_dir", "embedder", ("embedder_revision", "--revision"), *MODEL,
               "record_batch_size")  # fmt: skip
def index(
    catalog: Annotated[Path, typer.Argument(help="Catalog file: .jsonl, .csv or .parquet.")],
    fields: Annotated[
        str | None,
        typer.Option(
            help="Field mapping, e.g. id=sku,title=name,text=desc+bullets,metadata=brand+price."
        ),
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="Skip bad rows (listed) instead of aborting.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Resume from the last committed batch of the same file.")
    ] = True,
    json_out: JsonOpt = False,
    outputs: Annotated[
        str,
        typer.Option(help="Embedder outputs to store: dense, or dense,sparse,colbert (bge-m3)."),
    ] = "dense",
    *,
    s: Settings,
) -> None:
    """Validate a catalog, embed it and write it into the index (upsert by product id)."""
    from rankwise.catalog import Catalog
    from rankwise.data import FieldMapping
    from rankwise.store import settings_store_options

    mapping = FieldMapping.parse(fields)
    emb = load_embedder(s)
    outs = tuple(o.strip() for o in outputs.split(",") if o.strip())
    with Catalog.open(s.index, emb, outputs=outs, **settings_store_options(s)) as cat:
        report = cat.ingest(
            catalog,
            mapping,
            batch_size=s.record_batch_size,
            skip_invalid=skip_invalid,
            resume=resume,
            show_progress=not json_out,
        )
    if json_out:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        resumed = f" (resumed: {report.skipped_done} already done)" if report.skipped_done else ""
        console.print(
            f"indexed {report.count} products into {s.index} in {report.seconds:.1f}s "
            f"({report.docs_per_s:.1f} docs/s){resumed}; {report.total_in_store} in the index"
        )
        for msg in report.invalid[:20]:
            err_console.print(f"[yellow]skipped:[/] {msg}")
        for msg in report.failed_batches:
            err_console.print(f"[red]failed batch:[/] {msg}")
    if report.failed_batches:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- search
@app.command()
@with_settings("index", "side_dir", *SEARCH, "embedder", "embedder_revision", "reranker",
               "reranker_revision", *MODEL, *STAGES)  # fmt: skip
def search(
    query: Annotated[str, typer.Argument(help="The search query.")],
    rerank: Annotated[bool, typer.Option(help="Rerank with the cross-encoder.")] = True,
    filter: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="Metadata filter, repeatable: category=phone, price<500, 'brand in a,b'.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    cascade: CascadeOpt = None,
    user: Annotated[
        str | None, typer.Option(help="Shopper id for the blend stage's personal features.")
    ] = None,
    explain: Annotated[
        bool, typer.Option(help="Each result's blend feature contributions (with --json).")
    ] = False,
    *,
    s: Settings,
) -> None:
    """Search the index: recall, rerank, print a table (or JSON).

    Without --embedder, the embedder the index was built with (its stamp) is used; with
    --mode lexical --no-rerank no model is loaded at all.
    """
    from rankwise.catalog import Catalog, side_index
    from rankwise.search import Searcher
    from rankwise.stages import configure_stages
    from rankwise.store import open_store, settings_store_options

    store = open_store(s.index, create=False, **settings_store_options(s))
    try:
        stamp = store.read_stamp() or {}
        if "embedder" not in s.model_fields_set and stamp.get("model"):
            s = s.model_copy(update={"embedder": stamp["model"]})  # the index's own embedder
        emb = None if s.mode == "lexical" else load_embedder(s)  # lexical: no vectors needed
        cat = Catalog(store, emb, side_index(store))  # checks the stamp before a reranker loads
        ce = not cascade or "rerank:" in cascade  # a cascade without rerank loads none
        rr = load_reranker(s) if (rerank and s.reranker and ce) else None
        searcher = Searcher.from_settings(s, cat, rr)
        configure_stages(searcher, s)  # chunked rerank, rerank template, blend
        resp = searcher.search(
            query, filters=filter or None, rerank=rerank, cascade=cascade, user=user,
            explain=explain,
        )  # fmt: skip
    finally:
        store.close()
    if json_out:
        print(json.dumps(resp.to_dict(), ensure_ascii=False))
        return
    from rankwise.render import results_table

    console.print(results_table(resp))


# ----------------------------------------------------------------------------- rerank
@app.command()
@with_settings("reranker", ("reranker_revision", "--revision"), *MODEL, *CHUNKING)
def rerank(
    query: Annotated[str, typer.Argument(help="The query.")],
    documents: Annotated[
        Path | None,
        typer.Option(
            "--documents",
            "-d",
            exists=True,
            dir_okay=False,
            readable=True,
            help="File with one document per line (.txt) or JSONL with 'text'; default stdin.",
        ),
    ] = None,
    top_n: Annotated[
        int | None, typer.Option("--top-n", min=1, help="Results returned (default: all).")
    ] = None,
    json_out: JsonOpt = False,
    *,
    s: Settings,
) -> None:
    """Rerank documents for a query with the cross-encoder (no index needed)."""
    from rankwise.errors import InvalidRequest

    text = documents.read_text(encoding="utf-8") if documents else sys.stdin.read()
    docs = _read_documents(text, str(documents or "<stdin>"))
    if not docs:
        raise InvalidRequest(
            "no documents to rerank: give --documents FILE or pipe one document per line"
        )
    ranked = _rank(load_reranker(s), query, docs, top_n, s)
    rows = [
        {
            "rank": r.rank,
            "index": r.index,
            "score": r.score,
            "relevance": r.relevance,
            "document": r.document,
        }
        for r in ranked
    ]
    if json_out:
        print(json.dumps(rows, ensure_ascii=False))
        return
    from rankwise.render import rerank_table

    console.print(rerank_table(query, rows))


def _rank(reranker, query: str, docs: list[str], top_n: int | None, s: Settings):
    """Plain truncation, or with --max-chunks-per-doc / --max-tokens-per-doc each document
    scored as its token windows (``models.chunking``; a line is all body, no title)."""
    from rankwise.models import RankedResults
    from rankwise.models.chunking import score_chunked
    from rankwise.stages import chunk_policy

    policy = chunk_policy(s)
    if policy is None:
        return reranker.rank(query, docs, top_n=top_n)
    scores = score_chunked(reranker, query, docs, policy).scores
    return RankedResults.from_scores(query, docs, scores, top_n=top_n)


def _read_documents(text: str, name: str) -> list[str]:
    from rankwise.errors import DataError

    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{name}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj.get("text"), str):
                raise DataError(f"{name}:{n}: JSON lines need a string field 'text'")
            docs.append(obj["text"])
        else:
            docs.append(line.strip())
    return docs
