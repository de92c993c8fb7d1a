"""Operations: liveness, readiness, Prometheus metrics. Never behind API keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from rankwise.errors import RankwiseError
from rankwise.server.errors import ERROR_RESPONSES
from rankwise.server.routes.common import get_state
from rankwise.server.state import ServerState, public_name

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: models loaded and a probe inference succeeded",
    responses={503: ERROR_RESPONSES[503]},
)
async def ready(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Unauthenticated, so it shows model names and the index backend, never paths."""
    try:
        state.check_serving()
    except RankwiseError as e:
        raise type(e)(public_name(str(e))) from None
    return {"status": "ready", **state.describe(public=True)}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: ServerState = Depends(get_state)) -> Response:
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)
