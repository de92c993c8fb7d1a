"""Strict JSON request parsing for every route.

Python's ``json.loads`` accepts things that must never reach the models or the store:

- ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON (RFC 8259): a NaN ``top_n``
  or threshold, or a response the encoder cannot write → 400 ``invalid_json``;
- bytes that are not UTF-8 (RFC 8259 §8.1 requires UTF-8): decoding them with
  replacement characters would silently change the client's text → 400 ``invalid_json``
  naming the byte offset;
- lone surrogate escapes (``"\\ud800"``): valid JSON grammar, but not a Unicode string;
  tokenizers, the store and the response encoder all fail on them (a 500 before this
  check) → 422 naming the field;
- NUL characters (``"\\u0000"``): they truncate strings in C libraries and filter
  expressions → 422 naming the field.

Lone surrogates are checked here on every string of the parsed body (keys included), so
every endpoint and field gets the same answer from one place. NUL is checked by the
request models' ``Text`` type (``schemas``), which also states it as a ``pattern`` in the
OpenAPI document, and by :func:`check_strings` with ``nul=True`` for free-form values
(filters); unknown fields, which are ignored, may hold anything else.
:class:`StrictJSONRoute` is FastAPI's documented extension point (a custom ``Request`` +
``APIRoute`` class).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


class InvalidText(HTTPException):
    """422 for a string the server refuses (lone surrogate, NUL). An ``HTTPException`` so
    that FastAPI's body parsing passes it on instead of turning it into a generic 400."""

    def __init__(self, message: str) -> None:
        super().__init__(422, message)


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "body"


def _text_problem(s: str, nul: bool) -> str | None:
    if nul and "\x00" in s:
        return "contains a NUL character (\\u0000)"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate (\\u{ord(s[e.start]):04x}) at character {e.start}"
    return None


def check_strings(value: Any, parts: list[str | int] | None = None, nul: bool = False) -> None:
    """Raise :class:`InvalidText` naming the first string (value or key) that has a lone
    surrogate (or a NUL, with ``nul=True``). Iterative so that deeply nested bodies cannot hit the recursion
    limit (json.loads already bounds the depth it parses)."""
    stack: list[tuple[Any, list[str | int]]] = [(value, parts or [])]
    while stack:
        v, where = stack.pop()
        if isinstance(v, str):
            problem = _text_problem(v, nul)
            if problem:
                raise InvalidText(f"{_path(where)}: {problem}; send valid Unicode text")
        elif isinstance(v, dict):
            for k, item in v.items():
                problem = _text_problem(k, nul)
                if problem:
                    raise InvalidText(f"{_path(where)}: a key {problem}; send valid Unicode text")
                stack.append((item, [*where, k]))
        elif isinstance(v, list):
            stack.extend((item, [*where, i]) for i, item in enumerate(v))


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise json.JSONDecodeError(
                    f"the body is not UTF-8 (byte {e.start}: {body[e.start : e.start + 1]!r}); "
                    "send UTF-8 encoded JSON",
                    "",
                    e.start,
                ) from None
            try:
                parsed = json.loads(text, parse_constant=_reject_constant)
            except ValueError as e:
                if isinstance(e, json.JSONDecodeError):
                    raise
                raise json.JSONDecodeError(
                    f"{e} is not valid JSON (use null or a finite number)", text, 0
                ) from None
            check_strings(parsed)
            self._json = parsed
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
