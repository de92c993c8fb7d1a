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


def option(name: str, *flags: str, **typer_kw: Any) -> Any:
    """The CLI option of setting ``name``, built from its one declaration in
    :class:`rankwise.config.Settings`: the help is the setting's (plus its default and
    ``RANKWISE_*`` variable), the default is None so that :func:`settings` fills in the
    TOML, environment or declared default. ``flags`` default to ``--<name>``; extra flags
    are aliases users already type (e.g. ``--threshold`` for ``--min-relevance``)."""
    from rankwise.config import Settings

    f = Settings.model_fields[name]
    shown = "none" if f.default in (None, "") else f.default
    doc = f"{f.description} (default {shown}; env RANKWISE_{name.upper()})"
    flags = flags or (f"--{name.replace('_', '-')}",)
    return typer.Option(*flags, help=doc, show_default=False, **typer_kw)


# options every command shares; each is one setting (rankwise.config.Settings)
IndexOpt = Annotated[str | None, option("index", "--index", "-i")]
EmbedderOpt = Annotated[str | None, option("embedder")]
RerankerOpt = Annotated[str | None, option("reranker")]
RevisionOpt = Annotated[str | None, option("embedder_revision", "--revision")]
RerankerRevisionOpt = Annotated[str | None, option("reranker_revision")]
DeviceOpt = Annotated[str | None, option("device")]
BackendOpt = Annotated[str | None, option("backend")]
QuantizeOpt = Annotated[str | None, option("quantize")]
ModelBatchOpt = Annotated[int | None, option("model_batch_size", min=1)]
TokenBudgetOpt = Annotated[int | None, option("token_budget", min=1)]
TopKOpt = Annotated[int | None, option("top_k", min=1)]
TopNOpt = Annotated[int | None, option("top_n", min=1)]
ModeOpt = Annotated[str | None, option("mode")]
FusionOpt = Annotated[str | None, option("fusion")]
MinRelevanceOpt = Annotated[float | None, option("min_relevance", "--min-relevance", "--threshold")]
SkipMarginOpt = Annotated[float | None, option("skip_margin")]
RelevantGradeOpt = Annotated[
    int | None, option("relevant_grade", "--relevant-grade", "--threshold", min=0)
]


def model_options(
    device: str | None,
    backend: str | None,
    quantize: str | None,
    model_batch_size: int | None = None,
    token_budget: int | None = None,
) -> dict[str, Any]:
    """The model settings most commands take, as :func:`settings` keywords."""
    return dict(device=device, backend=backend, quantize=quantize,
                model_batch_size=model_batch_size, token_budget=token_budget)  # fmt: skip


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
    """The command's settings: defaults < rankwise.toml < RANKWISE_* < its options."""
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
