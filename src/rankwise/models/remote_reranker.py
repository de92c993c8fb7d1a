"""RemoteReranker: cross-encoder scores from a rerank service (Cohere v2, Jina / Cohere v1,
text-embeddings-inference, or another ``rankwise serve``).

The API shape is chosen by the URL path and each shape's differences are data in
:data:`RERANK_APIS` (request keys, where the scores are, whether they are probabilities),
not branches. Scores come back as raw logits (probabilities are mapped back with the inverse
sigmoid), so thresholds and ``relevance`` mean what they mean for a local
:class:`~rankwise.models.Reranker`.

Requests go through httpx with a hand-written retry loop: no official client speaks all three
shapes; the timing policy is the openai client's (see :func:`rankwise.models.remote.retry_delay`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np

from rankwise.errors import ConfigError, InvalidRequest, RemoteModelError
from rankwise.models.base import check_pairs, check_texts
from rankwise.models.loading import short_hash
from rankwise.models.remote import (
    RETRY_STATUSES,
    ConcurrentCalls,
    RemoteRef,
    estimate_tokens,
    reject_local_options,
    remote_error,
    remote_settings,
    retry_delay,
    secret,
)
from rankwise.models.remote_embedder import _detail
from rankwise.models.reranker import Ranking, _pair_key
from rankwise.models.tokens import LRU


@dataclass(frozen=True)
class RerankAPI:
    """One rerank API shape.

    Attributes:
        path: URL path suffix that selects it.
        documents_key: request key of the document texts.
        sends_model: whether the request carries ``model``.
        extra: fixed request fields (ask for raw scores, no documents back, truncation).
        results_key: key of the result list (``None``: the body is the list).
        score_key: key of each result's score.
        scores_are: ``"logit"`` or ``"probability"`` (0..1, mapped back to logits).
        max_documents: documents per request by default (the server's usual limit).
    """

    path: str
    documents_key: str
    sends_model: bool
    extra: dict[str, Any] = field(default_factory=dict)
    results_key: str | None = "results"
    score_key: str = "relevance_score"
    scores_are: Literal["logit", "probability"] = "probability"
    max_documents: int = 1000


#: Longest path first: "/v2/rerank" and "/v1/rerank" before "/rerank".
RERANK_APIS: dict[str, RerankAPI] = {
    "cohere-v2": RerankAPI("/v2/rerank", "documents", True),
    "cohere-v1": RerankAPI("/v1/rerank", "documents", True, {"return_documents": False}),
    # TEI: raw logits on request; max_client_batch_size defaults to 32 there.
    "tei": RerankAPI(
        "/rerank",
        "texts",
        False,
        {"raw_scores": True, "return_text": False, "truncate": True},
        results_key=None,
        score_key="score",
        scores_are="logit",
        max_documents=32,
    ),
}


def api_for_path(url: str) -> str:
    """The RERANK_APIS key whose path ends ``url``; ConfigError when none does."""
    for name, api in RERANK_APIS.items():
        if url.endswith(api.path):
            return name
    raise ConfigError(
        f"remote reranker {url}: the path does not say which API to speak. Fix: end the URL "
        "with /v2/rerank (Cohere v2), /v1/rerank (Jina, Cohere v1) or /rerank "
        "(text-embeddings-inference), e.g. http://host:8080/v2/rerank#bge-reranker-v2-m3."
    )


class RemoteReranker(Ranking):
    """Score (query, document) pairs with a cross-encoder served over HTTP.

    Args:
        url: ``http(s)://host:port/v2/rerank#model-name`` (the path picks the API, see
            :data:`RERANK_APIS`; the name after ``#`` is sent as ``model`` where the API has one).
        api: override the path's choice (a key of :data:`RERANK_APIS`).
        api_key: bearer token (default ``RANKWISE_RERANKER_API_KEY`` via :meth:`from_settings`).
        max_documents: documents per request (default: the API's usual limit); a 413 halves it.
        concurrency, timeout, max_retries: as for :class:`RemoteEmbedder`.
        score_cache_size: (query, document) scores kept between calls (LRU, default 100,000).
        max_length: tokens per pair the server keeps (for the server's limits; default 512).

    Scores are raw logits, float32, input order; identical pairs in one call are sent once.
    One probe request on construction checks that the server answers and accepts the key.
    """

    kind: Literal["reranker"] = "reranker"
    backend = "remote"

    def __init__(
        self,
        url: str,
        *,
        api: str | None = None,
        api_key: str | None = None,
        max_documents: int | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        score_cache_size: int = 100_000,
        max_length: int = 512,
        **local_options: Any,
    ):
        target = RemoteRef.parse(url, "reranker")
        reject_local_options("reranker", target.ref, local_options)
        self.url, self.name, self.model_id = target.url, target.name, target.ref
        self.api_name = api or api_for_path(self.url)
        if self.api_name not in RERANK_APIS:
            raise ConfigError(f"unknown rerank api {api!r}; use one of {', '.join(RERANK_APIS)}")
        self.api = RERANK_APIS[self.api_name]
        self.max_documents = max_documents or self.api.max_documents
        self.max_length = max_length
        self.max_retries = max_retries
        self._api_key = secret(api_key)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._http = httpx.Client(timeout=timeout, headers=headers)
        self._calls = ConcurrentCalls(concurrency)
        self._scores = LRU(score_cache_size)
        self._post("rankwise probe", ["rankwise readiness probe"])

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> RemoteReranker:
        """From :class:`rankwise.config.Settings`: API key, timeout, concurrency, retries."""
        kwargs = remote_settings(settings, "reranker", score_cache_size=settings.score_cache_size)
        return cls(settings.reranker, **{**kwargs, **overrides})

    @property
    def version(self) -> str:
        """Model name and API shape (not the host)."""
        return short_hash("remote-reranker", self.name, self.api_name)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Estimated tokens per text (the tokenizer is on the server)."""
        return estimate_tokens(check_texts(texts))

    # -- scoring ------------------------------------------------------------------------------
    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Raw logits for ``query`` against each document: float32 (n,), input order."""
        if not isinstance(query, str):
            raise InvalidRequest(f"query must be a string, got {type(query).__name__}.")
        return self.score_pairs([(query, d) for d in check_texts(documents, "documents")])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Raw logits for (query, document) pairs, queries mixed: float32 (n,), input order."""
        clean = check_pairs(pairs)
        known = {
            p: s for p in dict.fromkeys(clean) if (s := self._scores.get(_pair_key(p))) is not None
        }
        by_query: dict[str, list[str]] = {}
        for q, d in dict.fromkeys(p for p in clean if p not in known):
            by_query.setdefault(q, []).append(d)
        step = self.max_documents
        jobs = [
            (q, ds[i : i + step]) for q, ds in by_query.items() for i in range(0, len(ds), step)
        ]
        for (q, docs), scores in zip(
            jobs, self._calls.map(lambda j: self._post_split(*j), jobs), strict=True
        ):
            for d, s in zip(docs, scores, strict=True):
                known[(q, d)] = float(s)
                self._scores.put(_pair_key((q, d)), float(s))
        return np.array([known[p] for p in clean], dtype=np.float32)

    # -- HTTP ---------------------------------------------------------------------------------
    def _post_split(self, query: str, docs: list[str]) -> np.ndarray:
        """One request; on 413 halve the documents and remember the smaller size."""
        try:
            return self._post(query, docs)
        except RemoteModelError as e:
            if e.status != 413 or len(docs) == 1:
                raise
        half = len(docs) // 2
        self.max_documents = min(self.max_documents, half)
        return np.concatenate(
            [self._post_split(query, docs[:half]), self._post_split(query, docs[half:])]
        )

    def _post(self, query: str, docs: list[str]) -> np.ndarray:
        api = self.api
        body: dict[str, Any] = {"query": query, api.documents_key: docs, **api.extra}
        if api.sends_model and self.name:
            body["model"] = self.name
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                resp = self._http.post(self.url, json=body)
            except httpx.TransportError as e:  # refused, reset, DNS, timeout
                if last:
                    raise remote_error(
                        "reranker",
                        self.url,
                        None,
                        f"{type(e).__name__}: {e}",
                        api_key_set=bool(self._api_key),
                    ) from None
                time.sleep(retry_delay(attempt))
                continue
            if resp.status_code in RETRY_STATUSES and not last:
                time.sleep(retry_delay(attempt, resp.headers))
                continue
            if resp.status_code >= 400:
                raise remote_error(
                    "reranker",
                    self.url,
                    resp.status_code,
                    _detail(_json(resp)),
                    api_key_set=bool(self._api_key),
                )
            return self._read(_json(resp), len(docs))
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, payload: Any, n: int) -> np.ndarray:
        """Logits in input order, or a RemoteModelError (never a partial or shuffled list)."""
        api = self.api
        items = (
            payload.get(api.results_key)
            if api.results_key and isinstance(payload, dict)
            else payload
        )
        scores = np.full(n, np.nan, dtype=np.float64)
        try:
            for item in items:
                scores[int(item["index"])] = float(item[api.score_key])
        except (TypeError, KeyError, ValueError, IndexError):
            scores[:] = np.nan
        if not np.isfinite(scores).all():
            raise RemoteModelError(
                f"remote reranker {self.url} did not return one finite '{api.score_key}' for "
                f"each of the {n} documents (API '{self.api_name}'). Fix: check the URL path "
                "picks the API this server speaks."
            )
        if api.scores_are == "probability":
            p = np.clip(scores, 1e-7, 1 - 1e-7)
            scores = np.log(p) - np.log1p(-p)
        return scores.astype(np.float32)

    def close(self) -> None:
        self._calls.close()
        self._http.close()

    def __repr__(self) -> str:
        return f"RemoteReranker({self.model_id!r}, api={self.api_name!r})"


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:300]
