"""The one place where exceptions become HTTP error bodies.

The body is in the shape of the API the path belongs to (a lookup table, :data:`SHAPES`),
so each API's official client reads its own errors:

- ``/v1/embeddings`` (OpenAI): ``{"error": {"message", "type", "param", "code"}}``;
- ``/v1/rerank``, ``/v2/rerank`` (Cohere): ``{"message": str}``, plus rankwise's
  ``error`` and ``error_type`` (Cohere's client ignores unknown keys);
- everything else (TEI ``/rerank``, search, products, operations):
  ``{"error": str, "error_type": str}`` (the shape TEI and infinity use).

``error_type`` is rankwise's own code everywhere (in the OpenAI shape it is ``type``, and is
repeated at the top level). The status comes from the exception class:

- :class:`~rankwise.errors.RankwiseError` subclasses: their ``http_status`` /
  ``error_type`` (``Overloaded`` adds ``Retry-After``; ``Unauthorized`` adds
  ``WWW-Authenticate: Bearer``);
- body validation (wrong types, missing fields, NaN/Infinity where a number is expected):
  422 ``invalid_request``, the message naming the field;
- a body that is not JSON (or uses NaN/Infinity, which JSON does not allow): 400
  ``invalid_json``;
- Starlette's HTTP errors (404, 405, 413 from the body-size limit): their status;
- anything else: 500 ``internal_error``, logged with its traceback, never sent to clients.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rankwise.errors import Overloaded, RankwiseError, Unauthorized

log = logging.getLogger(__name__)

_HTTP_ERROR_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "overloaded",
    503: "not_ready",
}

_STR = {"type": "string"}
#: JSON Schema of each error body shape (for the OpenAPI document).
_SHAPE_SCHEMAS: dict[str, dict[str, Any]] = {
    "rankwise": {
        "type": "object",
        "properties": {"error": _STR, "error_type": _STR},
        "required": ["error", "error_type"],
    },
    "openai": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": _STR,
                    "type": _STR,
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
                "required": ["message", "type", "param", "code"],
            },
            "error_type": _STR,
        },
        "required": ["error"],
    },
    "cohere": {
        "type": "object",
        "properties": {"message": _STR, "error": _STR, "error_type": _STR},
        "required": ["message"],
    },
}

_ERROR_STATUSES = (
    (400, "Invalid JSON (not UTF-8, NaN/Infinity, syntax)"),
    (401, "Missing or wrong API key"),
    (404, "Unknown id (e.g. a judged product that is not in the index)"),
    (409, "Valid, but the server's state cannot answer it yet (e.g. nothing judged)"),
    (413, "Too many inputs, input too long, request over the cost limit, or body too large"),
    (422, "Invalid request (the message names the field)"),
    (429, "Queue full; see Retry-After"),
    (503, "Model not loaded yet"),
)


def error_responses(shape: str = "rankwise") -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses, in one API's error body shape."""
    schema = _SHAPE_SCHEMAS[shape]
    return {
        status: {"description": desc, "content": {"application/json": {"schema": schema}}}
        for status, desc in _ERROR_STATUSES
    }


#: OpenAPI description of rankwise's own error body, for ``responses=`` on routes.
ERROR_RESPONSES = error_responses("rankwise")


def _openai_body(status: int, message: str, error_type: str, param: str | None) -> dict:
    return {
        "error": {"message": message, "type": error_type, "param": param, "code": str(status)},
        "error_type": error_type,
    }


def _cohere_body(status: int, message: str, error_type: str, param: str | None) -> dict:
    return {"message": message, "error": message, "error_type": error_type}


def _rankwise_body(status: int, message: str, error_type: str, param: str | None) -> dict:
    return {"error": message, "error_type": error_type}


#: Error body shape per path (differences as data); the default is rankwise's own.
SHAPES = {
    "/v1/embeddings": _openai_body,
    "/v1/rerank": _cohere_body,
    "/v2/rerank": _cohere_body,
}


def error_body(
    path: str, status: int, message: str, error_type: str, param: str | None = None
) -> dict[str, Any]:
    """The error body for ``path`` in its API's shape (see the module docstring)."""
    return SHAPES.get(path, _rankwise_body)(status, message, error_type, param)


def error_response(
    request: Request,
    status: int,
    message: str,
    error_type: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    body = error_body(request.url.path, status, message, error_type, param)
    return JSONResponse(body, status, headers=headers)


def _rankwise_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RankwiseError)
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc)
    return error_response(request, exc.http_status, str(exc), exc.error_type, headers or None)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        detail = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
        return error_response(
            request, 400, f"request body is not valid JSON: {detail}", "invalid_json"
        )
    parts = []
    for e in errors[:5]:
        msg = e.get("msg", "invalid value")
        parts.append(f"{_field(tuple(e.get('loc', ())))}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    param = _field(tuple(errors[0].get("loc", ()))) if errors else None
    return error_response(request, 422, "; ".join(parts) + more, "invalid_request", param=param)


def _allowed_methods(request: Request) -> str:
    """Every method the OpenAPI document lists for this path (Starlette's own 405 names
    only the first partially matching route's, e.g. ``PUT`` where PUT and DELETE are
    served). Read from the schema, the contract clients and checkers go by."""
    path = request.url.path
    methods: set[str] = set()
    for template, ops in request.app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods |= {m.upper() for m in ops if m in _HTTP_METHODS}
    return ", ".join(sorted(methods))


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if status == 413:
        message = "request body is larger than the server's max_payload_bytes limit"
    headers = dict(exc.headers) if exc.headers else {}
    if status == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return error_response(
        request, status, message, _HTTP_ERROR_TYPES.get(status, "http_error"), headers or None
    )


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        request, 500, "internal server error (see the server log)", "internal_error"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on ``app``."""
    app.add_exception_handler(RankwiseError, _rankwise_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
