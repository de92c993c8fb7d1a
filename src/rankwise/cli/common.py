"""What every command shares: consoles, option types, settings and model loading.

Every option default is ``None`` so that :func:`rankwise.config.load_settings` fills it
from the one declaration of each setting (defaults < rankwise.toml < RANKWISE_* < option).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console


def make_console(stderr: bool = False) -> Console:
    """A terminal gets rich's wrapping; a pipe or file gets long lines unwrapped (rich
    would otherwise hard-wrap at 80 columns). Colours are only ever sent to terminals."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=not stream.isatty())


console = make_console()
err_console = make_console(stderr=True)


#: Flags of settings whose option is not just ``--<name>`` (aliases users already type).
FLAGS: dict[str, tuple[str, ...]] = {
    "index": ("--index", "-i"),
    "min_relevance": ("--min-relevance", "--threshold"),
    "relevant_grade": ("--relevant-grade", "--threshold"),
    "record_batch_size": ("--record-batch-size", "--batch-size"),
    "batching": ("--batching/--no-batching",),
    "max_chunks_per_doc": ("--max-chunks-per-doc", "--max-chunks"),
    "rerank_template": ("--rerank-template", "--template"),
}
#: Groups of settings several commands take.
MODEL = ("device", "backend", "quantize", "model_batch_size", "token_budget")
SEARCH = ("top_k", "top_n", "mode", "fusion", "min_relevance", "skip_margin")
CHUNKING = ("max_chunks_per_doc", "chunk_aggregate", "max_tokens_per_doc")
STAGES = (*CHUNKING, "rerank_template", "blend")


def _cli_type(annotation: Any) -> Any:
    """The option type of a setting's annotation (choices are checked by the settings)."""
    args = set(typing.get_args(annotation)) or {annotation}
    for t in (bool, int, float):
        if t in args:
            return t | None
    return str | None


def option(name: str, *flags: str, **typer_kw: Any) -> Any:
    """The CLI option of setting ``name``, built from its one declaration in
    :class:`rankwise.config.Settings`: the help is the setting's (plus its default and
    ``RANKWISE_*`` variable), the default is None so that :func:`settings` fills in the
    TOML, environment or declared default. ``flags`` default to :data:`FLAGS` or
    ``--<name>``; extra flags are aliases users already type."""
    from rankwise.config import Settings

    f = Settings.model_fields[name]
    shown = "none" if f.default in (None, "") else f.default
    doc = f"{f.description} (default {shown}; env RANKWISE_{name.upper()})"
    flags = flags or FLAGS.get(name) or (f"--{name.replace('_', '-')}",)
    return typer.Option(*flags, help=doc, show_default=False, **typer_kw)


def with_settings(*names: str | tuple[str, ...]) -> Callable[[Callable], Callable]:
    """Give a command one option per named setting and call it with ``s``, its settings
    (defaults < rankwise.toml < RANKWISE_* < these options). ``("embedder_revision",
    "--revision")`` names a setting with flags of its own. The options are built from the
    settings' declarations (:func:`option`), so a command lists names, not option blocks.
    """

    def decorate(fn: Callable) -> Callable:
        from rankwise.config import Settings

        # the command's own annotations, evaluated (its module may import Settings for
        # type checking only)
        hints_of = typing.get_type_hints(fn, localns={"Settings": Settings}, include_extras=True)
        own = inspect.signature(fn)
        own = own.replace(
            parameters=[p.replace(annotation=hints_of.get(p.name, p.annotation))
                        for p in own.parameters.values()],
            return_annotation=hints_of.get("return", own.return_annotation),
        )  # fmt: skip
        added, hints = [], {}
        for item in names:
            name, flags = (item[0], item[1:]) if isinstance(item, tuple) else (item, ())
            kind = Annotated[
                _cli_type(Settings.model_fields[name].annotation), option(name, *flags)
            ]
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=kind))  # fmt: skip
            hints[name] = kind
        taken = [n[0] if isinstance(n, tuple) else n for n in names]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            chosen = {n: kwargs.pop(n) for n in taken}
            return fn(s=settings(**chosen), **kwargs)

        params = [p for p in own.parameters.values() if p.name != "s"]
        command.__signature__ = own.replace(parameters=params + added)  # type: ignore[attr-defined]
        command.__annotations__ = {
            **{p.name: p.annotation for p in params}, **hints, "return": own.return_annotation,
        }  # fmt: skip
        return command

    return decorate


#: ``--json``: machine-readable output instead of a table or report (every command's).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table/report.")]
#: ``--cascade``: recall / rerank stages as data (search runs it; eval scores each prefix).
CascadeOpt = Annotated[
    str | None,
    typer.Option(help="Stages, e.g. hybrid:200,colbert:50,rerank:10 (replaces top-k/top-n; "
                 "eval scores each prefix as a system)."),
]  # fmt: skip
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


_C = TypeVar("_C")
#: option names that differ from the config field they set
_OPTION_FIELDS = {"lr": "learning_rate"}


def config_from_options(cls: type[_C], options: Mapping[str, Any], prefix: str = "") -> _C:
    """The config dataclass ``cls`` from a command's options (its ``locals()``): each option
    named like a field sets it (``--lr`` sets ``learning_rate``); with ``prefix`` (e.g.
    ``"reranker_"``) the prefixed option wins over the plain one. Fields no option names
    keep the dataclass default, so a command lists each setting once, in its signature."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in options.items():
        name = _OPTION_FIELDS.get(key, key)
        if name in names and name not in values:
            values[name] = value
    for key, value in options.items():
        if prefix and key.startswith(prefix):
            name = _OPTION_FIELDS.get(key[len(prefix) :], key[len(prefix) :])
            if name in names:
                values[name] = value
    return cls(**values)
