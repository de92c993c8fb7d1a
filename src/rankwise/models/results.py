"""Rerank results (rank, input position, document, raw score, 0..1 relevance) and sigmoid."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import overload

import numpy as np

from rankwise.ranking import rank_order, sigmoid  # noqa: F401 - sigmoid re-exported


@dataclass(frozen=True)
class RankedResult:
    """One reranked document.

    Attributes:
        rank: 1-based position after sorting, best first.
        index: position of the document in the input list.
        document: the document text.
        score: raw logit (fp32).
        relevance: ``sigmoid(score)`` in 0..1.
    """

    rank: int
    index: int
    document: str
    score: float
    relevance: float

    def to_dict(self) -> dict:
        return asdict(self)


class RankedResults(Sequence[RankedResult]):
    """Documents sorted best first, for one query."""

    def __init__(self, query: str, results: Sequence[RankedResult]):
        self.query = query
        self.results = list(results)

    @overload
    def __getitem__(self, i: int) -> RankedResult: ...
    @overload
    def __getitem__(self, i: slice) -> list[RankedResult]: ...
    def __getitem__(self, i):
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[RankedResult]:
        return iter(self.results)

    def __repr__(self) -> str:
        return f"RankedResults(query={self.query!r}, n={len(self)})"

    @property
    def indices(self) -> list[int]:
        """Input positions, best first."""
        return [r.index for r in self.results]

    @property
    def scores(self) -> np.ndarray:
        """Raw logits, best first (float32)."""
        return np.array([r.score for r in self.results], dtype=np.float32)

    def to_list(self) -> list[dict]:
        return [r.to_dict() for r in self.results]

    @classmethod
    def from_scores(
        cls,
        query: str,
        documents: Sequence[str],
        scores: np.ndarray,
        *,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> RankedResults:
        """Sort ``documents`` by ``scores`` (ties keep input order), keep those whose relevance
        is >= ``threshold``, then the first ``top_n``."""
        relevance = sigmoid(scores)
        order = rank_order(scores, threshold=threshold, top_n=top_n)
        return cls(
            query,
            [
                RankedResult(rank, int(i), documents[i], float(scores[i]), float(relevance[i]))
                for rank, i in enumerate(order, start=1)
            ],
        )
