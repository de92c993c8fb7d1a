"""The relevance workbench: the page at ``/``, its info endpoint and judgments.

``GET /`` serves a single static page (``server/static/``: HTML, vanilla JavaScript and
CSS, package data). It is framework-free on purpose: no build step and no CDN, so it
works offline, installs with the wheel and cannot drift from a separately built bundle.
The page holds no data itself, so it is served without a key; every call it makes
(``/v1/search``, ``/v1/workbench``, ``/v1/judgments``, ``/v1/compare``) follows the
server's API keys, sent as ``Authorization: Bearer`` from a key entered once in the page.

``POST /v1/judgments`` ``{query, id, grade}`` appends to the ``--judgments`` file
(:class:`rankwise.evaluate.judgments.JudgmentsFile`); ``GET /v1/judgments?query=...``
returns that query's grades, without ``query`` every judged query.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from rankwise.errors import InvalidRequest, NotFound
from rankwise.evaluate.judgments import MAX_GRADE, MIN_GRADE, query_id, split_of
from rankwise.search import MODES
from rankwise.server.routes.common import api_router, get_state
from rankwise.server.state import ServerState
from rankwise.server.workbench import Workbench

STATIC = files("rankwise.server") / "static"

router = api_router(tags=["workbench"])
page = APIRouter(tags=["workbench"])


def get_workbench(request: Request) -> Workbench:
    return request.app.state.workbench


#: JSON-schema constraint of a text with a non-space character (checked by the handlers).
NON_BLANK = {"minLength": 1, "pattern": "\\S"}


class Body(BaseModel):
    """Request bodies of the workbench routes: unknown fields ignored, NaN refused."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class JudgmentRequest(Body):
    # Plain str/int here: the handler's checks give the messages the page shows
    # ("the query is empty", "grade must be between 0 and 3") instead of a regex error;
    # the schema states the same constraints, so generated clients and the server agree.
    query: str = Field(
        description="The query as typed (whitespace is collapsed).", json_schema_extra=NON_BLANK
    )
    id: str = Field(description="Product id from the index.", json_schema_extra={"minLength": 1})
    grade: int = Field(
        description=f"Relevance grade {MIN_GRADE}-{MAX_GRADE} (0 = not relevant).",
        json_schema_extra={"minimum": MIN_GRADE, "maximum": MAX_GRADE},
    )


@page.get("/", include_in_schema=False)
async def index_page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/v1/workbench", summary="What the workbench page needs: fields, defaults, options")
async def workbench_info(
    state: ServerState = Depends(get_state), wb: Workbench = Depends(get_workbench)
) -> dict[str, Any]:
    """Metadata fields of the index (for filters), search defaults, models, judgments file."""
    searcher = state.require_searcher()
    s = state.settings
    schema = getattr(searcher.store, "schema", None) or {}
    return {
        "fields": dict(schema),
        "modes": list(MODES),
        "defaults": {
            "mode": searcher.mode,
            "top_k": searcher.top_k,
            "top_n": searcher.top_n,
            "fusion": searcher.manual.fusion,
            "rrf_k": searcher.manual.rrf_k,
            "weights": list(searcher.manual.weights),
            "recipe": searcher.pipeline.default.label() if searcher.mode is None else None,
        },
        "grades": [MIN_GRADE, MAX_GRADE],
        "index": searcher.store.uri,
        "count": searcher.store.count(),
        "embedder": None if state.embedder is None else state.embedder.model_id,
        "reranker": None if state.reranker is None else state.reranker.model_id,
        "compare_reranker": wb.compare_name,
        "judgments": None if wb.judgments is None else str(wb.judgments.path),
        "max_documents": s.max_documents,
    }


@router.post("/v1/judgments", summary="Record a relevance judgment")
async def add_judgment(
    req: JudgmentRequest,
    state: ServerState = Depends(get_state),
    wb: Workbench = Depends(get_workbench),
) -> dict[str, Any]:
    """Append ``query-id, id, grade`` to the judgments file (422 for an empty query, a
    grade outside 0-3 or an id that is not in the index; 501 without ``--judgments``)."""
    jf = wb.require_judgments()
    searcher = state.require_searcher()
    if not req.query.strip():
        raise InvalidRequest("the query is empty: type a query before judging")
    if not MIN_GRADE <= req.grade <= MAX_GRADE:
        raise InvalidRequest(f"grade must be between {MIN_GRADE} and {MAX_GRADE}, got {req.grade}")
    found = await run_in_threadpool(searcher.store.get, [req.id])
    if not found:
        raise NotFound(f"unknown product id {req.id!r}: it is not in the index")
    qid, doc, grade = await run_in_threadpool(jf.append, req.query, req.id, req.grade)
    judged = await run_in_threadpool(jf.for_query, req.query)
    return {"query_id": qid, "id": doc, "grade": grade, "judgments": judged}


@router.get("/v1/judgments", summary="Judgments so far (one query, or every judged query)")
async def list_judgments(
    query: str | None = Query(
        None, description="Only this query's grades.", json_schema_extra=NON_BLANK
    ),
    wb: Workbench = Depends(get_workbench),
) -> dict[str, Any]:
    jf = wb.require_judgments()
    if query is not None:
        if not query.strip():
            raise InvalidRequest("the query is empty")
        grades = await run_in_threadpool(jf.for_query, query)
        return {"query_id": query_id(query), "judgments": grades}
    j = await run_in_threadpool(jf.read)
    return {
        "queries": [
            {
                "query_id": q,
                "query": j.queries[q],
                "split": split_of(q),
                "judged": len(g),
                "relevant": sum(1 for v in g.values() if v >= 1),
            }
            for q, g in sorted(j.qrels.items(), key=lambda kv: j.queries[kv[0]])
        ]
    }


def install(app: FastAPI) -> None:
    """Add the workbench (page, static assets, routes, compare view) to ``app``."""
    from rankwise.server.routes import compare

    app.state.workbench = Workbench(app.state.rankwise.settings)
    app.include_router(page)
    app.include_router(router)
    app.include_router(compare.router)
    app.mount("/workbench", StaticFiles(directory=str(STATIC)), name="workbench")
