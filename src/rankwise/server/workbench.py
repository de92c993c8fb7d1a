"""What the relevance workbench adds to a server: the judgments file and a second reranker.

* ``judgments`` (``rankwise serve --judgments FILE``): a BEIR qrels TSV that
  ``POST /v1/judgments`` appends to (see :mod:`rankwise.evaluate.judgments`).
* ``compare_reranker`` (``--compare-reranker MODEL``): a second cross-encoder the compare
  view can run instead of the served one (e.g. the model before ``rankwise tune run``).
  It is loaded on first use, not at start-up, so a server that never compares pays
  nothing for it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rankwise.config import Settings
from rankwise.errors import UnsupportedFeature
from rankwise.evaluate.judgments import JudgmentsFile
from rankwise.server.state import enabled

if TYPE_CHECKING:
    from rankwise.models import Reranker


class Workbench:
    """One per app (``app.state.workbench``)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.judgments = JudgmentsFile(settings.judgments) if settings.judgments else None
        self.compare_name = enabled(settings.compare_reranker)
        self._compare: Reranker | None = None
        self._lock = threading.Lock()

    def require_judgments(self) -> JudgmentsFile:
        if self.judgments is None:
            raise UnsupportedFeature(
                "this server keeps no judgments: start it with --judgments FILE (a qrels TSV)"
            )
        return self.judgments

    def compare_reranker(self) -> Reranker:
        """The second cross-encoder, loaded once (thread-safe); 501 when none is configured."""
        if self.compare_name is None:
            raise UnsupportedFeature(
                "this server has no second reranker: start it with --compare-reranker MODEL"
            )
        with self._lock:
            if self._compare is None:
                from rankwise.models import Reranker

                s = self.settings.model_copy(
                    update={"reranker": self.compare_name, "reranker_revision": None}
                )
                self._compare = Reranker.from_settings(s)
        return self._compare
