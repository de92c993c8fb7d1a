"""`rankwise eval`: search systems scored on judged queries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    MODEL,
    CascadeOpt,
    JsonOpt,
    JudgmentsOpt,
    console,
    err_console,
    judged_data,
    load_embedder,
    load_reranker,
    with_settings,
)

if TYPE_CHECKING:
    from rankwise.config import Settings


# ----------------------------------------------------------------------------- eval (issue 3)
@app.command("eval")
@with_settings("embedder", "reranker", *MODEL, "top_k", "top_n", "relevant_grade")
def eval_command(
    data: Annotated[Path, typer.Option("--data", help="BEIR folder (corpus, queries, qrels/).")],
    split: Annotated[
        str | None,
        typer.Option(
            help="qrels split(s): test (qrels/test.tsv), train,test, or all (default test; "
            "with --judgments: every judged query)."
        ),
    ] = None,
    judgments: JudgmentsOpt = None,
    systems: Annotated[
        str,
        typer.Option(
            help="Comma list: lexical, dense, hybrid, <mode>+rerank, rerank-only "
            "(empty with --run to score external runs only)."
        ),
    ] = "lexical,dense,hybrid",
    k: Annotated[str, typer.Option("--k", help="Metric cut-offs, e.g. 1,5,10,50.")] = "1,5,10,50",
    pools: Annotated[str, typer.Option(help="test, global or test,global.")] = "test,global",
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
    calibration_split: Annotated[
        str | None,
        typer.Option(help="Choose score thresholds on this split (e.g. train), check on --split."),
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="Only the first N queries (quick check).")
    ] = None,
    json_out: JsonOpt = False,
    cascade: CascadeOpt = None,
    rerank_template: Annotated[
        list[str] | None,
        typer.Option(
            "--rerank-template",
            "--template",
            help="Compare rerank texts: NAME=FORMAT (e.g. 'brand={brand} | {title}'), FORMAT, "
            "or a .toml/.json file of them; repeatable. Each adds <mode>+rerank[template=NAME].",
        ),
    ] = None,
    *,
    s: Settings,
) -> None:
    """Evaluate search systems on judged queries (BEIR layout): metrics, significance, latency."""
    from rankwise.data import load_beir
    from rankwise.evaluate import evaluate, parse_systems

    names = parse_systems(systems)
    split = split or ("judged" if judgments else "test")
    data = judged_data(judgments, data)
    dataset = load_beir(data, split)  # bad data fails here, before any model loads
    needs_embedder = any(n != "rerank-only" for n in names) or bool(cascade)
    needs_reranker = any("rerank" in n for n in names) or "rerank:" in (cascade or "")
    runs = {}
    for item in run or []:
        name, sep, path = item.partition("=")
        runs[name if sep else Path(item).stem] = Path(path if sep else item)
    report = evaluate(
        dataset,
        split=split,
        systems=names,
        embedder=load_embedder(s) if needs_embedder else None,
        reranker=_eval_reranker(s, names) if needs_reranker else None,
        top_k=s.top_k,
        top_n=s.top_n,
        ks=k,
        pools=[p.strip() for p in pools.split(",") if p.strip()],
        threshold=s.relevant_grade,
        index_dir=index_dir,
        runs=runs,
        significance=significance,
        min_precision=min_precision,
        calibration_split=calibration_split,
        max_queries=max_queries,
        cascade=cascade,
        templates=rerank_template,
        show_progress=not json_out,
        log=(lambda m: None) if json_out else (lambda m: err_console.print(m, highlight=False)),
    )
    if json_out:
        print(report.to_json())
    else:
        console.print(report.to_markdown(), markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        paths = report.save(out, save_runs=save_run)
        err_console.print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False)
    elif save_run:
        err_console.print("[yellow]--save-run needs --out DIR; no runs written[/]")


def _eval_reranker(s, names):
    """The reranker for `eval`; None (those systems skipped, one line why) for
    --reranker none, or when the default one was not named and cannot be loaded."""
    from rankwise.config import DEFAULT_RERANKER
    from rankwise.errors import ModelLoadError

    skipped = ", ".join(n for n in names if "rerank" in n)
    if s.reranker is None:
        err_console.print(f"skipping {skipped}: --reranker none", highlight=False)
        return None
    try:
        return load_reranker(s)
    except ModelLoadError as e:
        if "reranker" in s.model_fields_set or s.reranker != DEFAULT_RERANKER:
            raise
        err_console.print(
            f"skipping {skipped}: the default reranker {s.reranker} cannot be loaded "
            f"({str(e).split(': ', 1)[-1].split('. Fix')[0]}); pass --reranker PATH",
            highlight=False,
        )
        return None
