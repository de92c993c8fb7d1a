"""Teacher scores: a cross-encoder scores every (query, pos) and (query, neg) pair.

Raw logits are stored by default. A normalisation is optional and usually a mistake for
distillation: ``sigmoid`` squashes a confident teacher's logits towards 0 and 1 (and an
unsure one's towards 0.5), and a softmax with a high temperature turns every group into
near-uniform targets, so the student learns nothing (a trap FlagEmbedding users report).
:func:`score_examples` warns when the normalised targets of a group are nearly uniform.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm.auto import tqdm

from rankwise.errors import InvalidRequest
from rankwise.tune.data import TrainExample

if TYPE_CHECKING:
    from rankwise.models import Reranker

log = logging.getLogger(__name__)

Normalization = Literal["none", "sigmoid", "softmax"]


def normalize_scores(
    scores: np.ndarray, how: Normalization = "none", temperature: float = 1.0
) -> np.ndarray:
    """Normalise one group's float32 logits (n,): identity, sigmoid, or softmax(x / T)."""
    x = np.asarray(scores, dtype=np.float64)
    if how == "none":
        return x.astype(np.float32)
    if how == "sigmoid":
        return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)  # stable sigmoid
    if how == "softmax":
        if temperature <= 0:
            raise InvalidRequest(f"softmax temperature must be > 0, got {temperature}")
        z = x / temperature
        e = np.exp(z - z.max())
        return (e / e.sum()).astype(np.float32)
    raise InvalidRequest(f"normalization must be none, sigmoid or softmax, got {how!r}")


def score_examples(
    examples: Sequence[TrainExample],
    reranker: Reranker,
    *,
    normalization: Normalization = "none",
    temperature: float = 1.0,
    chunk_pairs: int = 2048,
    show_progress: bool = True,
) -> list[TrainExample]:
    """Return copies of ``examples`` with ``pos_scores``/``neg_scores`` from ``reranker``.

    Pairs of many queries are scored together (``reranker.score_pairs`` in chunks of
    ``chunk_pairs``), so the reranker's token-budget batching sees full batches.
    """
    pairs = [(ex.query, t) for ex in examples for t in (*ex.pos, *ex.neg)]
    scores = np.empty(len(pairs), dtype=np.float32)
    with tqdm(total=len(pairs), desc="teacher scores", disable=not show_progress) as bar:
        for start in range(0, len(pairs), chunk_pairs):
            chunk = pairs[start : start + chunk_pairs]
            scores[start : start + len(chunk)] = reranker.score_pairs(chunk)
            bar.update(len(chunk))
    out, at, flat = [], 0, 0
    for ex in examples:
        n_pos, n = len(ex.pos), len(ex.pos) + len(ex.neg)
        group = normalize_scores(scores[at : at + n], normalization, temperature)
        if normalization != "none" and n > 1 and float(group.max() - group.min()) < 0.05:
            flat += 1
        out.append(
            replace(ex, pos_scores=group[:n_pos].tolist(), neg_scores=group[n_pos:].tolist())
        )
        at += n
    if flat > 0.2 * len(examples):
        log.warning(
            "%d of %d groups have nearly uniform %s targets (spread < 0.05): distillation "
            "will teach little; keep raw logits (normalization='none') or lower the temperature",
            flat,
            len(examples),
            normalization,
        )
    return out
