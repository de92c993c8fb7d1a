"""The rerank APIs rankwise speaks, as data: one row per API shape, one route factory.

Each :class:`RerankShape` names where a shape keeps the documents in its request, what its
results call the score and the returned document, whether it takes ``top_n``, how it wraps
the results (an object with usage and metadata, or a bare array) and which error body it
uses. :func:`add_rerank_routes` turns every row into its POST routes; all of them score
through the same limits, batcher, cache and ranking step (:func:`rankwise.ranking.rank_order`).

A new rerank API is one more row in :data:`SHAPES` (and its request model in
``server/schemas.py``), plus its test. Weaviate's ``/weaviate/rerank`` is not a row: it
returns scores in input order (no ranking, no top_n) under its own router; see ``models.py``.

(No ``from __future__ import annotations`` here: the factory's handlers annotate ``req`` with
each row's request model, which FastAPI must see as a class, not a string.)
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from rankwise.ranking import rank_order, sigmoid
from rankwise.server.errors import error_responses
from rankwise.server.routes.common import cached_json, get_state
from rankwise.server.schemas import RerankRequest, RerankResponse, TEIRank, TEIRerankRequest
from rankwise.server.state import ServerState


def _cohere_body(results: list[dict[str, Any]], billed: int, path: str) -> dict[str, Any]:
    version = "2" if path.startswith("/v2/") else "1"
    return {
        "results": results,
        "usage": {"prompt_tokens": billed, "total_tokens": billed},
        # Cohere's response metadata (its clients read billed units from here)
        "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
    }


def _bare_list(results: list[dict[str, Any]], billed: int, path: str) -> list[dict[str, Any]]:
    return results


@dataclass(frozen=True)
class RerankShape:
    """One rerank API: its request and response keys and its wrapping.

    Attributes:
        name: cache namespace and label.
        paths: ``(path, OpenAPI summary)`` of each route with this shape.
        request: the pydantic request model (validates and documents the body).
        response: the response model shown in the OpenAPI schema.
        documents: request key of the documents (strings, or objects with ``text``).
        score: result key of each score (sigmoid(logit), or the logit with ``raw_scores``).
        document: result key of the returned document; ``wrap_text`` puts a string
            document into ``{"text": ...}`` (Cohere) instead of returning it as is (TEI).
        return_flag: request key asking for the documents back.
        top_n: request key of the result count, or None (all documents come back).
        body: ``(results, billed tokens, path) -> body``.
        errors: error-body style of :func:`rankwise.server.errors.error_responses`.
        envelope: whether ``id`` and ``model`` are added per response (never cached).
    """

    name: str
    paths: tuple[tuple[str, str], ...]
    request: type[BaseModel]
    response: Any
    documents: str
    score: str
    document: str
    wrap_text: bool
    return_flag: str
    top_n: str | None
    body: Callable[[list[dict[str, Any]], int, str], Any]
    errors: str | None
    envelope: bool


SHAPES: tuple[RerankShape, ...] = (
    RerankShape(
        name="rerank",
        paths=(
            ("/v1/rerank", "Rerank documents (Cohere / Jina shape)"),
            ("/v2/rerank", "Rerank documents (Cohere v2 client path)"),
        ),
        request=RerankRequest, response=RerankResponse, documents="documents",
        score="relevance_score", document="document", wrap_text=True,
        return_flag="return_documents", top_n="top_n", body=_cohere_body, errors="cohere",
        envelope=True,
    ),
    RerankShape(
        name="rerank-tei",
        paths=(("/rerank", "Rerank (text-embeddings-inference shape)"),),
        request=TEIRerankRequest, response=list[TEIRank], documents="texts", score="score",
        document="text", wrap_text=False, return_flag="return_text", top_n=None,
        body=_bare_list, errors=None, envelope=False,
    ),
)  # fmt: skip


def _document_text(doc: str | dict[str, Any], rank_fields: list[str] | None) -> str:
    """A string document, or the rank_fields present in an object as 'name: value' lines
    (its ``text`` when none of them is present, or without rank_fields)."""
    if isinstance(doc, str):
        return doc
    present = [f for f in rank_fields or () if f in doc]
    if present:
        return "\n".join(f"{f}: {doc[f]}" for f in present)
    return doc["text"]


def _handler(shape: RerankShape, score_documents: Callable) -> Callable:
    async def rerank(
        req: shape.request,  # type: ignore[name-defined]
        request: Request,
        state: ServerState = Depends(get_state),
    ) -> Response:
        reranker, _ = state.require_reranker()
        documents = [
            d if isinstance(d, str) else d.model_dump() for d in getattr(req, shape.documents)
        ]
        rank_fields = getattr(req, "rank_fields", None)
        texts = [_document_text(d, rank_fields) for d in documents]
        top_n = getattr(req, shape.top_n) if shape.top_n else None
        give_back = getattr(req, shape.return_flag)
        path = request.url.path

        # chunked rerank (models/chunking.py): Cohere's max_tokens_per_doc and rankwise's
        # max_chunks_per_doc, on shapes whose request model has them
        chunks = (
            getattr(req, "max_tokens_per_doc", None),
            getattr(req, "max_chunks_per_doc", None),
        )

        async def build() -> Any:
            scores, billed = await score_documents(state, req.query, texts, req.truncate, *chunks)
            shown = scores if req.raw_scores else sigmoid(scores)
            results = []
            for i in rank_order(scores, top_n=top_n):
                item: dict[str, Any] = {"index": int(i), shape.score: float(shown[i])}
                if give_back:
                    d = documents[i]
                    item[shape.document] = (
                        {"text": d} if shape.wrap_text and isinstance(d, str) else d
                    )
                results.append(item)
            return shape.body(results, billed, path)

        params = {"top_n": top_n, "raw": req.raw_scores, "docs": give_back,
                  "fields": rank_fields, "truncate": req.truncate, "path": path,
                  "chunks": chunks}  # fmt: skip
        # id and model are per response (never cached): a fresh id each time, the model name
        # as this client sent it (Cohere and Jina echo it) or the served model's id
        envelope = (
            {"id": uuid.uuid4().hex, "model": getattr(req, "model", None) or reranker.model_id}
            if shape.envelope
            else None
        )
        return await cached_json(
            state, shape.name, reranker.version, req.query, documents, params, build, envelope
        )

    rerank.__doc__ = (
        f"Rerank with the {shape.name} shape: documents in ``{shape.documents}``, best first, "
        f"each with ``index`` (its position in the request) and ``{shape.score}`` "
        "(sigmoid(logit) in 0..1; the raw logit with ``raw_scores``)."
    )
    return rerank


def add_rerank_routes(
    router: APIRouter, score_documents: Callable, shapes: Sequence[RerankShape] = SHAPES
) -> None:
    """Register a POST route for every path of every row of ``shapes`` on ``router``;
    ``score_documents(state, query, texts, truncate, max_tokens_per_doc, max_chunks_per_doc)
    -> (logits, billed tokens)``."""
    for shape in shapes:
        handler = _handler(shape, score_documents)
        responses = {200: {"model": shape.response}}
        if shape.errors:
            responses = {**error_responses(shape.errors), **responses}
        for path, summary in shape.paths:
            router.post(path, summary=summary, responses=responses)(handler)
