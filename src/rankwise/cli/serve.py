"""`rankwise serve`: the HTTP service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    BackendOpt,
    DeviceOpt,
    EmbedderOpt,
    IndexOpt,
    QuantizeOpt,
    RerankerOpt,
    err_console,
    settings,
)


# ----------------------------------------------------------------------------- serve (issue 5)
@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Interface to listen on (default 127.0.0.1; 0.0.0.0 for all)."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    index: IndexOpt = None,
    embedder: EmbedderOpt = None,
    reranker: RerankerOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    cache_url: Annotated[
        str | None,
        typer.Option("--cache-url", help="memory (default), off, or redis://host:6379/0."),
    ] = None,
    batching: Annotated[
        bool | None,
        typer.Option("--batching/--no-batching", help="Batch concurrent requests per model."),
    ] = None,
    judgments: Annotated[
        Path | None,
        typer.Option("--judgments", help="Qrels TSV the workbench page appends judgments to."),
    ] = None,
    compare_reranker: Annotated[
        str | None,
        typer.Option("--compare-reranker", help="Second cross-encoder for the compare view."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve embeddings (OpenAI), rerank (Cohere/Jina, TEI, Weaviate) and search over HTTP.

    API keys: RANKWISE_API_KEYS="k1,k2" (never on the command line, where others can read them).

    Limits and batching: RANKWISE_MAX_DOCUMENTS, RANKWISE_BATCH_WAIT_MS, ... (see rankwise.server).
    """
    from rankwise.server import serve as run_server

    s = settings(
        host=host,
        port=port,
        index=index,
        embedder=embedder,
        reranker=reranker,
        device=device,
        backend=backend,
        quantize=quantize,
        cache_url=cache_url,
        batching=batching,
        judgments=str(judgments) if judgments else None,
        compare_reranker=compare_reranker,
    )
    err_console.print(
        f"rankwise serve: http://{s.host}:{s.port} (workbench at /, docs at /docs); loading models...",
        highlight=False,
    )
    run_server(s, log_level=log_level)
