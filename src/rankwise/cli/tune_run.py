"""`rankwise tune run`: the whole tuning loop in one command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rankwise.cli.common import (
    JudgmentsOpt,
    config_from_options,
    console,
    err_console,
    judged_data,
    with_settings,
)
from rankwise.cli.tune import BaseOpt, EpochsOpt, KeepCkptOpt, OutDir, UnifiedOpt, tune_app

if TYPE_CHECKING:
    from rankwise.config import Settings


@tune_app.command("run")
@with_settings("top_k", "top_n", ("relevant_grade", "--relevant-grade", "--pos-threshold"))
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
    batch_size: Annotated[
        int, typer.Option("--train-batch-size", "--batch-size", help="Embedder training batch.")
    ] = 32,
    group_size: Annotated[int, typer.Option(help="Embedder group size.")] = 4,
    max_length: Annotated[int, typer.Option(help="Embedder max tokens.")] = 64,
    reranker_batch_size: Annotated[
        int,
        typer.Option(
            "--reranker-train-batch-size",
            "--reranker-batch-size",
            help="Reranker groups per training batch.",
        ),
    ] = 16,
    reranker_group_size: Annotated[int, typer.Option(help="Reranker group size.")] = 8,
    reranker_objective: Annotated[
        str, typer.Option(help="Reranker objective: listwise, pointwise (graded) or margin_mse.")
    ] = "listwise",
    related_label: Annotated[
        float, typer.Option(help="Pointwise label of judged documents below --relevant-grade.")
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
    unified: UnifiedOpt = True,
    *,
    s: Settings,
) -> None:
    """The whole loop: split → mine → score → train → evaluate before/after → OUT/report.md."""
    from rankwise.config import model_or_none
    from rankwise.tune.embedder import EmbedderTrainConfig
    from rankwise.tune.mine import MiningConfig
    from rankwise.tune.reranker import RerankerTrainConfig
    from rankwise.tune.run import TuneRunConfig, check_pools, tune_run

    options = dict(locals())  # the command's options (config_from_options reads them)
    data = judged_data(judgments, data, splits=("train", "test"))  # test: stable 20% by hash
    cfg = TuneRunConfig(
        data=data, base=base, out=out, reranker_base=model_or_none(reranker_base),
        teacher=model_or_none(teacher), pos_threshold=s.relevant_grade,
        dev_fraction=dev_fraction, min_dev_queries=min_dev_queries,
        max_train_queries=max_train_queries,
        max_eval_queries=max_eval_queries,
        mining=MiningConfig(negative_number=negative_number, margin=None if margin < 0 else margin),
        embedder=config_from_options(EmbedderTrainConfig, options),
        reranker=config_from_options(RerankerTrainConfig, options, prefix="reranker_"),
        pools=check_pools([p.strip() for p in pools.split(",") if p.strip()]),
        rerank_pools=check_pools([p.strip() for p in rerank_pools.split(",") if p.strip()])
        if rerank_pools
        else None,
        top_k=s.top_k, top_n=s.top_n, index_dir=index_dir, reuse=reuse, rerank_max_queries=rerank_max_queries,
    )  # fmt: skip
    tune_run(cfg, say=lambda m: err_console.print(m, highlight=False, markup=False))
    console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)
