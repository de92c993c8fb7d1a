"""`rankwise serve`: the HTTP service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import MODEL, SEARCH, STAGES, err_console, with_settings

if TYPE_CHECKING:
    from rankwise.config import Settings


# ----------------------------------------------------------------------------- serve (issue 5)
@app.command()
@with_settings("host", "port", "index", "side_dir", "embedder", "reranker", *MODEL, *SEARCH, "cache_url",
               "batching", "judgments", "compare_reranker", *STAGES, "blend_reload_s")  # fmt: skip
def serve(
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    *,
    s: Settings,
) -> None:
    """Serve embeddings (OpenAI), rerank (Cohere/Jina, TEI, Weaviate) and search over HTTP.

    API keys: RANKWISE_API_KEYS="k1,k2" (never on the command line, where others can read them).

    Limits and batching: RANKWISE_MAX_DOCUMENTS, RANKWISE_BATCH_WAIT_MS, ... (rankwise.config).
    """
    from rankwise.server import serve as run_server

    err_console.print(
        f"rankwise serve: http://{s.host}:{s.port} (workbench at /, docs at /docs); loading models...",
        highlight=False,
    )
    run_server(s, log_level=log_level)
