"""Model endpoints: OpenAI embeddings, Cohere/Jina rerank, TEI and Weaviate rerank aliases.

Every path runs through the same pieces: limits (count, characters, tokens), the model's
cross-request batcher, and (for rerank) the hot-query cache keyed by the reranker version,
the query, the documents and every parameter that changes the body.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool

from rankwise.errors import Conflict, InvalidRequest
from rankwise.models import sigmoid
from rankwise.models.chunking import ChunkPolicy, aggregate, split_windows
from rankwise.server.errors import ERROR_RESPONSES, error_responses
from rankwise.server.routes.common import api_router, check_texts, check_tokens, dumps, get_state
from rankwise.server.routes.rerank import add_rerank_routes
from rankwise.server.routing import StrictJSONRoute
from rankwise.server.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    WeaviateRerankRequest,
    WeaviateRerankResponse,
)
from rankwise.server.state import ServerState, public_name
from rankwise.stages import chunk_policy

router = api_router()


# ----------------------------------------------------------------------------- scoring core
async def score_documents(
    state: ServerState,
    query: str,
    texts: Sequence[str],
    truncate: bool | None,
    max_tokens_per_doc: int | None = None,
    max_chunks_per_doc: int | None = None,
) -> tuple[np.ndarray, int]:
    """Raw logits (float32, input order) for ``query`` against ``texts``, and tokens billed.

    With a chunk policy (the request's ``max_tokens_per_doc`` / ``max_chunks_per_doc``, else
    the server's ``max_chunks_per_doc``; see :func:`rerank_policy`) each document is scored as its windows (``models.chunking``):
    every window is one pair in the batcher, priced and admitted by its own tokens, and
    the billed tokens are the sum over windows.

    Raises 413 (too many documents, a document too long, or over max tokens without
    truncation), 429 (queue full), 503 (models not loaded).
    """
    reranker, batcher = state.require_reranker()
    check_texts(state, texts, "documents", state.settings.max_documents)
    policy = rerank_policy(state, max_tokens_per_doc, max_chunks_per_doc)
    if policy is not None:
        return await _score_chunked(state, query, texts, policy)
    with batcher.admission():  # 429 at once, before the tokenisation below
        counts = await run_in_threadpool(reranker.count_tokens, [query, *texts])
        tokens = [counts[0] + c for c in counts[1:]]  # one pair = query + document
        do_truncate = state.settings.truncate if truncate is None else truncate
        billed = check_tokens(tokens, reranker.max_length, "documents", do_truncate)
        costs = [min(n, reranker.max_length) for n in tokens]
        scores = await batcher.run([(query, t) for t in texts], costs, reserved=True)
    return np.asarray(scores, dtype=np.float32), billed


async def _score_chunked(
    state: ServerState, query: str, texts: Sequence[str], policy: ChunkPolicy
) -> tuple[np.ndarray, int]:
    reranker, batcher = state.require_reranker()
    with batcher.admission():
        windows = await run_in_threadpool(split_windows, reranker, query, texts, policy)
        flat = [w for ws in windows for w in ws]
        counts = await run_in_threadpool(reranker.count_tokens, [query, *flat])
        costs = [min(counts[0] + c, reranker.max_length) for c in counts[1:]]
        logits = await batcher.run([(query, w) for w in flat], costs, reserved=True)
    logits = np.asarray(logits, dtype=np.float32)
    scores = np.zeros(len(windows), dtype=np.float32)
    at = 0
    for i, ws in enumerate(windows):
        scores[i] = aggregate(logits[at : at + len(ws)], policy.aggregate)[0]
        at += len(ws)
    return scores, int(sum(costs))


def rerank_policy(
    state: ServerState, max_tokens_per_doc: int | None, max_chunks_per_doc: int | None
) -> ChunkPolicy | None:
    """The request's chunk policy: its fields, else the server's settings; None (plain
    truncation, as before) when neither asks for windows or a token cut."""
    return chunk_policy(state.settings, max_chunks_per_doc, max_tokens_per_doc)


# ----------------------------------------------------------------------------- rerank APIs
# Cohere / Jina (/v1/rerank, /v2/rerank) and TEI (/rerank): one table, one route factory
add_rerank_routes(router, score_documents)


# ----------------------------------------------------------------------------- Weaviate
weaviate = APIRouter(
    prefix="/weaviate",
    tags=["weaviate"],
    route_class=StrictJSONRoute,
    responses=ERROR_RESPONSES,
)


@weaviate.post(
    "/rerank",
    summary="Rerank for Weaviate's reranker-transformers module",
    response_model=WeaviateRerankResponse,
    response_model_exclude_none=True,
)
async def weaviate_rerank(
    req: WeaviateRerankRequest, state: ServerState = Depends(get_state)
) -> dict[str, Any]:
    """The inference-container contract of Weaviate's ``reranker-transformers`` module.

    Point Weaviate at rankwise with ``RERANKER_INFERENCE_API=http://<rankwise>/weaviate``:
    it POSTs ``{query, documents}`` here and reads ``{scores: [{document, score}]}`` (input
    order, score = sigmoid(logit) like the module's own sentence-transformers container).
    The legacy ``{query, property}`` form returns ``{score}`` for the one text.
    """
    texts = req.documents if req.documents is not None else [req.property or ""]
    if not texts:
        return {"query": req.query, "scores": []}
    scores, _ = await score_documents(state, req.query, texts, None)
    rel = sigmoid(scores)
    if req.documents is None:
        return {"query": req.query, "property": req.property, "score": float(rel[0])}
    return {
        "query": req.query,
        "scores": [{"document": d, "score": float(s)} for d, s in zip(texts, rel, strict=True)],
    }


@weaviate.get("/.well-known/live", status_code=204, summary="Weaviate liveness probe")
async def weaviate_live() -> Response:
    return Response(status_code=204)


@weaviate.get("/.well-known/ready", status_code=204, summary="Weaviate readiness probe")
async def weaviate_ready(state: ServerState = Depends(get_state)) -> Response:
    state.check_serving()
    state.require_reranker()
    return Response(status_code=204)


@weaviate.get("/meta", summary="Model metadata (Weaviate module contract)")
async def weaviate_meta(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    reranker, _ = state.require_reranker()
    return {"model": {"name": public_name(reranker.model_id), "version": reranker.version}}


# ----------------------------------------------------------------------------- embeddings
@router.post(
    "/v1/embeddings",
    summary="Create embeddings (OpenAI shape)",
    responses={**error_responses("openai"), 200: {"model": EmbeddingResponse}},
)
async def embeddings(req: EmbeddingRequest, state: ServerState = Depends(get_state)) -> Response:
    """OpenAI's embeddings API. Vectors are L2-normalised float32; ``base64`` is their
    little-endian bytes. ``dimensions`` keeps the first N and re-normalises. ``input_type``
    ("query" | "document", default "document") applies the model's query instruction."""
    embedder, batcher = state.require_embedder()
    texts = [req.input] if isinstance(req.input, str) else req.input
    if req.dimensions is not None and req.dimensions > embedder.dim:
        raise InvalidRequest(
            f"dimensions={req.dimensions} but {embedder.model_id} makes {embedder.dim}-dim vectors"
        )
    check_texts(state, texts, "input", state.settings.max_inputs)
    with batcher.admission():  # 429 at once, before the tokenisation below
        counts = await run_in_threadpool(embedder.count_tokens, texts)
        do_truncate = state.settings.truncate if req.truncate is None else req.truncate
        billed = check_tokens(counts, embedder.max_length, "input", do_truncate)
        costs = [min(n, embedder.max_length) for n in counts]
        extra = ("sparse",) * req.return_sparse + ("colbert",) * req.return_colbert
        multi = None
        if extra:  # bge-m3's other outputs: one forward pass gives all three (not batched)
            have = getattr(embedder, "outputs", ("dense",))
            missing = [o for o in extra if o not in have]
            if missing:  # a valid request this deployment's model cannot answer
                raise Conflict(
                    f"{public_name(embedder.model_id)} has no {'/'.join(missing)} output "
                    f"(it gives: {', '.join(have)}); serve a bge-m3-shaped model for them"
                )
            multi = await run_in_threadpool(
                embedder.encode_multi, texts, req.input_type, ("dense", *extra)
            )
            vectors = multi.dense
        else:
            items = [(t, req.input_type) for t in texts]
            vectors = np.asarray(await batcher.run(items, costs, reserved=True), dtype=np.float32)
    body = await run_in_threadpool(
        _embedding_body,
        vectors,
        req.dimensions,
        req.encoding_format,
        req.model or embedder.model_id,
        billed,
        multi,
    )
    return Response(body, media_type="application/json")


def _embedding_body(
    vectors: np.ndarray,
    dimensions: int | None,
    encoding: str,
    model: str,
    tokens: int,
    multi: Any = None,
) -> bytes:
    """The OpenAI response bytes (run in a worker thread: thousands of float lists take a
    while to serialise and must not stall the event loop)."""
    if dimensions is not None and dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, np.float32(1e-12))
    if encoding == "base64":
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode(),
            }
            for i, v in enumerate(vectors)
        ]
    else:
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
    if multi is not None:  # rankwise extension: sparse weights by token id, ColBERT vectors
        for item, i in zip(data, range(len(data)), strict=True):
            if multi.sparse is not None:
                item["sparse"] = {str(t): w for t, w in multi.sparse[i].items()}
            if multi.colbert is not None:
                item["colbert"] = multi.colbert[i].tolist()
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return dumps(body)
