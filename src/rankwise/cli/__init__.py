"""The ``rankwise`` command: one Typer app, one module per command group, each thin.

* :mod:`.app`: the app and :func:`main` (errors → message + exit 2, in one place)
* :mod:`.common`: consoles, shared option types, settings and model loading
* :mod:`.search` (index, search, rerank), :mod:`.serve`, :mod:`.eval`, :mod:`.tune`,
  :mod:`.store`, :mod:`.demo`: the command groups

A new command goes in the module of its group (or a new module imported here).
"""

from __future__ import annotations

from rankwise.cli import (  # noqa: F401 - registers commands
    demo,
    eval,
    search,
    serve,
    store,
    tune,
    tune_blend,
    tune_run,
)
from rankwise.cli.app import app, main

__all__ = ["app", "main"]
