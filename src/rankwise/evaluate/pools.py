"""Candidate pools: which documents a system may return during evaluation.

* **global** pool: the whole corpus. Answers "how good is end-to-end search?".
* **test** pool (seed practice): the union of the documents judged for any evaluated
  query. Every candidate has a judgment for *some* query, so the pool is small and dense
  in hard negatives; it answers "how well does the system order plausible candidates?"
  and is cheap enough to rerun for every model version.
* **judged** candidates (per query): each query's own judged documents only. Reranking
  them is the classic reranking benchmark (``rerank-only``); recall is perfect by
  construction, so only the order is measured.
"""

from __future__ import annotations

from collections.abc import Mapping

from rankwise.errors import InvalidRequest
from rankwise.evaluate.metrics import Qrels

POOLS = ("test", "global")


def union_of_judged(qrels: Qrels) -> set[str]:
    """Union of the judged document ids of every query in ``qrels`` (any grade)."""
    return {d for docs in qrels.values() for d in docs}


def judged_candidates(qrels: Qrels) -> dict[str, list[str]]:
    """``{query_id: [judged doc ids]}`` (any grade), doc ids sorted for determinism."""
    return {q: sorted(docs) for q, docs in qrels.items()}


def pool_corpus(corpus: Mapping[str, dict], pool: str, qrels: Qrels) -> dict[str, dict]:
    """The corpus restricted to ``pool`` (``"test"`` or ``"global"``)."""
    if pool == "global":
        return dict(corpus)
    if pool == "test":
        ids = union_of_judged(qrels)
        return {d: corpus[d] for d in corpus if d in ids}
    raise InvalidRequest(f"unknown pool {pool!r}; choose from {', '.join(POOLS)}")
