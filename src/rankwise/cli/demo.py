"""`rankwise demo`: the bundled sample catalog, first stage vs rerank."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    BackendOpt,
    DeviceOpt,
    EmbedderOpt,
    QuantizeOpt,
    RerankerOpt,
    console,
    model_options,
    settings,
)


# ----------------------------------------------------------------------------- demo
@app.command()
def demo(
    index: Annotated[Path, typer.Option(help="Where to build the demo index.")] = Path(
        "demo-index"
    ),
    embedder: EmbedderOpt = None,
    reranker: RerankerOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Index the bundled sample catalog and show first-stage vs reranked results."""
    from rankwise.demo import run_demo

    s = settings(embedder=embedder, reranker=reranker, **model_options(device, backend, quantize))
    run_demo(index, console=console, settings=s)
