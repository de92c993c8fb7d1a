"""The ``rankwise`` Typer app and its entry point.

Every :class:`~rankwise.errors.RankwiseError` becomes ``error: <message>`` on stderr and
exit code 2 in :func:`main`, the one place where exceptions are mapped for the CLI.
"""

from __future__ import annotations

import sys

import typer

from rankwise.cli.common import err_console
from rankwise.errors import RankwiseError

app = typer.Typer(
    name="rankwise",
    help="Two-stage product search: recall with a bi-encoder + BM25, rerank with a cross-encoder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
