"""Optional API keys: ``Authorization: Bearer <key>``.

With no keys configured every request passes. With keys configured, requests to the model
and search endpoints need one of them (401 ``unauthorized`` otherwise); ``/health``,
``/ready`` and ``/metrics`` stay open for orchestrators and scrapers.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rankwise.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="API key (only when the server has keys)")


def key_matches(given: str, keys: Sequence[str]) -> bool:
    """Constant-time comparison against every configured key."""
    given_b = given.encode()
    return any(hmac.compare_digest(given_b, k.encode()) for k in keys)


def require_api_key(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> None:
    """FastAPI dependency: raises :class:`Unauthorized` when keys are set and none matches."""
    keys: Sequence[str] = request.app.state.rankwise.settings.api_keys
    if not keys:
        return
    if credentials is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not key_matches(credentials.credentials, keys):
        raise Unauthorized("invalid API key")
