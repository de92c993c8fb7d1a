"""Choose a rerank score threshold from judged pairs, per model version.

The reranker's relevance (``sigmoid(logit)``, 0..1) of each judged (query, document) pair
is compared with the label ``grade >= grade_threshold``. A document is kept when its
relevance is ``>= threshold``. The precision/recall curve comes from
:func:`sklearn.metrics.precision_recall_curve`.

* ``objective="f1"``: the threshold with the best F1.
* ``objective="precision"``: the lowest threshold whose precision is ``>= min_precision``
  (so recall is as high as that precision allows); ``met`` is False when no threshold
  reaches it, and the most precise one is returned instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from rankwise.errors import DataError, InvalidRequest
from rankwise.evaluate.metrics import Qrels, Run


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it achieves on the calibration pairs."""

    threshold: float
    precision: float
    recall: float
    f1: float
    objective: str
    met: bool
    n_pairs: int
    n_positive: int
    min_precision: float | None = None
    model: str = ""
    split: str = ""  # the qrels split the threshold was chosen on
    heldout: dict[str, float] | None = None  # the threshold applied to another split

    def to_dict(self) -> dict:
        return asdict(self)


def _pairs(pair_scores: Run, qrels: Qrels, grade_threshold: int, unjudged_as_negative: bool):
    scores, labels = [], []
    for qid, docs in pair_scores.items():
        judged = qrels.get(qid, {})
        for d, s in docs.items():
            if d in judged or unjudged_as_negative:
                scores.append(float(s))
                labels.append(judged.get(d, 0) >= grade_threshold)
    return np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)


def apply_threshold(
    pair_scores: Run, qrels: Qrels, threshold: float, *, grade_threshold: int = 1
) -> dict[str, float]:
    """Precision, recall and F1 of keeping judged pairs with score ``>= threshold``.

    Use it to check a threshold chosen on one split (train) on another (test).
    """
    scores, y = _pairs(pair_scores, qrels, grade_threshold, False)
    kept = scores >= threshold
    tp = float((kept & y).sum())
    precision = tp / kept.sum() if kept.any() else 0.0
    recall = tp / y.sum() if y.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_pairs": int(y.size)}


def calibrate_threshold(
    pair_scores: Run,
    qrels: Qrels,
    *,
    grade_threshold: int = 1,
    objective: str = "f1",
    min_precision: float | None = None,
    unjudged_as_negative: bool = False,
    model: str = "",
    split: str = "",
) -> ThresholdChoice:
    """Pick the relevance threshold for ``pair_scores`` (``{qid: {doc_id: relevance}}``).

    Any score works (e.g. an embedder's cosine, for a first-stage cut-off); ``model``
    names the scorer in reports.

    Only judged pairs are used unless ``unjudged_as_negative`` (then scored pairs without
    a judgment count as not relevant, as in a live top-K where most products are).
    Raises :class:`DataError` when the pairs hold no positive or no negative.
    """
    if objective not in ("f1", "precision"):
        raise InvalidRequest(f"objective must be 'f1' or 'precision', got {objective!r}")
    if objective == "precision" and not (min_precision is not None and 0 < min_precision <= 1):
        raise InvalidRequest("objective='precision' needs min_precision in (0, 1]")
    scores, y = _pairs(pair_scores, qrels, grade_threshold, unjudged_as_negative)
    if y.size == 0 or y.all() or not y.any():
        raise DataError(
            f"threshold calibration needs relevant and non-relevant judged pairs; got "
            f"{int(y.sum())} relevant of {y.size}"
        )
    precision, recall, thresholds = precision_recall_curve(y, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    met = True
    if objective == "f1":
        i = int(np.argmax(f1))
    else:
        ok = np.flatnonzero(precision >= min_precision)
        met = ok.size > 0
        i = int(ok[0]) if met else int(np.argmax(precision))  # thresholds ascend
    return ThresholdChoice(
        threshold=float(thresholds[i]),
        precision=float(precision[i]),
        recall=float(recall[i]),
        f1=float(f1[i]),
        objective=objective,
        met=met,
        n_pairs=int(y.size),
        n_positive=int(y.sum()),
        min_precision=min_precision,
        model=model,
        split=split,
    )


@dataclass(frozen=True)
class CalibrationPlan:
    """Where score thresholds are chosen (``cal_split`` if set, else ``split``) and checked."""

    split: str
    qrels: Mapping[str, Mapping[str, int]]
    grade_threshold: int
    min_precision: float | None
    cal_split: str | None = None
    cal_qrels: Mapping[str, Mapping[str, int]] | None = None
    cal_queries: Mapping[str, str] | None = None

    def choose(
        self, model: str, scores: Run, cal_scores: Run | None = None
    ) -> list[ThresholdChoice]:
        """Best-F1 threshold (and the precision-floor one) on judged pairs; with a
        calibration split, chosen there and applied to ``scores`` of the evaluated split."""
        on_split, qrels = (
            (self.cal_split, self.cal_qrels) if self.cal_split else (self.split, self.qrels)
        )
        source = cal_scores if self.cal_split else scores
        objectives: list[dict[str, Any]] = [{}]
        if self.min_precision is not None:
            objectives.append({"objective": "precision", "min_precision": self.min_precision})
        try:
            chosen = [
                calibrate_threshold(
                    source,
                    qrels,
                    grade_threshold=self.grade_threshold,
                    model=model,
                    split=on_split,
                    **kw,
                )  # fmt: skip
                for kw in objectives
            ]
        except DataError:  # no judged negatives (or positives): nothing to calibrate against
            return []
        if not self.cal_split:
            return chosen
        return [
            replace(
                c,
                heldout={
                    "split": self.split,
                    **apply_threshold(
                        scores, self.qrels, c.threshold, grade_threshold=self.grade_threshold
                    ),
                },
            )
            for c in chosen
        ]
