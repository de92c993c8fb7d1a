"""Reading line-based text files (JSONL, TSV qrels, TREC runs) with errors that name the
file and line: the one place that opens them, numbers their lines and parses JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rankwise.errors import DataError


def open_text(path: Path, newline: str | None = None) -> IO[str]:
    """``path`` opened for reading as UTF-8 text."""
    # utf-8-sig: a byte-order mark (Excel's CSV export) must not become part of the first header
    return path.open(encoding="utf-8-sig", newline=newline)


def text_lines(path: Path, error: type[DataError] = DataError) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for each non-blank line of ``path`` (numbers count the blank
    ones too). A file that is not UTF-8 raises ``error`` naming the line."""
    n = 0
    with open_text(path) as fh:
        try:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    yield n, line
        except UnicodeDecodeError:
            raise error(f"{path}:{n + 1}: not UTF-8 text; re-encode the file as UTF-8") from None


def jsonl_rows(path: Path, error: type[DataError] = DataError) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSONL file; a line that
    is not JSON raises ``error`` naming the file, line and column."""
    for n, line in text_lines(path, error):
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno})") from None
