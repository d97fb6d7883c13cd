"""A small, real HTTP/1.1 server for tests, with per-path behaviours (stdlib only).

Tests that talk to "a target" should talk to a real socket, not a mock: that is the only way to
exercise keep-alive, deadlines, partial bodies, compression and broken peers the way a real
scrape meets them. The server listens on ``127.0.0.1`` port 0 (a free port chosen by the OS),
speaks HTTP/1.1 with keep-alive, and serves each path with a :class:`Route`::

    from fixture_server import FixtureServer  # tests/ is on sys.path under pytest

    async with FixtureServer() as srv:
        srv.route("/metrics", body=Path("tests/data/tgi/tgi-3.3-real.prom"))
        srv.route("/info", body=b'{"model_id": "m"}', content_type="application/json")
        srv.route("/slow", behaviour="trickle", interval=1.0, duration=5.0)
        url = srv.url("/metrics")        # http://127.0.0.1:<port>/metrics
        ...
        assert srv.hits("/metrics") == 1  # requests answered (or begun) on that path
        assert srv.connections == 1       # TCP connections accepted

Behaviours (``behaviour=``):

``serve`` (default)
    Answer ``status`` with ``headers`` and ``body`` (bytes, text, or a file path), after an
    optional ``delay``. ``gzip=True`` compresses the body (``Content-Encoding: gzip``).
``redirect``
    Answer ``status`` (302 unless a 3xx is given) with ``Location: <location>``.
``hang``
    Read the request and never answer, until the client disconnects, ``duration`` seconds pass
    (then the connection is closed), or the server closes.
``trickle``
    Send the headers, then the body one byte every ``interval`` seconds (chunked); after
    ``duration`` seconds the connection is closed mid-body.
``stream``
    Send ``size`` bytes (default 1 GiB) made of ``body`` repeated (default: comment lines, so the
    text is valid Prometheus text) in ``chunk_size`` chunks, chunked encoding. With
    ``gzip=True`` the stream is compressed on the fly: a gzip bomb (a few hundred kB on the wire
    for 1 GiB decompressed). Stops when the client disconnects or after ``duration`` seconds.
``truncate``
    Announce ``Content-Length: len(body)``, send the first ``truncate_at`` bytes (default half),
    then close the connection (``reset=True``: abort it with a TCP RST instead of a FIN).
``raw``
    Write ``body`` as the whole response, byte for byte (no status line or headers added), then
    close the connection: for broken HTTP.

Every behaviour is bounded in time, and :meth:`FixtureServer.close` (leaving the ``async with``)
cancels whatever is still running. Paths without a route get ``404``. Counters:
:meth:`~FixtureServer.hits`, :attr:`~FixtureServer.connections`,
:meth:`~FixtureServer.bytes_sent`, and :attr:`~FixtureServer.requests` (method, path, headers of
every request, to check what a client sent). ``tests/conftest.py`` offers a started server as
the ``fixture_server`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip as gzip_module
import http
import os
import socket
import struct
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

__all__ = ["Behaviour", "FixtureServer", "RecordedRequest", "Route"]

Behaviour = Literal["serve", "redirect", "hang", "trickle", "stream", "truncate", "raw"]

DEFAULT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_HEAD_BYTES = 64 * 1024
# Upper bound on any single behaviour, so a test that forgets to close cannot hang forever.
_MAX_DURATION = 60.0
_STREAM_PATTERN = b"# fixture_server padding line: a comment, so the text stays valid\n"


@dataclass(frozen=True, slots=True)
class Route:
    """How one path is answered; built by :meth:`FixtureServer.route`."""

    behaviour: Behaviour = "serve"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    gzip: bool = False
    delay: float = 0.0
    interval: float = 1.0
    duration: float = 10.0
    size: int = 1 << 30
    chunk_size: int = 64 * 1024
    location: str = "/"
    truncate_at: int | None = None
    reset: bool = False
    keep_alive: bool = True


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received: method, path (without query), full target, lower-cased headers."""

    method: str
    path: str
    target: str
    headers: Mapping[str, str]
    connection: int


@dataclass(slots=True)
class _Connection:
    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: Counter[str] = field(default_factory=Counter)


class _Close(Exception):
    """Raised by a behaviour that has ended the connection on purpose."""


class FixtureServer:
    """An HTTP/1.1 test server on 127.0.0.1 (port 0); see the module docstring."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self._routes: dict[str, Route] = {}
        self._hits: Counter[str] = Counter()
        self._bytes_sent: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening; :attr:`port` is known afterwards."""
        self._server = await asyncio.start_server(self._handle, self.host, 0, limit=_MAX_HEAD_BYTES)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and cancel every connection still open."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- configuration and counters ----------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on (after :meth:`start`)."""
        if not self._port:
            raise RuntimeError("FixtureServer is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        return self.base_url + path

    def route(
        self,
        path: str,
        *,
        behaviour: Behaviour = "serve",
        body: bytes | str | os.PathLike[str] = b"",
        status: int = 200,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        content_type: str | None = DEFAULT_CONTENT_TYPE,
        gzip: bool = False,
        delay: float = 0.0,
        interval: float = 1.0,
        duration: float = 10.0,
        size: int = 1 << 30,
        chunk_size: int = 64 * 1024,
        location: str = "/",
        truncate_at: int | None = None,
        reset: bool = False,
        keep_alive: bool = True,
    ) -> Route:
        """Set (or replace) how ``path`` is answered; see the module docstring for behaviours.

        ``body`` may be bytes, text (sent as UTF-8) or a file path (read now). ``content_type``
        is added unless ``headers`` already has one (None: no Content-Type at all).
        """
        if isinstance(body, os.PathLike):
            data = Path(body).read_bytes()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = bytes(body)
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if content_type is not None and not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("Content-Type", content_type))
        if behaviour == "redirect" and not 300 <= status < 400:
            status = 302
        route = Route(
            behaviour=behaviour,
            status=status,
            headers=tuple(pairs),
            body=data,
            gzip=gzip,
            delay=delay,
            interval=interval,
            duration=min(duration, _MAX_DURATION),
            size=size,
            chunk_size=max(1, chunk_size),
            location=location,
            truncate_at=truncate_at,
            reset=reset,
            keep_alive=keep_alive,
        )
        self._routes[path] = route
        return route

    def hits(self, path: str) -> int:
        """How many requests arrived for ``path`` (query string ignored)."""
        return self._hits[path]

    def bytes_sent(self, path: str) -> int:
        """Body bytes written to the wire for ``path`` over all requests (compressed if gzip)."""
        return self._bytes_sent[path]

    # -- connection handling -----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = _Connection(self.connections, reader, writer)
        try:
            while await self._serve_one(conn):
                pass
        except (_Close, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ValueError:
            pass  # malformed request line or header: just drop the connection
        except asyncio.CancelledError:
            # Only close() cancels a handler, and ending is all it asks. Re-raising would hit a
            # Python 3.11 bug: asyncio.streams calls task.exception() on the cancelled task and
            # logs a spurious traceback.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_one(self, conn: _Connection) -> bool:
        """Read and answer one request; False when the connection should end."""
        first = await conn.reader.readexactly(1)
        if not first.isalpha():
            # Not HTTP (a TLS ClientHello, say): hang up at once, as a real server would,
            # instead of waiting for a blank line that never comes.
            raise _Close
        head = first + await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length:
            await conn.reader.readexactly(length)
        path = target.split("?", 1)[0]
        self._hits[path] += 1
        self.requests.append(RecordedRequest(method, path, target, headers, conn.number))
        client_keeps_alive = (
            version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        )
        route = self._routes.get(path)
        if route is None:
            route = Route(
                status=404, body=b"not found\n", headers=(("Content-Type", "text/plain"),)
            )
        await self._answer(conn, path, method, route, client_keeps_alive and route.keep_alive)
        return client_keeps_alive and route.keep_alive

    async def _answer(
        self, conn: _Connection, path: str, method: str, route: Route, keep_alive: bool
    ) -> None:
        if route.delay:
            await asyncio.sleep(route.delay)
        match route.behaviour:
            case "serve" | "redirect":
                await self._serve(conn, path, method, route, keep_alive)
            case "hang":
                await self._hang(conn, route)
            case "trickle":
                await self._trickle(conn, path, route)
            case "stream":
                await self._stream(conn, path, route)
            case "truncate":
                await self._truncate(conn, path, route)
            case "raw":
                await self._send_body(conn, path, route.body)
                raise _Close

    def _head(
        self, route: Route, extra: Sequence[tuple[str, str]], *, keep_alive: bool = True
    ) -> bytes:
        try:
            reason = http.HTTPStatus(route.status).phrase
        except ValueError:
            reason = "Unknown"
        pairs = [*route.headers, *extra]
        if not keep_alive:
            pairs.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {route.status} {reason}"] + [f"{k}: {v}" for k, v in pairs]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_body(self, conn: _Connection, path: str, data: bytes) -> None:
        conn.writer.write(data)
        self._bytes_sent[path] += len(data)
        await conn.writer.drain()

    async def _send_chunk(self, conn: _Connection, path: str, data: bytes) -> None:
        if not data:
            return  # an empty chunk would end the body
        conn.writer.write(f"{len(data):x}\r\n".encode())
        await self._send_body(conn, path, data)
        conn.writer.write(b"\r\n")

    async def _serve(
        self, conn: _Connection, path: str, method: str, route: Route, keep_alive: bool
    ) -> None:
        body = route.body
        extra: list[tuple[str, str]] = []
        if route.behaviour == "redirect":
            extra.append(("Location", route.location))
        if route.gzip:
            body = gzip_module.compress(body)
            extra.append(("Content-Encoding", "gzip"))
        extra.append(("Content-Length", str(len(body))))
        conn.writer.write(self._head(route, extra, keep_alive=keep_alive))
        if method == "HEAD":
            await conn.writer.drain()
        else:
            await self._send_body(conn, path, body)

    async def _hang(self, conn: _Connection, route: Route) -> None:
        # Reading returns b"" when the client goes away; that ends the hang early.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(route.duration):
                while await conn.reader.read(4096):
                    pass
        raise _Close

    async def _trickle(self, conn: _Connection, path: str, route: Route) -> None:
        body = route.body or _STREAM_PATTERN * 1000
        head = self._head(route, [("Transfer-Encoding", "chunked")], keep_alive=False)
        conn.writer.write(head)
        await conn.writer.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(route.duration):
                for index in range(len(body)):
                    await self._send_chunk(conn, path, body[index : index + 1])
                    await asyncio.sleep(route.interval)
                conn.writer.write(b"0\r\n\r\n")
                await conn.writer.drain()
        raise _Close

    async def _stream(self, conn: _Connection, path: str, route: Route) -> None:
        pattern = route.body or _STREAM_PATTERN
        block = pattern * max(1, route.chunk_size // len(pattern))
        extra = [("Transfer-Encoding", "chunked")]
        compressor = None
        if route.gzip:
            extra.append(("Content-Encoding", "gzip"))
            compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        conn.writer.write(self._head(route, extra, keep_alive=False))
        remaining = route.size
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(route.duration):
                while remaining > 0:
                    piece = block[:remaining]
                    remaining -= len(piece)
                    out = piece if compressor is None else compressor.compress(piece)
                    await self._send_chunk(conn, path, out)
                    await conn.writer.drain()
                    # A client that stopped reading closes the socket; the next write fails with
                    # ConnectionError, which ends the stream. Yield so that can be noticed.
                    await asyncio.sleep(0)
                if compressor is not None:
                    await self._send_chunk(conn, path, compressor.flush())
                conn.writer.write(b"0\r\n\r\n")
                await conn.writer.drain()
        raise _Close

    async def _truncate(self, conn: _Connection, path: str, route: Route) -> None:
        body = route.body or _STREAM_PATTERN * 100
        cut = len(body) // 2 if route.truncate_at is None else route.truncate_at
        conn.writer.write(self._head(route, [("Content-Length", str(len(body)))]))
        await self._send_body(conn, path, body[:cut])
        if route.reset:
            sock = conn.writer.get_extra_info("socket")
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.writer.transport.abort()
        raise _Close
