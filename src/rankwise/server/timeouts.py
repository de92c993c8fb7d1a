"""Slow clients: a connection must send its request headers within ``header_timeout``.

uvicorn times out idle keep-alive connections but not a client that opens a connection
and trickles (or never finishes) its headers: such connections were held forever. This
subclass of uvicorn's h11 protocol arms a timer when a connection opens and whenever a
new request starts arriving, cancels it once the headers are complete (uvicorn has then
started the request cycle), and closes the connection when it fires. Stalled *bodies*
are the body-limit middleware's job (``body_timeout``, 408). Written by hand because
uvicorn has no such option (its ``timeout_keep_alive`` only covers idle connections).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a header timeout (class attribute, seconds)."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            log.info(
                "closing a connection that sent no complete headers in %ss", self.header_timeout
            )
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_headers():
            self._arm()  # a request is arriving, its headers not complete yet
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutH11]:
    """A protocol class for ``uvicorn.Config(http=...)`` with this header timeout."""
    return type("RankwiseH11", (HeaderTimeoutH11,), {"header_timeout": float(seconds)})
