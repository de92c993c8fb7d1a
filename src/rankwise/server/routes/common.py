"""Helpers shared by the route modules: state access, limits, caching of JSON bodies."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from rankwise.cache import cache_key
from rankwise.errors import PayloadTooLarge
from rankwise.server.auth import require_api_key
from rankwise.server.errors import ERROR_RESPONSES
from rankwise.server.routing import StrictJSONRoute
from rankwise.server.state import ServerState

JSON = "application/json"
CACHE_HEADER = "X-Rankwise-Cache"


def api_router(**options: Any) -> APIRouter:
    """A router for the ``/v1`` API: strict JSON bodies, the API key, the typed error
    responses in the schema; ``options`` (e.g. ``tags``) are passed to :class:`APIRouter`."""
    return APIRouter(
        route_class=StrictJSONRoute,
        dependencies=[Depends(require_api_key)],
        responses=ERROR_RESPONSES,
        **options,
    )


def get_state(request: Request) -> ServerState:
    """FastAPI dependency: the app's :class:`ServerState`."""
    return request.app.state.rankwise


def dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused (they are not JSON)."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def check_texts(state: ServerState, texts: Sequence[str], what: str, max_count: int) -> None:
    """413 when there are more than ``max_count`` texts or one is longer than ``max_chars``."""
    if len(texts) > max_count:
        raise PayloadTooLarge(
            f"{len(texts):,} {what} in one request; this server accepts at most {max_count:,}"
            " (split the request)"
        )
    limit = state.settings.max_chars
    for i, t in enumerate(texts):
        if len(t) > limit:
            raise PayloadTooLarge(
                f"{what}[{i}] has {len(t):,} characters; the limit is {limit:,} "
                "(the model reads only its first few hundred tokens: send a shorter text)"
            )


def check_tokens(tokens: Sequence[int], max_length: int, what: str, truncate: bool) -> int:
    """Tokens the model will run (each input capped at ``max_length``).

    With ``truncate=False`` an input over the model's limit is a 413 instead.
    """
    if not truncate:
        for i, n in enumerate(tokens):
            if n > max_length:
                raise PayloadTooLarge(
                    f"{what}[{i}] is {n:,} tokens; the model takes at most {max_length:,} "
                    "(shorten it or send truncate=true)"
                )
    return int(sum(min(n, max_length) for n in tokens))


async def cached_json(
    state: ServerState,
    kind: str,
    model_version: str,
    query: str,
    candidates: Any,
    params: dict[str, Any],
    build: Callable[[], Awaitable[Any]],
    envelope: dict[str, Any] | None = None,
) -> Response:
    """Serve the cached body for this request, or ``build()`` it, cache and serve it.

    ``envelope``: per-response fields of an object body (a fresh ``id``, the ``model`` as
    the client sent it) that are never cached; they are written in front of the cached
    fields, so a hit is the stored body plus this response's own envelope (header
    ``X-Rankwise-Cache: hit``). Cache calls run in a worker thread: a slow Redis must not
    stall the event loop.
    """
    cache = state.cache
    key = cache_key(kind, model_version, query, candidates, params) if cache is not None else None
    body = None
    if key is not None:
        body = await run_in_threadpool(cache.get, key)
    status = "hit" if body is not None else ("miss" if key else "off")
    if body is None:
        body = dumps(await build())
        if key is not None:
            await run_in_threadpool(cache.set, key, body)
    if envelope:
        # the body is a JSON object: splice the envelope's members in front of its own
        head = dumps(envelope)[:-1]
        body = head + (b"}" if body == b"{}" else b"," + body[1:])
    return Response(body, media_type=JSON, headers={CACHE_HEADER: status})
