"""`rankwise demo`: the bundled sample catalog, first stage vs rerank."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import MODEL, console, with_settings

if TYPE_CHECKING:
    from rankwise.config import Settings


# ----------------------------------------------------------------------------- demo
@app.command()
@with_settings("embedder", "reranker", *MODEL)
def demo(
    index: Annotated[Path, typer.Option(help="Where to build the demo index.")] = Path(
        "demo-index"
    ),
    *,
    s: Settings,
) -> None:
    """Index the bundled sample catalog and show first-stage vs reranked results."""
    from rankwise.demo import run_demo

    run_demo(index, console=console, settings=s)
