"""`rankwise demo`: the bundled sample catalog, first stage vs rerank."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    EmbedderOpt,
    RerankerOpt,
    console,
)


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
