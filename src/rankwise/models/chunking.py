"""Chunked rerank: long documents scored as overlapping token windows, head kept in each.

A cross-encoder sees at most ``max_length`` tokens per (query, document) pair; plain
truncation judges a product whose decisive attribute sits late in its description by its
title alone. Here a document is a :class:`LongDocument` (``head`` + ``body`` + ``tail``):
the body is cut into windows of whole tokens that overlap by ``overlap_tokens``, and each
window is scored as ``head + window + tail`` (the title, or a template's fields, is kept in
every window). The document's score is the max over its windows (``aggregate="max"``, as
Elasticsearch's chunked rerank) or the mean of its best two (``"mean-top2"``, steadier
against one lucky window). ``max_chunks_per_doc`` caps the cost: windows are taken in
document order and the rest of the body is not scored. ``max_tokens_per_doc`` (Cohere's
field) truncates the body to that many tokens before it is windowed.

Windows are cut at the tokenizer's own character offsets, so each window is a substring
of the body and re-tokenises to (almost exactly) the same tokens; a two-token margin per
window absorbs the joins. Chunks are ordinary (query, text) pairs scored with
``reranker.score_pairs``: through the server's batcher each chunk is priced and admitted
as one pair, and identical chunks share the score cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rankwise.errors import ConfigError, InvalidRequest

Aggregate = Literal["max", "mean-top2"]
AGGREGATES: tuple[str, ...] = ("max", "mean-top2")
# tokens a join (head + window + tail) may add when the window text is tokenised again
_JOIN_MARGIN = 2


@dataclass(frozen=True)
class ChunkPolicy:
    """How long documents are split and scored.

    Attributes:
        max_chunks_per_doc: most windows scored per document (default 4; 1 = truncation).
        overlap_tokens: body tokens shared by consecutive windows (default 32; at most half
            a window).
        aggregate: ``"max"`` (default) or ``"mean-top2"`` over a document's window logits.
        max_tokens_per_doc: body tokens considered at most (``None``: all); Cohere's
            ``max_tokens_per_doc``.
    """

    max_chunks_per_doc: int = 4
    overlap_tokens: int = 32
    aggregate: Aggregate = "max"
    max_tokens_per_doc: int | None = None

    def __post_init__(self) -> None:
        if self.max_chunks_per_doc < 1:
            raise ConfigError(f"max_chunks_per_doc must be >= 1, got {self.max_chunks_per_doc}.")
        if self.overlap_tokens < 0:
            raise ConfigError(f"overlap_tokens must be >= 0, got {self.overlap_tokens}.")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(
                f"unknown chunk aggregate {self.aggregate!r}; use one of {', '.join(AGGREGATES)}."
            )
        if self.max_tokens_per_doc is not None and self.max_tokens_per_doc < 1:
            raise ConfigError(f"max_tokens_per_doc must be >= 1, got {self.max_tokens_per_doc}.")


@dataclass(frozen=True)
class LongDocument:
    """A document to window: ``head`` and ``tail`` go into every window, ``body`` is split."""

    head: str
    body: str = ""
    tail: str = ""

    @property
    def text(self) -> str:
        return f"{self.head}{self.body}{self.tail}"

    @classmethod
    def of(cls, doc: LongDocument | str) -> LongDocument:
        """A plain string is all body (no head): what ``/v1/rerank`` receives."""
        return doc if isinstance(doc, LongDocument) else cls("", doc)


@dataclass(frozen=True)
class ChunkedScores:
    """Per document: the aggregated logit (float32), its best window and how many were scored."""

    scores: np.ndarray  # float32 (n,)
    best_chunk: np.ndarray  # int64 (n,): 0-based index of the best window
    chunks: np.ndarray  # int64 (n,): windows scored


def split_windows(
    reranker: Any, query: str, docs: Sequence[LongDocument | str], policy: ChunkPolicy
) -> list[list[str]]:
    """The window texts of each document, in document order (at least one, at most
    ``policy.max_chunks_per_doc``). A document that fits the pair budget is one window: itself.

    ``reranker`` is any object with ``tokens`` (a ``TokenEncoder``), ``max_length`` and
    ``query_max_share`` (a local :class:`~rankwise.models.Reranker` or the server's view of one).
    """
    encoder = getattr(reranker, "tokens", None)
    if encoder is None or not hasattr(encoder, "spans"):
        raise InvalidRequest(
            "chunked rerank needs the reranker's tokenizer: use a local cross-encoder "
            "(remote rerankers truncate on the service's side)."
        )
    longs = [LongDocument.of(d) for d in docs]
    max_length = int(reranker.max_length)
    room = max_length - encoder.pair.num_special
    q_cap = max(1, min(int(max_length * reranker.query_max_share), room - 1))
    q_len = min(len(encoder.content_ids([query])[0]), q_cap)
    frames = [f"{d.head}{d.tail}" for d in longs]
    frame_lens = [len(ids) for ids in encoder.content_ids(frames)] if frames else []
    bodies = encoder.spans([d.body for d in longs])
    out: list[list[str]] = []
    for d, frame_len, spans in zip(longs, frame_lens, bodies, strict=True):
        body = d.body
        if policy.max_tokens_per_doc is not None and len(spans) > policy.max_tokens_per_doc:
            spans = spans[: policy.max_tokens_per_doc]
            body = body[: spans[-1][1]]
        budget = room - q_len - frame_len - _JOIN_MARGIN
        if len(spans) <= budget + _JOIN_MARGIN or budget < 2:
            # fits (or the head leaves no room to slide): one window, cut by the model as before
            out.append([f"{d.head}{body}{d.tail}"])
            continue
        # overlap at most half a window, so short budgets still move forward
        step = budget - min(policy.overlap_tokens, budget // 2)
        windows: list[str] = []
        start = 0
        while len(windows) < policy.max_chunks_per_doc:
            stop = min(start + budget, len(spans))
            text = d.body[spans[start][0] : spans[stop - 1][1]]
            windows.append(f"{d.head}{text}{d.tail}")
            if stop >= len(spans):
                break
            start += step
        out.append(windows)
    return out


def aggregate(logits: np.ndarray, how: Aggregate = "max") -> tuple[float, int]:
    """One document's score from its window logits, and the index of its best window."""
    logits = np.asarray(logits, dtype=np.float32)
    best = int(np.argmax(logits))
    if how == "max" or len(logits) == 1:
        return float(logits[best]), best
    top2 = np.sort(logits)[-2:]
    return float(top2.mean()), best


def score_chunked(
    reranker: Any, query: str, docs: Sequence[LongDocument | str], policy: ChunkPolicy
) -> ChunkedScores:
    """Score ``docs`` against ``query`` window by window (one ``score_pairs`` call for all
    windows of all documents) and aggregate per document; input order kept."""
    if not isinstance(query, str):
        raise InvalidRequest(f"query must be a string, got {type(query).__name__}.")
    windows = split_windows(reranker, query, docs, policy)
    flat = [(query, w) for ws in windows for w in ws]
    logits = (
        np.asarray(reranker.score_pairs(flat), dtype=np.float32) if flat else np.zeros(0)
    ).reshape(-1)
    scores = np.zeros(len(windows), dtype=np.float32)
    best = np.zeros(len(windows), dtype=np.int64)
    counts = np.array([len(ws) for ws in windows], dtype=np.int64)
    at = 0
    for i, n in enumerate(counts):
        scores[i], best[i] = aggregate(logits[at : at + n], policy.aggregate)
        at += n
    return ChunkedScores(scores, best, counts)
