"""`rankwise serve`: the HTTP service."""

from __future__ import annotations

from typing import Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    BackendOpt,
    DeviceOpt,
    EmbedderOpt,
    IndexOpt,
    MinRelevanceOpt,
    ModelBatchOpt,
    ModeOpt,
    QuantizeOpt,
    RerankerOpt,
    SkipMarginOpt,
    TokenBudgetOpt,
    TopKOpt,
    TopNOpt,
    err_console,
    model_options,
    option,
    settings,
)


# ----------------------------------------------------------------------------- serve (issue 5)
@app.command()
def serve(
    host: Annotated[str | None, option("host")] = None,
    port: Annotated[int | None, option("port")] = None,
    index: IndexOpt = None,
    embedder: EmbedderOpt = None,
    reranker: RerankerOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    model_batch_size: ModelBatchOpt = None,
    token_budget: TokenBudgetOpt = None,
    top_k: TopKOpt = None,
    top_n: TopNOpt = None,
    mode: ModeOpt = None,
    min_relevance: MinRelevanceOpt = None,
    skip_margin: SkipMarginOpt = None,
    cache_url: Annotated[str | None, option("cache_url")] = None,
    batching: Annotated[bool | None, option("batching", "--batching/--no-batching")] = None,
    judgments: Annotated[str | None, option("judgments")] = None,
    compare_reranker: Annotated[str | None, option("compare_reranker")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve embeddings (OpenAI), rerank (Cohere/Jina, TEI, Weaviate) and search over HTTP.

    API keys: RANKWISE_API_KEYS="k1,k2" (never on the command line, where others can read them).

    Limits and batching: RANKWISE_MAX_DOCUMENTS, RANKWISE_BATCH_WAIT_MS, ... (rankwise.config).
    """
    from rankwise.server import serve as run_server

    s = settings(
        host=host, port=port, index=index, embedder=embedder, reranker=reranker,
        top_k=top_k, top_n=top_n, mode=mode, min_relevance=min_relevance,
        skip_margin=skip_margin, cache_url=cache_url, batching=batching, judgments=judgments,
        compare_reranker=compare_reranker,
        **model_options(device, backend, quantize, model_batch_size, token_budget),
    )  # fmt: skip
    err_console.print(
        f"rankwise serve: http://{s.host}:{s.port} (workbench at /, docs at /docs); loading models...",
        highlight=False,
    )
    run_server(s, log_level=log_level)
