"""One HTTP/1.1 connection of the scrapes' client: an asyncio Protocol, one exchange at a time.

:class:`Connection` carries bytes between the event loop's transport and a
:class:`~tgi_collector._http11.ResponseParser` (the sans-IO framing), and lets a coroutine wait
for the response head and then for the body, which it hands to a sink as it arrives (pausing
the socket while a body is held unread). Its errors are the raw ones (``ProtocolViolation``,
``OSError``, or a sink's :class:`~tgi_collector.errors.ScrapeError`): naming them for the
caller, pooling, retrying and connecting are :class:`tgi_collector._http.HttpClient`'s, kept
apart from this flow control of a single connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from tgi_collector._http11 import ProtocolViolation, ResponseHead, ResponseParser
from tgi_collector.errors import ScrapeError

__all__ = ["Connection"]

# Body bytes buffered while nobody reads them (between the head and the caller's read).
_PAUSE_AT: Final = 1024 * 1024


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one exchange at a time."""

    def __init__(self, shown: str) -> None:
        self.shown = shown  # host:port, for messages
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = ResponseParser()
        self._active = False  # an exchange is in progress
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._error: BaseException | None = None
        self._paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self._parser.feed(data)
            self._deliver()
        except (ProtocolViolation, ScrapeError) as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self.closed = True
        if self._active:
            try:
                self._parser.feed_eof()
                self._deliver()
            except (ProtocolViolation, ScrapeError) as exc:
                self._fail(exc)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._active and not self._parser.done:
            self._fail(exc or ProtocolViolation("connection closed before the end of the response"))

    # -- used by HttpClient ------------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def answered(self) -> bool:
        """Whether any byte of the current response arrived."""
        return self._parser.head is not None or self._parser.started

    @property
    def reusable(self) -> bool:
        return self._parser.done and self._parser.reusable and not self.closed

    @property
    def head(self) -> ResponseHead:
        assert self._parser.head is not None
        return self._parser.head

    async def send(self, data: bytes) -> None:
        """Start an exchange: send a request and wait for its response head."""
        assert self.transport is not None
        self._parser = ResponseParser()
        self._active, self._sink, self._error = True, None, None
        self.transport.write(data)
        await self._until(lambda: self._parser.head is not None)

    async def read_body(self, sink: Callable[[bytes], None]) -> None:
        """Hand every body byte to ``sink`` (which may raise ScrapeError to stop)."""
        self._sink = sink
        try:
            self._deliver()
        except ScrapeError as exc:
            self._fail(exc)
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        await self._until(lambda: self._parser.done)

    def finish(self) -> None:
        """End the exchange (stray bytes from now on close the connection)."""
        self._active, self._sink = False, None
        if self._paused and self.transport is not None:
            # Paused for a body nobody read: an idle connection must still see stray bytes and
            # its next response.
            self._paused = False
            self.transport.resume_reading()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while self._error is None and not condition():
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error

    def _deliver(self) -> None:
        """Pass received body bytes on (or hold them, pausing the socket past a limit)."""
        parser = self._parser
        if self._sink is not None:
            for chunk in parser.take_body():
                self._sink(chunk)
        elif parser.buffered > _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if parser.head is not None:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self.close()
        self._wake()
