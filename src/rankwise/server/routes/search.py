"""Search and product endpoints over the server's catalog.

``POST /v1/search`` runs :meth:`rankwise.search.Searcher.search` (recall → skip rule →
rerank through the shared batcher → threshold → Top-N; its cache answers repeats).
``PUT`` / ``DELETE /v1/products`` change the catalog and then invalidate the cache (a
generation bump, shared by every replica when the cache is Redis).
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from rankwise.cascade import parse_cascade
from rankwise.errors import PayloadTooLarge
from rankwise.server.routes.common import CACHE_HEADER, JSON, api_router, dumps, get_state
from rankwise.server.routing import check_strings
from rankwise.server.schemas import (
    ProductsChanged,
    ProductsDelete,
    ProductsUpsert,
    SearchRequest,
    SearchResponseBody,
)
from rankwise.server.state import ServerState

router = api_router()

# One writer at a time: a catalog write embeds, upserts and rewrites its metadata file.
_write_lock = threading.Lock()


@router.post(
    "/v1/search",
    summary="Search products (recall + rerank)",
    responses={200: {"model": SearchResponseBody}},
)
async def search(
    req: SearchRequest,
    state: ServerState = Depends(get_state),
    explain: bool = Query(False, description="Each result's blend feature contributions."),
) -> Response:
    """Ranked products with both scores: ``recall_score`` / ``recall_rank`` from the first
    stage, ``rerank_score`` (raw logit) and ``relevance`` (0..1) from the cross-encoder.
    ``reranked`` says whether the cross-encoder ran; ``skipped_reason`` says why not."""
    searcher = state.require_searcher()
    check_strings(req.filters, ["filters"], nul=True)  # free-form: checked here
    top_k = req.top_k or searcher.top_k
    if req.cascade:  # the cross-encoder sees the depth of the stage before rerank
        stages = parse_cascade(req.cascade).stages
        top_k = next(
            (a.depth for a, b in zip(stages, stages[1:], strict=False) if b.name == "rerank"), 0
        )
    if req.rerank and top_k > state.settings.max_documents:
        raise PayloadTooLarge(
            f"top_k={top_k} would rerank more than max_documents={state.settings.max_documents}"
        )
    chunks = searcher.chunking.max_chunks_per_doc if searcher.chunking is not None else 1
    with state.admit_search(top_k * chunks if req.rerank else 0):  # 429 at once when full
        resp = await run_in_threadpool(
            searcher.search,
            req.query,
            mode=req.mode,
            top_k=req.top_k,
            top_n=req.top_n,
            filters=req.filters,
            rerank=req.rerank,
            threshold=req.threshold,
            cascade=req.cascade,
            user=req.user_id,
            explain=explain,
        )
    if not resp.cached:
        state.metrics.observe_stages(resp.timings)
    return Response(
        dumps(resp.to_dict()),
        media_type=JSON,
        headers={CACHE_HEADER: "hit" if resp.cached else "miss"},
    )


def _changed(state: ServerState, **counts: int) -> dict[str, Any]:
    if state.cache is not None:
        state.cache.invalidate_all()
    return ProductsChanged(**counts).model_dump()


def _locked(fn, *args: Any) -> int:
    with _write_lock:
        return fn(*args)


@router.put(
    "/v1/products",
    summary="Insert or replace products by id",
    response_model=ProductsChanged,
)
async def upsert_products(
    req: ProductsUpsert, state: ServerState = Depends(get_state)
) -> dict[str, Any]:
    """Validate, embed and upsert; then invalidate cached search and rerank results."""
    searcher = state.require_searcher()
    if len(req.products) > state.settings.max_inputs:
        raise PayloadTooLarge(
            f"{len(req.products):,} products in one request; the limit is "
            f"{state.settings.max_inputs:,} (send batches, or use `rankwise index` for bulk loads)"
        )
    products = [p.model_dump() for p in req.products]
    n = await run_in_threadpool(_locked, searcher.catalog.add, products)
    return _changed(state, upserted=n)


@router.delete(
    "/v1/products",
    summary="Delete products by id",
    response_model=ProductsChanged,
)
async def delete_products(
    req: ProductsDelete, state: ServerState = Depends(get_state)
) -> dict[str, Any]:
    """Delete the given ids (unknown ids are ignored); then invalidate the cache."""
    searcher = state.require_searcher()
    n = await run_in_threadpool(_locked, searcher.catalog.delete, req.ids)
    return _changed(state, deleted=n)


@router.delete(
    "/v1/products/{product_id}",
    summary="Delete one product",
    response_model=ProductsChanged,
)
async def delete_product(
    product_id: Annotated[str, Path(pattern="^[^\\x00]*$")],
    state: ServerState = Depends(get_state),
) -> dict[str, Any]:
    searcher = state.require_searcher()
    n = await run_in_threadpool(_locked, searcher.catalog.delete, [product_id])
    return _changed(state, deleted=n)
