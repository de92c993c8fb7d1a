"""A followed event log: the served blend's behaviour features kept current without a restart.

The blend stage (:mod:`rankwise.blend`) reads its JSONL event log at load; a shop appends
click / add-to-cart / purchase events to that file while the server runs. A
:class:`FollowedLog` checks the file at most every ``check_s`` seconds (a search that comes
sooner uses what it has) and:

- **appended bytes** (the size grew, same file): only the new complete lines are read and
  counted into the current :class:`~rankwise.signals.Behaviour` (incremental: the cost is
  the appended lines, not the log);
- **a half-written last line** (no newline yet) is held back until it is complete: it is
  counted once it parses as a valid event or once its newline arrives (then, if still
  invalid, it is a bad line); a reader never serves a prefix of a line;
- **bad complete lines** appended while serving are skipped and logged with their file,
  line and field (the server keeps serving what it has; at load they are an error, as in
  :func:`~rankwise.signals.read_events`);
- **a replaced or truncated file** (another inode, a smaller size, or the same size with a
  newer mtime) is read again from the start and swapped in whole.

``state`` (bytes consumed, events counted) keys the search cache, so a cached result never
outlives the log it was computed from.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.errors import DataError
from rankwise.signals import Behaviour, Event, error_summary, parse_event, parse_lines

log = logging.getLogger("rankwise.blend")

#: Builds a fresh Behaviour from events (the blend spec's eta and fields, records looked up).
Build = Callable[[Sequence[Event]], Behaviour]
#: Records of products the appended events name that the Behaviour does not know yet.
Lookup = Callable[[list[str]], Mapping[str, Mapping[str, Any]]]


def _split_complete(data: bytes) -> tuple[bytes, bytes]:
    """(complete lines, the trailing bytes after the last newline)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def _tail_event(tail: bytes) -> bool:
    """Whether a line without its newline is already a whole valid event (a prefix of a
    JSON object never parses as one, so a valid one is complete)."""
    try:
        parse_event(json.loads(tail.decode("utf-8")))
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        return False
    return True


def _decode(path: Path, data: bytes, first_no: int) -> tuple[list[Event], list[str], int]:
    """Events and per-line errors of complete lines ``data``; the number of lines read."""
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines, errors = [], []
    for no, line in enumerate(raw, first_no):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            errors.append(f"{path}:{no}: not UTF-8 ({e.reason} at byte {e.start})")
            lines.append("")  # keeps the numbering; blank lines are skipped
    events, bad = parse_lines(path, lines, first_no)
    return events, errors + bad, len(raw)


class FollowedLog:
    """The behaviour features of an event log that is followed while serving.

    Args:
        path: the JSONL event log.
        build: ``events -> Behaviour`` (at load and after the file was replaced).
        lookup: records for product ids first seen in appended events (``None``: none).
        check_s: seconds between checks of the file (``0``: every search; ``None``: never,
            the log is read once at load).

    Raises:
        DataError: at load, when the file is missing or a complete line is invalid.
    """

    def __init__(
        self,
        path: str | Path,
        build: Build,
        lookup: Lookup | None = None,
        *,
        check_s: float | None = 5.0,
    ):
        self.path = Path(path)
        self.build, self.lookup, self.check_s = build, lookup, check_s
        self.skipped = 0  # bad lines skipped while following
        self._lock = threading.Lock()  # features vs. an incremental add
        self._reloading = threading.Lock()  # one reader of the file at a time
        self._checked = time.monotonic()
        self._load(strict=True)

    # ------------------------------------------------------------------ reading
    def _stat(self) -> os.stat_result:
        try:
            return self.path.stat()
        except FileNotFoundError:
            raise DataError(f"event log {self.path} does not exist") from None

    def _read(
        self, st: os.stat_result, start: int, first_no: int, open_line: bool = False
    ) -> tuple[list[Event], list[str], int, int, bool]:
        """Events of the complete lines from byte ``start`` (plus a trailing line that is
        already a whole event), their errors, the new offset, the lines consumed and
        whether the last one still waits for its newline (``open_line``: the previous read
        ended so; its newline is not a line of its own)."""
        with self.path.open("rb") as fh:
            fh.seek(start)
            data = fh.read(max(0, st.st_size - start))
        skip = 1 if open_line and data.startswith(b"\n") else 0
        body, tail = _split_complete(data[skip:])
        whole = bool(tail) and _tail_event(tail)
        if whole:
            body, tail = body + tail + b"\n", b""
        events, errors, lines = _decode(self.path, body, first_no)
        still_open = whole or (open_line and not skip and not data)
        return events, errors, start + len(data) - len(tail), lines, still_open

    def _load(self, *, strict: bool) -> None:
        st = self._stat()
        events, errors, offset, lines, open_line = self._read(st, 0, 1)
        if errors:
            if strict:
                raise DataError(error_summary(self.path, errors))
            self._report(errors)
        behaviour = self.build(events)
        with self._lock:
            self.behaviour = behaviour
            self._file = (st.st_dev, st.st_ino)
            self._offset, self._lines, self._mtime = offset, lines, st.st_mtime_ns
            self._open_line = open_line

    def _report(self, errors: Sequence[str]) -> None:
        self.skipped += len(errors)
        log.error("skipped %s", error_summary(self.path, errors))

    # ------------------------------------------------------------------ following
    def refresh(self, *, force: bool = False, wait: bool = False) -> bool:
        """Pick up what the file gained since the last check (at most every ``check_s``
        seconds unless ``force``); True when the features changed. Appended lines are read
        here; a replaced file is read again in a background thread (the searches meanwhile
        use the features they have; ``wait``: here, now). Never raises: a vanished or
        unreadable file keeps the current features (logged)."""
        if self.check_s is None and not force:
            return False
        now = time.monotonic()
        if not force and now - self._checked < self.check_s:  # type: ignore[operator]
            return False
        if not self._reloading.acquire(blocking=False):
            return False  # another request is reading the file: use what we have
        release = True
        try:
            self._checked = now
            st = self._stat()
            if not self._replaced(st):
                return self._append(st)
            if wait:
                return self._reload()
            # a full read of a large log takes seconds: not on a search's time
            threading.Thread(target=self._reload_then_release, daemon=True,
                             name="rankwise-event-log").start()  # fmt: skip
            release = False
            return False
        except (OSError, DataError) as e:
            log.warning("event log %s not re-read: %s", self.path, e)
            return False
        finally:
            if release:
                self._reloading.release()

    def _replaced(self, st: os.stat_result) -> bool:
        """Another file, a shorter one, or the same size rewritten in place."""
        if (st.st_dev, st.st_ino) != self._file or st.st_size < self._offset:
            return True
        return st.st_size == self._offset and st.st_mtime_ns != self._mtime

    def _reload(self) -> bool:
        before = self.state
        self._load(strict=False)
        return self.state != before

    def _reload_then_release(self) -> None:
        try:
            self._reload()
        except Exception as e:  # noqa: BLE001 - a background reader logs, the server serves on
            log.warning("event log %s not re-read: %s", self.path, e)
        finally:
            self._reloading.release()

    def _append(self, st: os.stat_result) -> bool:
        if st.st_size == self._offset:
            return False
        events, errors, offset, lines, open_line = self._read(
            st, self._offset, self._lines + 1, self._open_line
        )
        if errors:
            self._report(errors)
        new_ids = {e.product_id for e in events if e.product_id not in self.behaviour.product}
        records = self.lookup(sorted(new_ids)) if self.lookup is not None and new_ids else None
        with self._lock:
            self.behaviour.add(events, records)
            self._offset, self._lines, self._mtime = offset, self._lines + lines, st.st_mtime_ns
            self._open_line = open_line
        return bool(events)

    # ------------------------------------------------------------------ serving
    @property
    def state(self) -> str:
        """``"<bytes consumed>-<events counted>"``: what the features were computed from."""
        return f"{self._offset}-{self.behaviour.n_events}"

    def features(
        self, query: str, ids: Sequence[str], records: Sequence[Mapping[str, Any]], user: str | None
    ) -> np.ndarray:
        """:meth:`Behaviour.features` of the log as last read."""
        with self._lock:
            return self.behaviour.features(query, ids, records, user)
