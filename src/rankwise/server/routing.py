"""Strict JSON request parsing for every route.

Python's ``json.loads`` accepts ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON
(RFC 8259) and would otherwise reach the models (a NaN ``top_n``, a NaN threshold) or
break the response encoder. :class:`StrictJSONRoute` parses bodies with those constants
rejected, so such a body is answered like any other invalid JSON (400 ``invalid_json``).
This is FastAPI's documented extension point (a custom ``Request`` + ``APIRoute`` class).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            text = body.decode("utf-8", errors="replace")
            try:
                self._json = json.loads(text, parse_constant=_reject_constant)
            except ValueError as e:
                if isinstance(e, json.JSONDecodeError):
                    raise
                raise json.JSONDecodeError(
                    f"{e} is not valid JSON (use null or a finite number)", text, 0
                ) from None
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
