"""The scrapes' HTTP client: GET over keep-alive connections to the addresses the policy checked.

Why not a general HTTP client: a scrape is one GET of a ~100 kB body every second or so,
for hundreds of targets in one process. httpx spent about 1.7 ms of CPU on each (its request
model, anyio streams, h11 events, and httpcore's pool scans: ``bench/README.md``); this client,
an asyncio :class:`~asyncio.Protocol` feeding :class:`~tgi_collector._http11.ResponseParser`,
about 0.2 ms. It also connects to the very address that :class:`~tgi_collector.policy.TargetPolicy`
checked, so no second DNS answer can slip a refused address in (DNS rebinding); the URL's host
still names the server in ``Host`` and in TLS (SNI and certificate verification).

What it does not do, deliberately: redirects (a 3xx is returned like any status), proxies,
cookies, authentication, HTTP/2, request bodies. Deadlines are the caller's: cancelling a
request (``asyncio.timeout``) closes its connection.

Connections are kept per (scheme, host, port, address): at most :data:`MAX_IDLE_PER_KEY` idle
ones each, closed after :data:`KEEPALIVE_SECONDS` idle, and for at most ``max_keys`` keys (least
recently used first out). A request that finds a reused connection closed before any byte of
the response arrives is retried once on a new connection (the server closed an idle
connection as the request went out: safe for a GET).

Failures raise :class:`~tgi_collector.errors.ScrapeError`: ``CONNECT`` (refused, unreachable,
no address, TLS handshake) or ``PROTOCOL`` (reset, closed early, bytes that are not HTTP).

This module holds the client API and the pool of idle connections; one connection's protocol
and flow control is :class:`~tgi_collector._http_connection.Connection`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from tgi_collector._http11 import ProtocolViolation, ResponseHead, request
from tgi_collector._http_connection import Connection
from tgi_collector.errors import ScrapeError, ScrapeErrorKind
from tgi_collector.targets import port_of

__all__ = ["KEEPALIVE_SECONDS", "MAX_IDLE_PER_KEY", "HttpClient", "Response"]

MAX_IDLE_PER_KEY: Final = 2
KEEPALIVE_SECONDS: Final = 90.0
# Characters kept as they are in a request target; everything else is percent-encoded.
_SAFE_IN_TARGET: Final = "/%:@!$&'()*+,;=-._~?"

_Key = tuple[str, str, int, str]  # scheme, host, port, address


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a URL points: scheme, host (as in the URL), port, and ``host:port`` for messages."""

    scheme: str
    host: str
    port: int

    @property
    def shown(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def key(self, address: str) -> _Key:
        return (self.scheme, self.host, self.port, address)


@dataclass(frozen=True, slots=True)
class Response:
    """A response whose head has arrived; read the body with :meth:`read`."""

    head: ResponseHead
    _connection: Connection

    @property
    def status(self) -> int:
        return self.head.status

    @property
    def reason(self) -> str:
        return self.head.reason

    @property
    def headers(self) -> dict[str, str]:
        return self.head.headers

    async def read(self, sink: Callable[[bytes], None]) -> None:
        """Pass the body to ``sink`` chunk by chunk, until its end."""
        try:
            await self._connection.read_body(sink)
        except (ProtocolViolation, OSError) as exc:
            raise _protocol_error(exc, self._connection) from exc


def _protocol_error(exc: BaseException, connection: Connection) -> ScrapeError:
    where = connection.shown
    if isinstance(exc, ConnectionResetError):
        return ScrapeError(ScrapeErrorKind.PROTOCOL, f"connection reset by {where}")
    if isinstance(exc, ProtocolViolation):
        return ScrapeError(ScrapeErrorKind.PROTOCOL, f"HTTP protocol error from {where}: {exc}")
    return ScrapeError(ScrapeErrorKind.PROTOCOL, f"HTTP exchange with {where} failed ({exc})")


def _refused(exc: OSError, shown: str, *, tls: bool) -> ScrapeError:
    """The CONNECT error for a failed connection attempt."""
    if isinstance(exc, ConnectionRefusedError):
        return ScrapeError(ScrapeErrorKind.CONNECT, f"connection refused by {shown}")
    # A reset while connecting with TLS comes after the TCP handshake: the server hung up on
    # the ClientHello (a plain HTTP server answering 400, for one).
    if isinstance(exc, ssl.SSLError) or (tls and isinstance(exc, ConnectionResetError)):
        detail = (
            getattr(exc, "verify_message", None)
            or getattr(exc, "reason", None)
            or exc.strerror
            or type(exc).__name__
        )
        return ScrapeError(ScrapeErrorKind.CONNECT, f"TLS handshake with {shown} failed ({detail})")
    detail = exc.strerror or str(exc) or type(exc).__name__
    return ScrapeError(ScrapeErrorKind.CONNECT, f"cannot connect to {shown} ({detail})")


def _host_header(authority: str, origin: _Origin) -> str:
    """``Host`` as in the URL (``host[:port]``), a non-ASCII host name in its IDNA form."""
    if authority.isascii():
        return authority
    host, bracket, port = authority.rpartition("]") if authority.startswith("[") else ("", "", "")
    if not bracket:
        host, colon, port = authority.rpartition(":")
        if not colon or not port.isdigit():
            host, port = authority, ""
    try:
        # Label by label, as resolvers do; a label IDNA cannot encode is no host we can name.
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ScrapeError(
            ScrapeErrorKind.CONNECT, f"host name of {origin.shown} cannot be encoded ({exc})"
        ) from exc
    return f"{encoded}:{port}" if port else encoded


def _request_target(path: str, query: str) -> str:
    target = quote(path or "/", safe=_SAFE_IN_TARGET)
    return f"{target}?{quote(query, safe=_SAFE_IN_TARGET)}" if query else target


class HttpClient:
    """Keep-alive HTTP/1.1 GETs for the scraper (see the module docstring).

    ``ssl_context`` verifies https targets; the default is the system's trust store
    (:func:`ssl.create_default_context`), made on the first https request.
    """

    def __init__(
        self, *, max_keys: int = 10_000, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._max_keys = max_keys
        self._ssl = ssl_context
        self._idle: collections.OrderedDict[_Key, list[Connection]] = collections.OrderedDict()
        self._active: set[Connection] = set()

    @property
    def idle_connections(self) -> int:
        """Idle keep-alive connections held (for tests and diagnostics)."""
        return sum(len(connections) for connections in self._idle.values())

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in list(self._active):
            connection.close()

    @contextlib.asynccontextmanager
    async def get(
        self, url: str, addresses: list[str], headers: list[tuple[str, str]]
    ) -> AsyncIterator[Response]:
        """GET ``url`` from the first of ``addresses`` that connects; the response head.

        ``url`` is an http(s) URL already validated (see :mod:`tgi_collector.targets`);
        ``headers`` come after ``Host`` as given. The connection goes back to the pool when
        the body was read to its end and the server allows reuse, else it is closed.
        """
        parts = urlsplit(url)
        origin = _Origin(parts.scheme, parts.hostname or "", port_of(parts))
        if not addresses:
            raise ScrapeError(ScrapeErrorKind.CONNECT, f"cannot resolve host of {origin.shown}")
        host_header = _host_header(parts.netloc.rpartition("@")[2], origin)
        data = request(_request_target(parts.path, parts.query), [("Host", host_header), *headers])
        connection, key = await self._exchange(origin, addresses, data)
        try:
            yield Response(connection.head, connection)
        finally:
            connection.finish()
            self._active.discard(connection)
            if connection.reusable:
                self._put_idle(key, connection)
            else:
                connection.close()

    async def _exchange(
        self, origin: _Origin, addresses: list[str], data: bytes
    ) -> tuple[Connection, _Key]:
        """Send the request on an idle connection (retried once if stale) or a new one."""
        retried = False
        while True:
            reused = None if retried else self._take_idle(origin, addresses)
            if reused is not None:
                connection, key = reused
            else:
                connection, key = await self._connect(origin, addresses)
            self._active.add(connection)
            try:
                await connection.send(data)
            except (ProtocolViolation, OSError) as exc:
                connection.close()
                self._active.discard(connection)
                if reused is not None and not connection.answered:
                    retried = True
                    continue  # closed by the server while idle; try a new connection
                raise _protocol_error(exc, connection) from exc
            except BaseException:
                connection.close()
                self._active.discard(connection)
                raise
            return connection, key

    async def _connect(self, origin: _Origin, addresses: list[str]) -> tuple[Connection, _Key]:
        loop = asyncio.get_running_loop()
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        error: ScrapeError | None = None
        shown = origin.shown
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: Connection(shown),
                    host=address,
                    port=origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
            except OSError as exc:  # ssl.SSLError is an OSError too
                error = _refused(exc, shown, tls=context is not None)
                continue
            return connection, origin.key(address)
        assert error is not None
        try:
            raise error
        finally:
            # The raised error's traceback holds this frame, which would hold the error: a
            # reference cycle per failed connect that only the cyclic GC could free.
            error = None

    def _take_idle(self, origin: _Origin, addresses: list[str]) -> tuple[Connection, _Key] | None:
        now = asyncio.get_running_loop().time()
        for address in addresses:
            key = origin.key(address)
            connections = self._idle.get(key)
            while connections:
                connection = connections.pop()
                transport = connection.transport
                if (
                    connection.closed
                    or transport is None
                    or transport.is_closing()
                    or now - connection.idle_since > KEEPALIVE_SECONDS
                ):
                    connection.close()
                    continue
                self._idle.move_to_end(key)
                return connection, key
        return None

    def _put_idle(self, key: _Key, connection: Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        connections = self._idle.get(key)
        if connections is None:
            connections = self._idle[key] = []
            while len(self._idle) > self._max_keys:
                _, dropped = self._idle.popitem(last=False)
                for old in dropped:
                    old.close()
        else:
            self._idle.move_to_end(key)
        if len(connections) >= MAX_IDLE_PER_KEY:
            connection.close()
            return
        connections.append(connection)
