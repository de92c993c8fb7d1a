"""The skip rule: when the first stage is sure, the cross-encoder is not run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rankwise.store import Hit


@dataclass(frozen=True)
class SkipRule:
    """When the first stage is sure, skip the cross-encoder.

    * ``exact_title``: the top recall hit's title equals the query (case- and
      space-insensitive): a shopper typed the product's name.
    * ``min_margin``: in ``dense`` mode, the top-1 cosine exceeds the top-2 by at least
      this much. Calibrate it on judged queries (``rankwise eval``) rather than guessing:
      the default ``None`` never skips on margin.
    """

    exact_title: bool = True
    min_margin: float | None = None

    def reason(self, query: str, hits: Sequence[Hit], mode: str) -> str | None:
        if not hits:
            return "no candidates"
        if self.exact_title:
            norm = " ".join(query.lower().split())
            if norm and " ".join(str(hits[0].record.get("title", "")).lower().split()) == norm:
                return "exact title match"
        if self.min_margin is not None and mode == "dense" and len(hits) > 1:
            margin = hits[0].score - hits[1].score
            if margin >= self.min_margin:
                return f"top-1 margin {margin:.3f} >= {self.min_margin}"
        return None
