"""`rankwise tune ...`: convert, mine, score, train, calibrate fusion, the whole loop."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    MODEL,
    config_from_options,
    console,
    err_console,
    load_embedder,
    load_reranker,
    with_settings,
)
from rankwise.config import model_or_none

if TYPE_CHECKING:
    from rankwise.config import Settings

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
DistillOpt = Annotated[float, typer.Option(help="KL distillation weight (0: off).")]
TeacherTempOpt = Annotated[float, typer.Option(help="Teacher softmax temperature.")]
UnifiedOpt = Annotated[
    bool,
    typer.Option(
        "--unified/--dense-only",
        help="bge-m3-shaped base: train dense, sparse and ColBERT together (--dense-only: "
        "the dense output only, heads copied unchanged).",
    ),
]
SaveStepsOpt = Annotated[int, typer.Option(help="Checkpoint every N steps.")]
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


def _say_trained(result, out: Path) -> None:
    from rankwise.tune.training import describe_checkpoints

    console.print(
        f"trained {result.global_step} steps in {result.seconds:.0f}s; model in {out}",
        highlight=False,
    )
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
@with_settings("relevant_grade")
def tune_convert(
    data: Annotated[Path, typer.Argument(help="BEIR folder.")],
    out: OutFile,
    split: Annotated[str, typer.Option(help="qrels split.")] = "train",
    judged_negatives: Annotated[
        bool, typer.Option(help="Grade-0 judgments seed the negatives.")
    ] = True,
    dev_fraction: Annotated[
        float, typer.Option(help="Also write OUT.dev.jsonl with this share of queries.")
    ] = 0.0,
    *,
    s: Settings,
) -> None:
    """Convert BEIR qrels into FlagEmbedding JSONL (optionally split train/dev by query)."""
    from rankwise.data import load_beir
    from rankwise.tune.data import from_beir, split_by_query, write_examples

    examples = from_beir(
        load_beir(data, split),
        threshold=s.relevant_grade,
        judged_negatives=judged_negatives,
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
@with_settings("embedder", *MODEL)
def tune_mine(
    train_file: TrainFile,
    corpus: Annotated[
        Path, typer.Option(help="Candidate documents: a catalog file or a BEIR folder.")
    ],
    out: OutFile,
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
    *,
    s: Settings,
) -> None:
    """Mine hard negatives with an embedder (exact faiss search) and a false-negative guard."""
    import json as _json

    from rankwise.data import document_text, read_catalog
    from rankwise.tune.data import read_examples, write_examples
    from rankwise.tune.mine import mine_hard_negatives

    cfg = _mining_config(
        rank_range, negative_number, margin, teacher_max, random_negatives, sample, seed
    )
    examples = read_examples(train_file)
    source = corpus / "corpus.jsonl" if corpus.is_dir() else corpus
    texts = [document_text(rec) for _, rec in read_catalog(source)]
    # the teacher loads like every cross-encoder (revision-less, the same device/backend)
    teacher = model_or_none(teacher)
    guard = load_reranker(s.model_copy(update={"reranker": teacher})) if teacher else None
    mined, report = mine_hard_negatives(examples, texts, load_embedder(s), cfg, teacher=guard)
    write_examples(mined, out)
    console.print(_json.dumps(report.to_dict(), indent=1), highlight=False)


@tune_app.command("score")
@with_settings("reranker", *MODEL)
def tune_score(
    train_file: TrainFile,
    out: OutFile,
    normalization: Annotated[
        str, typer.Option(help="none (raw logits, default), sigmoid or softmax.")
    ] = "none",
    temperature: Annotated[float, typer.Option(help="Softmax temperature.")] = 1.0,
    *,
    s: Settings,
) -> None:
    """Score every pos/neg with a cross-encoder teacher (pos_scores / neg_scores)."""
    from rankwise.tune.data import read_examples, write_examples
    from rankwise.tune.score import score_examples

    examples = read_examples(train_file)
    scored = score_examples(
        examples, load_reranker(s), normalization=normalization, temperature=temperature
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
    batch_size: Annotated[
        int, typer.Option("--train-batch-size", "--batch-size", help="Queries per training batch.")
    ] = 32,
    group_size: Annotated[int, typer.Option(help="1 positive + n negatives per query.")] = 4,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-5,
    temperature: Annotated[float, typer.Option(help="Contrastive temperature.")] = 0.02,
    max_length: Annotated[int, typer.Option(help="Max tokens per text.")] = 64,
    cached: Annotated[bool, typer.Option(help="Cached-gradient loss (big batches).")] = False,
    mini_batch_size: Annotated[int, typer.Option(help="Mini-batch for --cached.")] = 16,
    distill_weight: DistillOpt = 0.0,
    teacher_temperature: TeacherTempOpt = 1.0,
    query_instruction: Annotated[str | None, typer.Option(help="Query prompt.")] = None,
    save_steps: SaveStepsOpt = 500,
    resume: ResumeOpt = None,
    freeze_embeddings: FreezeOpt = False,
    keep_checkpoints: KeepCkptOpt = False,
    unified: UnifiedOpt = True,
) -> None:
    """Fine-tune a bi-encoder (in-batch + hard negatives, optional distillation)."""
    from rankwise.tune.data import read_examples
    from rankwise.tune.embedder import EmbedderTrainConfig, train_embedder

    cfg = config_from_options(EmbedderTrainConfig, locals())
    result = train_embedder(
        read_examples(train_file), base, out, cfg, resume_from_checkpoint=_resume(resume)
    )
    _say_trained(result, out)


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
    batch_size: Annotated[
        int,
        typer.Option(
            "--train-batch-size", "--batch-size", help="Groups (or pairs) per training batch."
        ),
    ] = 16,
    group_size: Annotated[int, typer.Option(help="1 positive + n negatives.")] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-5,
    max_length: Annotated[int, typer.Option(help="Max tokens per pair.")] = 96,
    distill_weight: DistillOpt = 0.0,
    teacher_temperature: TeacherTempOpt = 1.0,
    related_label: Annotated[
        float, typer.Option(help="Pointwise label of 'related' (middle-grade) documents.")
    ] = 0.5,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank (0: full fine-tuning).")] = 0,
    eval_steps: Annotated[
        int, typer.Option(help="Dev evaluation every N steps (0: end only).")
    ] = 0,
    save_steps: SaveStepsOpt = 500,
    resume: ResumeOpt = None,
    freeze_embeddings: FreezeOpt = False,
    keep_checkpoints: KeepCkptOpt = False,
) -> None:
    """Fine-tune a cross-encoder on groups (listwise) or pairs (pointwise)."""
    from rankwise.tune.data import read_examples
    from rankwise.tune.reranker import RerankerTrainConfig, train_reranker

    cfg = config_from_options(RerankerTrainConfig, locals())
    result = train_reranker(
        read_examples(train_file), base, out, cfg,
        dev=read_examples(dev) if dev else None, resume_from_checkpoint=_resume(resume),
    )  # fmt: skip
    _say_trained(result, out)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)


@tune_app.command("fusion")
@with_settings("index", "embedder", "top_k", "top_n", *MODEL)
def tune_fusion_command(
    data: Annotated[Path, typer.Option("--data", help="BEIR folder whose corpus the index holds.")],
    split: Annotated[str, typer.Option(help="Judged queries to calibrate on.")] = "train",
    reranker: Annotated[
        str | None, typer.Option(help="Also gate this reranker over the calibrated recall.")
    ] = None,
    max_queries: Annotated[int, typer.Option(help="At most N judged queries.")] = 1000,
    alpha: Annotated[float, typer.Option(help="Fusion/rerank must win at this p-value.")] = 0.05,
    confirm_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of the queries in the second half of the cross-fitted test: each "
            "half's pick scores the other (0: pick and test on the same queries).",
        ),
    ] = 0.5,
    out: Annotated[
        str | None, typer.Option(help="Pipeline file (default: beside the index).")
    ] = None,
    *,
    s: Settings,
) -> None:
    """Choose the recall recipe (mode, fusion, k, weights, depth; per query language) for an
    index on judged train queries; a fused recipe must beat the best single list."""
    from rankwise.render import fusion_table
    from rankwise.tune.fusion import FusionConfig, tune_fusion

    reranker = model_or_none(reranker)
    s = s.model_copy(update={"reranker": reranker})
    cfg = FusionConfig(
        top_k=s.top_k, alpha=alpha, max_queries=max_queries, confirm_fraction=confirm_fraction
    )
    rr = load_reranker(s) if reranker else None
    _, choices, _ = tune_fusion(
        data, s.index, load_embedder(s), reranker=rr, split=split, cfg=cfg, top_n=s.top_n, out=out,
        log=console.print,
    )  # fmt: skip
    console.print(fusion_table(choices))
