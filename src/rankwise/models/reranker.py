"""Reranker: a cross-encoder scoring (query, document) pairs with one raw logit each."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rankwise.errors import ConfigError, InvalidRequest
from rankwise.models.base import BaseModel, check_pairs, check_texts
from rankwise.models.results import RankedResults
from rankwise.models.specs import spec_for
from rankwise.models.tokens import LRU

DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"


class Ranking:
    """``rank`` and ``score_cache_info`` of every reranker (local and remote): both only need
    ``score(query, docs)`` and the ``_scores`` LRU, so they are written once here."""

    _scores: LRU  # and a ``score(query, documents) -> float32 logits`` method

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> RankedResults:
        """Documents sorted best first (ties keep input order), those with
        ``relevance >= threshold`` only, cut to ``top_n``."""
        if top_n is not None and top_n < 0:
            raise InvalidRequest(f"top_n must be >= 0, got {top_n}.")
        docs = check_texts(documents, "documents")
        return RankedResults.from_scores(
            query, docs, self.score(query, docs), top_n=top_n, threshold=threshold
        )

    def score_cache_info(self) -> dict[str, int]:
        """Hits, misses and size of the (query, document) score cache."""
        return {"hits": self._scores.hits, "misses": self._scores.misses, "size": len(self._scores)}


class Reranker(Ranking, BaseModel):
    """Score and rank documents for a query with a cross-encoder.

    Args:
        model: hub id (``BAAI/bge-reranker-v2-m3``) or local folder of a
            ``*ForSequenceClassification`` model with one label.
        revision, device, quantize, local_files_only: as for :class:`Embedder`.
        backend: as for :class:`Embedder`, but ``"auto"`` by default: on a CPU the fastest
            backend installed that converts the model (OpenVINO, ONNX Runtime, torch), and
            with ``quantize=None`` the precision too (OpenVINO: bf16 where the CPU runs bf16
            natively, else fp32); torch on GPUs. ``backend_reason`` says what and why;
            ``$RANKWISE_AUTO_BACKEND`` pins the CPU choice (the test suite pins torch).
        max_length: token cap per (query, document) pair (default: the length a
            rankwise-trained folder was trained at, ``rankwise_model.json``; else the spec: 512).
        query_max_share: the query keeps at most ``int(max_length * share)`` tokens
            (default 0.5); the document fills the rest.
        batch_size: most pairs per forward pass (default 32).
        token_budget: most padded tokens per forward pass (``None``: no cap).
        batch_overhead: fixed cost of one forward pass, in tokens, used to choose where
            batches are cut (``None``: measured defaults on CPU, plain filling on GPU;
            see ``rankwise.models.batching``).
        token_cache_size: documents whose token ids are kept between calls (LRU, default
            20,000) so catalog products reranked again are not re-tokenised; 0 disables.
        score_cache_size: (query, document) scores kept between calls (LRU, default 100,000,
            ~100 bytes each); 0 disables. Keyed by the exact query and document text in this
            model instance, so an edited product or another model never gets an old score;
            a query reranked again with a changed candidate list scores only the new ones.

    Scores are raw logits in float32 whatever the compute dtype; ``relevance`` is their sigmoid.
    Identical pairs within one call are scored once.
    """

    kind = "reranker"

    def __init__(
        self,
        model: str = DEFAULT_RERANKER,
        *,
        revision: str | None = None,
        device: str | None = None,
        backend: str = "auto",
        quantize: str | None = None,
        max_length: int | None = None,
        query_max_share: float = 0.5,
        batch_size: int = 32,
        token_budget: int | None = None,
        batch_overhead: float | None = None,
        local_files_only: bool | None = None,
        token_cache_size: int = 20_000,
        score_cache_size: int = 100_000,
    ):
        if not 0.0 < query_max_share < 1.0:
            raise ConfigError(
                f"query_max_share must be between 0 and 1 (exclusive), got {query_max_share}."
            )
        self.query_max_share = float(query_max_share)
        self._scores = LRU(score_cache_size)
        super().__init__(
            model,
            spec=spec_for(model, "reranker"),
            revision=revision,
            device=device,
            backend=backend,
            quantize=quantize,
            max_length=max_length,
            batch_size=batch_size,
            token_budget=token_budget,
            batch_overhead=batch_overhead,
            local_files_only=local_files_only,
            token_cache_size=token_cache_size,
        )

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> Reranker:
        return super().from_settings(
            settings, **{"score_cache_size": settings.score_cache_size, **overrides}
        )

    def _version_parts(self) -> tuple[Any, ...]:
        return (self.query_max_share,)

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Raw logits for ``query`` against each document: float32 (n,), input order."""
        if not isinstance(query, str):
            raise InvalidRequest(f"query must be a string, got {type(query).__name__}.")
        return self.score_pairs([(query, d) for d in check_texts(documents, "documents")])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Raw logits for (query, document) pairs: float32 (n,), input order.

        Pairs from many queries may be mixed (the server batches across requests); identical
        pairs are scored once.
        """
        clean = check_pairs(pairs)
        unique = list(dict.fromkeys(clean))
        keys = [_pair_key(p) for p in unique]
        scores = np.array(
            [s if (s := self._scores.get(k)) is not None else np.nan for k in keys], np.float32
        ).reshape(-1)
        todo = np.flatnonzero(np.isnan(scores))
        if len(todo):
            missing = [unique[i] for i in todo]
            encoded = self.tokens.encode_pairs(missing, self.max_length, self.query_max_share)
            scores[todo] = self._infer(encoded, None)
            for i in todo:
                self._scores.put(keys[i], float(scores[i]))
        where = {p: i for i, p in enumerate(unique)}
        return scores[np.array([where[p] for p in clean], dtype=np.int64)]

    @contextlib.contextmanager
    def score_cache_disabled(self) -> Iterator[None]:
        """Within the block every pair is scored by the model (nothing read from or written
        to the score cache): for timing rerank cold. The cache is restored afterwards."""
        saved, self._scores = self._scores, LRU(0)
        try:
            yield
        finally:
            self._scores = saved


def _pair_key(pair: tuple[str, str]) -> bytes:
    """16-byte digest of a (query, document) pair: bounded memory whatever the text length."""
    query = pair[0].encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(len(query).to_bytes(8, "little"), digest_size=16)
    h.update(query)
    h.update(pair[1].encode("utf-8", "surrogatepass"))
    return h.digest()
