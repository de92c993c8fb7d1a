"""Reranker training objectives, one registry entry each.

An :class:`Objective` says how training examples become trainer rows and which loss reads
them; :func:`rankwise.tune.reranker.train_reranker` runs whichever is named in
``RerankerTrainConfig.objective``. A new objective is one :func:`register` call here (rows +
loss) and its test; nothing in ``train_reranker`` changes.

* ``listwise``: groups ``[pos, neg_1..n]``, softmax cross-entropy (+ KL to the teacher).
* ``pointwise``: (query, doc, label) pairs, binary cross-entropy; graded labels.
* ``margin_mse``: groups with teacher scores, MSE of score margins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from rankwise.errors import InvalidRequest
from rankwise.tune.data import TrainExample
from rankwise.tune.training import group_rows

if TYPE_CHECKING:
    from rankwise.tune.reranker import RerankerTrainConfig

#: ``(examples, config, distill) -> (rows, dropped examples)``
Rows = Callable[[Sequence[TrainExample], "RerankerTrainConfig", bool], tuple[list[dict], int]]


@dataclass(frozen=True)
class Objective:
    """One training objective.

    Attributes:
        name: what ``--objective`` / ``RerankerTrainConfig.objective`` calls it.
        rows: builds the trainer's rows from the examples.
        loss: ``(config, model) -> loss module``.
        needs_scores: it always trains on teacher scores (distillation is implied).
        min_group_size: smallest ``group_size`` it works with.
    """

    name: str
    rows: Rows
    loss: Callable[[Any, Any], nn.Module]
    needs_scores: bool = False
    min_group_size: int = 1


OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise InvalidRequest(
            f"objective must be one of {', '.join(OBJECTIVES)}, got {name!r}"
        ) from None


class GroupCrossEntropyLoss(nn.Module):
    """Listwise softmax cross-entropy over ``[pos, neg_1..n]`` (+ optional KL distillation).

    Inputs: columns ``query, positive, negative_1..n``; labels: teacher scores (B, 1+n)
    or anything when ``distill_weight == 0``. Scores are raw logits (no sigmoid), so the
    trained model's logits stay comparable across queries through the pointwise head.
    """

    def __init__(self, model, distill_weight: float = 0.0, teacher_temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.distill_weight = distill_weight
        self.teacher_temperature = teacher_temperature

    def forward(
        self, inputs: list[list[str]], labels: Tensor, prompt: str | None = None, task=None
    ) -> Tensor:
        from sentence_transformers.util import batch_to_device

        queries, groups = inputs[0], inputs[1:]
        pairs = [(q, d) for col in groups for q, d in zip(queries, col, strict=True)]
        features = self.model.preprocess(pairs, prompt=prompt, task=task)
        features = batch_to_device(features, self.model.device)
        scores = self.model(features)["scores"].view(len(groups), len(queries)).T  # (B, G)
        target = torch.zeros(len(queries), dtype=torch.long, device=scores.device)
        loss = nn.functional.cross_entropy(scores, target)
        if self.distill_weight > 0:
            teacher = torch.softmax(labels.float() / self.teacher_temperature, dim=-1)
            kl = nn.functional.kl_div(
                torch.log_softmax(scores, dim=-1), teacher, reduction="batchmean"
            )
            loss = loss + self.distill_weight * kl
        return loss


def _pointwise_rows(
    examples: Sequence[TrainExample], distill: bool, related_label: float = 0.5
) -> list[dict[str, Any]]:
    rows = []
    for ex in examples:
        if distill:
            if not ex.has_scores:
                raise InvalidRequest(f"query {ex.query!r} has no teacher scores")
            texts = [*ex.pos, *ex.neg]
            labels = 1.0 / (1.0 + np.exp(-np.array([*ex.pos_scores, *ex.neg_scores])))
        else:
            texts = [*ex.pos, *ex.related, *ex.neg]
            labels = [1.0] * len(ex.pos) + [related_label] * len(ex.related) + [0.0] * len(ex.neg)
        rows += [
            {"query": ex.query, "document": t, "label": float(y)}
            for t, y in zip(texts, labels, strict=True)
        ]
    return rows


def _group_rows(examples, cfg, distill: bool) -> tuple[list[dict[str, Any]], int]:
    rows, dropped = group_rows(examples, cfg.group_size, with_scores=distill, seed=cfg.seed)
    if not distill:
        for r in rows:
            r["label"] = 0.0  # the trainer wants a label column; the loss ignores it
    return rows, dropped


def _bce(cfg, model) -> nn.Module:
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    return BinaryCrossEntropyLoss(model)


def _margin_mse(cfg, model) -> nn.Module:
    from sentence_transformers.cross_encoder.losses import MarginMSELoss

    return MarginMSELoss(model)


register(
    Objective(
        "listwise",
        rows=_group_rows,
        loss=lambda cfg, model: GroupCrossEntropyLoss(
            model, cfg.distill_weight, cfg.teacher_temperature
        ),
        min_group_size=2,
    )
)
register(
    Objective(
        "pointwise",
        rows=lambda examples, cfg, distill: (
            _pointwise_rows(examples, distill, cfg.related_label),
            0,
        ),
        loss=_bce,
    )
)
register(Objective("margin_mse", rows=_group_rows, loss=_margin_mse, needs_scores=True,
                   min_group_size=2))  # fmt: skip
