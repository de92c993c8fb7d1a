"""The one place where exceptions become HTTP error bodies.

Every error response is ``{"error": str, "error_type": str}`` (the shape TEI and infinity
use) with the status from the exception class:

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
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "overloaded",
    503: "not_ready",
}

#: OpenAPI description of the error body, for ``responses=`` on routes.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": desc,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
                    "required": ["error", "error_type"],
                }
            }
        },
    }
    for status, desc in (
        (400, "Invalid JSON"),
        (401, "Missing or wrong API key"),
        (413, "Too many inputs, input too long, or body too large"),
        (422, "Invalid request"),
        (429, "Queue full; see Retry-After"),
        (503, "Model not loaded yet"),
    )
}


def error_response(
    status: int, message: str, error_type: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status, headers=headers)


def _rankwise_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RankwiseError)
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc)
    return error_response(exc.http_status, str(exc), exc.error_type, headers or None)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        detail = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
        return error_response(400, f"request body is not valid JSON: {detail}", "invalid_json")
    parts = []
    for e in errors[:5]:
        msg = e.get("msg", "invalid value")
        parts.append(f"{_field(tuple(e.get('loc', ())))}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return error_response(422, "; ".join(parts) + more, "invalid_request")


def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if status == 413:
        message = "request body is larger than the server's max_payload_bytes limit"
    return error_response(
        status,
        message,
        _HTTP_ERROR_TYPES.get(status, "http_error"),
        dict(exc.headers) if exc.headers else None,
    )


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error (see the server log)", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on ``app``."""
    app.add_exception_handler(RankwiseError, _rankwise_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
