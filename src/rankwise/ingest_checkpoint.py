"""The resume point of :meth:`rankwise.catalog.Catalog.ingest`: how many validated records of
one source file are committed to one store, written atomically after each batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


class IngestCheckpoint:
    """How many validated records of one source file are committed to one store."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path = path
        self.identity = identity

    @classmethod
    def for_source(
        cls, source: Any, store_uri: str, explicit: str | Path | None, extra: dict[str, Any]
    ) -> IngestCheckpoint | None:
        """``extra`` (field mapping, embedder version, ...) is part of the identity: a rerun
        with other settings starts over instead of skipping records written differently."""
        if not isinstance(source, str | Path):
            return None  # an in-memory iterable cannot be resumed
        src = Path(source).resolve()
        st = src.stat()
        identity = {
            "source": str(src),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "store": store_uri,
            **extra,
        }
        if explicit is not None:
            return cls(Path(explicit), identity)
        key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        store_dir = Path(store_uri)
        base = (
            store_dir
            if store_dir.is_dir()
            else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rankwise"
        )
        return cls(base / f"ingest-{key}.json", identity)

    def load(self) -> int:
        if not self.path.exists():
            return 0
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return 0
        return int(data.get("done", 0)) if data.get("identity") == self.identity else 0

    def save(self, done: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "done": done}))
        os.replace(tmp, self.path)  # atomic: a kill leaves the old or the new checkpoint

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
