"""The ``rankwise`` command: one Typer app, thin. Parse, call the library, print.

Every :class:`~rankwise.errors.RankwiseError` becomes ``error: <message>`` on stderr and
exit code 2 in :func:`main`, the one place where exceptions are mapped for the CLI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rankwise.errors import RankwiseError

app = typer.Typer(
    name="rankwise",
    help="Two-stage product search: recall with a bi-encoder + BM25, rerank with a cross-encoder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

IndexOpt = Annotated[
    str | None,
    typer.Option("--index", "-i", help="Index directory or store URI (default ./index)."),
]
EmbedderOpt = Annotated[
    str | None, typer.Option("--embedder", help="Embedder: hub id or local folder.")
]
RerankerOpt = Annotated[
    str | None, typer.Option("--reranker", help="Cross-encoder: hub id or local folder.")
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Pinned model revision (commit, tag).")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, mps (default: auto).")]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="torch or onnx.")]
QuantizeOpt = Annotated[str | None, typer.Option("--quantize", help="int8 (onnx backend).")]


def _settings(**overrides: Any):
    from rankwise.config import load_settings

    return load_settings(**overrides)


def _embedder(s):
    from rankwise.models import Embedder

    return Embedder(
        s.embedder,
        revision=s.embedder_revision,
        device=s.device,
        backend=s.backend,
        quantize=s.quantize,
    )


def _reranker(s):
    from rankwise.models import Reranker

    return Reranker(
        s.reranker,
        revision=s.reranker_revision,
        device=s.device,
        backend=s.backend,
        quantize=s.quantize,
    )


# ----------------------------------------------------------------------------- index
@app.command()
def index(
    catalog: Annotated[Path, typer.Argument(help="Catalog file: .jsonl, .csv or .parquet.")],
    index: IndexOpt = None,
    embedder: EmbedderOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    fields: Annotated[
        str | None,
        typer.Option(
            help="Field mapping, e.g. id=sku,title=name,text=desc+bullets,metadata=brand+price."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Records embedded and written per batch.")
    ] = 256,
    skip_invalid: Annotated[
        bool, typer.Option(help="Skip bad rows (listed) instead of aborting.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Resume from the last committed batch of the same file.")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Validate a catalog, embed it and write it into the index (upsert by product id)."""
    from rankwise.catalog import Catalog
    from rankwise.data import FieldMapping

    s = _settings(
        index=index,
        embedder=embedder,
        embedder_revision=revision,
        device=device,
        backend=backend,
        quantize=quantize,
    )
    mapping = FieldMapping.parse(fields)
    cat = Catalog.open(s.index, _embedder(s))
    report = cat.ingest(
        catalog,
        mapping,
        batch_size=batch_size,
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
def search(
    query: Annotated[str, typer.Argument(help="The search query.")],
    index: IndexOpt = None,
    mode: Annotated[str | None, typer.Option(help="dense, lexical or hybrid.")] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Candidates from recall (default 50).")
    ] = None,
    top_n: Annotated[
        int | None, typer.Option("--top-n", min=1, help="Results returned (default 10).")
    ] = None,
    rerank: Annotated[bool, typer.Option(help="Rerank with the cross-encoder.")] = True,
    threshold: Annotated[
        float | None, typer.Option(help="Minimum 0..1 relevance after rerank.")
    ] = None,
    filter: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="Metadata filter, repeatable: category=phone, price<500, 'brand in a,b'.",
        ),
    ] = None,
    embedder: EmbedderOpt = None,
    reranker: RerankerOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Search the index: recall, rerank, print a table (or JSON)."""
    from rankwise.catalog import Catalog
    from rankwise.search import Searcher

    s = _settings(
        index=index,
        mode=mode,
        top_k=top_k,
        top_n=top_n,
        threshold=threshold,
        embedder=embedder,
        reranker=reranker,
        device=device,
        backend=backend,
        quantize=quantize,
    )
    cat = Catalog.open(s.index, _embedder(s), create=False)
    rr = _reranker(s) if (rerank and s.reranker) else None
    searcher = Searcher(
        cat, rr, top_k=s.top_k, top_n=s.top_n, mode=s.mode, fusion=s.fusion, threshold=s.threshold
    )
    resp = searcher.search(query, filters=filter or None, rerank=rerank)
    if json_out:
        print(json.dumps(resp.to_dict(), ensure_ascii=False))
        return
    from rankwise.render import results_table

    console.print(results_table(resp))


# ----------------------------------------------------------------------------- rerank
@app.command()
def rerank(
    query: Annotated[str, typer.Argument(help="The query.")],
    documents: Annotated[
        Path | None,
        typer.Option(
            "--documents",
            "-d",
            help="File with one document per line (.txt) or JSONL with 'text'; default stdin.",
        ),
    ] = None,
    reranker: RerankerOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    top_n: Annotated[int | None, typer.Option("--top-n", min=1)] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rerank documents for a query with the cross-encoder (no index needed)."""
    from rankwise.errors import InvalidRequest

    text = documents.read_text(encoding="utf-8") if documents else sys.stdin.read()
    docs = _read_documents(text, str(documents or "<stdin>"))
    if not docs:
        raise InvalidRequest(
            "no documents to rerank: give --documents FILE or pipe one document per line"
        )
    s = _settings(
        reranker=reranker,
        reranker_revision=revision,
        device=device,
        backend=backend,
        quantize=quantize,
    )
    ranked = _reranker(s).rank(query, docs, top_n=top_n)
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


# ----------------------------------------------------------------------------- demo
@app.command()
def demo(
    index: Annotated[Path, typer.Option(help="Where to build the demo index.")] = Path(
        "demo-index"
    ),
    embedder: EmbedderOpt = None,
    reranker: RerankerOpt = None,
) -> None:
    """Index the bundled sample catalog and show first-stage vs reranked results."""
    from rankwise.demo import run_demo

    run_demo(index, embedder=embedder, reranker=reranker, console=console)


# ----------------------------------------------------------------------------- eval (issue 3)
@app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Option("--data", help="BEIR folder (corpus, queries, qrels/).")],
    split: Annotated[
        str, typer.Option(help="qrels split to evaluate: qrels/<split>.tsv.")
    ] = "test",
    systems: Annotated[
        str,
        typer.Option(
            help="Comma list: lexical, dense, hybrid, <mode>+rerank, rerank-only "
            "(empty with --run to score external runs only)."
        ),
    ] = "lexical,dense,hybrid",
    embedder: EmbedderOpt = None,
    reranker: RerankerOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Recall candidates.")] = 50,
    top_n: Annotated[int, typer.Option("--top-n", min=1, help="Results after rerank.")] = 10,
    k: Annotated[str, typer.Option("--k", help="Metric cut-offs, e.g. 1,5,10,50.")] = "1,5,10,50",
    pools: Annotated[str, typer.Option(help="test, global or test,global.")] = "test,global",
    threshold: Annotated[
        int, typer.Option(help="Smallest grade counted as relevant (binary metrics).")
    ] = 1,
    run: Annotated[
        list[str] | None,
        typer.Option("--run", help="External TREC run to score, NAME=FILE or FILE; repeatable."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write report.md/.json/.png (and runs) here.")
    ] = None,
    save_run: Annotated[bool, typer.Option("--save-run", help="Write TREC runs to --out.")] = False,
    index_dir: Annotated[
        Path | None,
        typer.Option(help="Cache for vectors and indexes (default ~/.cache/rankwise/eval)."),
    ] = None,
    significance: Annotated[str, typer.Option(help="randomization or ttest.")] = "randomization",
    min_precision: Annotated[
        float | None, typer.Option(help="Also calibrate a rerank threshold for this precision.")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="Only the first N queries (quick check).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Evaluate search systems on judged queries (BEIR layout): metrics, significance, latency."""
    from rankwise.data import load_beir
    from rankwise.evaluate import evaluate, parse_systems

    names = parse_systems(systems)
    dataset = load_beir(data, split)  # bad data fails here, before any model loads
    s = _settings(embedder=embedder, reranker=reranker, device=device, backend=backend)
    needs_embedder = any(n != "rerank-only" for n in names)
    needs_reranker = any("rerank" in n for n in names)
    runs = {}
    for item in run or []:
        name, sep, path = item.partition("=")
        runs[name if sep else Path(item).stem] = Path(path if sep else item)
    report = evaluate(
        dataset,
        split=split,
        systems=names,
        embedder=_embedder(s) if needs_embedder else None,
        reranker=_reranker(s) if needs_reranker and s.reranker else None,
        top_k=top_k,
        top_n=top_n,
        ks=k,
        pools=[p.strip() for p in pools.split(",") if p.strip()],
        threshold=threshold,
        index_dir=index_dir,
        runs=runs,
        significance=significance,
        min_precision=min_precision,
        max_queries=max_queries,
        show_progress=not json_out,
        log=(lambda m: None) if json_out else (lambda m: err_console.print(m, highlight=False)),
    )
    if json_out:
        print(report.to_json())
    else:
        console.print(report.to_markdown(), markup=False, highlight=False)
    if out is not None:
        paths = report.save(out, save_runs=save_run)
        err_console.print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False)
    elif save_run:
        err_console.print("[yellow]--save-run needs --out DIR; no runs written[/]")


# ----------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, map RankwiseError to a message and exit 2."""
    try:
        app(args=argv, standalone_mode=True)
    except RankwiseError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
