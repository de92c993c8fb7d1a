"""Every recall recipe's per-query metric on cached dense and lexical lists, vectorised.

Fusion calibration scores ~120 recipes on the same cached lists. Running
:func:`rankwise.search.fuse` and :func:`~rankwise.evaluate.metrics.compute_metrics` per
recipe builds a dict per query twice (about 4 s a recipe for 1,000 queries on 2 cores, so
8 minutes for the grid). Here the lists are laid out once as ``(queries, candidates)``
arrays of ranks, scores and grades; a recipe is then a few array operations and one
``lexsort``. It reproduces ``fuse`` exactly (same float operations in the same order, the
same tie rule: first seen wins, dense list first) and hands the ranked grades to
:func:`~rankwise.evaluate.metrics.metrics_from_grades`, the evaluator's own formulas;
``tests/test_fusion.py`` checks it against the dict path on lists with ties.

Hits within one list are assumed unique by id (a store returns each product once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rankwise.evaluate.metrics import metrics_from_grades
from rankwise.recipe import RecallRecipe
from rankwise.store import Hit

Lists = dict[str, tuple[list[Hit], list[Hit]]]  # qid -> (dense, lexical), each best first


class RecipeScorer:
    """Per-query ``metric`` of any recipe over fixed lists.

    Args:
        lists: ``{qid: (dense_hits, lexical_hits)}``, each best first.
        qrels: ``{qid: {doc_id: grade}}`` for at least the queries of ``lists``.
        top_k: the first-stage depth a recipe serves.
        metric: a :func:`compute_metrics` column such as ``"ndcg@10"``.
        threshold: smallest grade that counts as relevant.

    :meth:`score` returns a ``(n_queries,)`` array, queries in sorted id order, with the
    values ``compute_metrics(..., no_relevant="zero")`` gives for the fused run.
    """

    def __init__(
        self,
        lists: Mapping[str, tuple[Sequence[Hit], Sequence[Hit]]],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        top_k: int,
        metric: str = "ndcg@10",
        threshold: int = 1,
    ) -> None:
        self.qids = sorted(lists)
        self.top_k = top_k
        self.metric = metric
        self.threshold = threshold
        name, _, k = metric.partition("@")
        self._name, self._k = name, int(k)
        n = len(self.qids)
        width = max((len(d) + len(lx) for d, lx in lists.values()), default=0) or 1
        self.length = np.zeros((n, 2), dtype=np.int64)  # list lengths (dense, lexical)
        # per candidate (a doc of the union of both lists, in first-seen order)
        self.rank = np.full((2, n, width), np.inf)  # 1-based rank in each list, inf if absent
        self.raw = np.zeros((2, n, width))  # that list's score (0 where absent)
        self.grade = np.zeros((n, width))
        self.valid = np.zeros((n, width), dtype=bool)
        # per list position: prefix min/max of the scores, for min-max at any depth
        longest = max((max(len(d), len(lx)) for d, lx in lists.values()), default=0) or 1
        self.lo = np.zeros((2, n, longest))
        self.hi = np.zeros((2, n, longest))
        ideal_rows = []
        for i, q in enumerate(self.qids):
            judged = qrels.get(q, {})
            slot: dict[str, int] = {}
            for li, hits in enumerate(lists[q]):
                self.length[i, li] = len(hits)
                if not hits:
                    continue
                vals = np.array([h.score for h in hits], dtype=np.float64)
                self.lo[li, i, : len(hits)] = np.minimum.accumulate(vals)
                self.hi[li, i, : len(hits)] = np.maximum.accumulate(vals)
                for r, (h, v) in enumerate(zip(hits, vals, strict=True), 1):
                    j = slot.setdefault(h.id, len(slot))
                    self.rank[li, i, j] = r
                    self.raw[li, i, j] = v
                    self.grade[i, j] = judged.get(h.id, 0)
                    self.valid[i, j] = True
            ideal_rows.append(sorted((g for g in judged.values() if g >= threshold), reverse=True))
        depth = self._k
        self.ideal = np.zeros((n, depth))
        self.n_rel = np.zeros(n)
        for i, rel in enumerate(ideal_rows):
            self.ideal[i, : min(depth, len(rel))] = rel[:depth]
            self.n_rel[i] = len(rel)

    def score(self, recipe: RecallRecipe) -> np.ndarray:
        """Per-query metric of ``recipe`` (queries in sorted id order)."""
        n, width = self.grade.shape
        if recipe.mode == "hybrid":
            depth = recipe.depth or self.top_k
            inside = self.rank <= depth  # (2, n, width)
            if recipe.fusion == "rrf":
                w = recipe.weights
                parts = [np.where(inside[li], w[li] / (recipe.rrf_k + self.rank[li]), 0.0)
                         for li in (0, 1)]  # fmt: skip
            else:
                parts = [self._minmax(li, depth, inside[li]) * recipe.weights[li] for li in (0, 1)]
            member = inside[0] | inside[1]
            # fuse() adds the dense contribution first, then the lexical one; same order here
            score = np.where(member, parts[0] + parts[1], -np.inf)
            # first seen wins ties: dense[:depth] in rank order, then lexical-only docs
            first_seen = np.where(inside[0], self.rank[0], depth + self.rank[1])
        else:
            li = 0 if recipe.mode == "dense" else 1
            member = np.isfinite(self.rank[li])
            score = np.where(member, -self.rank[li], -np.inf)
            first_seen = self.rank[li]
        cut = min(self.top_k, self._k)
        order = np.lexsort((first_seen, -score), axis=-1)[:, :cut]
        rows = np.arange(n)[:, None]
        grades = np.where(member[rows, order], self.grade[rows, order], 0.0)
        ranked = np.zeros((n, self._k))
        ranked[:, :cut] = grades
        values = metrics_from_grades(ranked, self.ideal, self.n_rel, (self._k,), (self._name,),
                                     threshold=self.threshold)  # fmt: skip
        return values[self.metric]

    def _minmax(self, li: int, depth: int, inside: np.ndarray) -> np.ndarray:
        """``weighted_fuse``'s min-max normalised score of list ``li`` cut at ``depth``."""
        n = self.grade.shape[0]
        last = np.minimum(self.length[:, li], depth) - 1  # index of the last kept hit
        has = last >= 0
        idx = np.maximum(last, 0)
        lo = np.where(has, self.lo[li, np.arange(n), idx], 0.0)[:, None]
        hi = np.where(has, self.hi[li, np.arange(n), idx], 0.0)[:, None]
        span = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(span > 0, (self.raw[li] - lo) / np.where(span > 0, span, 1.0), 1.0)
        return np.where(inside, norm, 0.0)
