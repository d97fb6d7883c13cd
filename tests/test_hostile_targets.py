"""Hostile targets: one table of servers that are slow, huge, broken or malicious, each with the
snapshot error it must produce, run through a real :class:`~tgi_collector.scraper.Scraper` with
memory measured, and a few rows through a real ``CollectorServer`` ``Collect`` RPC too.

Every row states the :class:`~tgi_collector.errors.ScrapeErrorKind` expected (None: the target
is up) and a fragment of the message. Beyond that, for every row:

- the scrape returns a snapshot, never raises, and a down snapshot carries no data;
- the error message stays short (at most :data:`MAX_MESSAGE` characters), whatever the
  target sent: it goes to every subscriber of a Watch and into logs;
- the peak of memory traced by ``tracemalloc`` during the scrape stays below
  ``4 * max_body_bytes + SLACK``: the body may be held about once as parts, once joined and
  once decoded, and once more by the target itself (the servers run in this process, and
  ``tracemalloc`` traces the whole process).

Rows whose product behaviour is known to break one of those bounds are marked
``xfail(strict=True, raises=...)`` with the precise exception class of the broken bound, so any
other failure of the row (a wrong error kind, say) still fails the run; the reasons say what is
wrong. Synchronous work that blocks the event loop is checked separately, at the end.

``tests/test_scraper.py`` and ``tests/test_http.py`` check several of these cases in isolation
with their exact messages (trickle, gzip bomb, endless body, invalid UTF-8, reset, untrusted
TLS); the rows here put them under one set of bounds and through the RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import shutil
import ssl
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from fixture_server import FixtureServer
from google.protobuf import duration_pb2
from reference import TGI_REAL

from tgi_collector.errors import ScrapeErrorKind
from tgi_collector.scraper import Scraper
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.snapshot import Snapshot
from tgi_collector.targets import ScrapeOptions, Target
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc, snapshot_pb2

try:  # optional: without it, the openssl binary makes the test certificate
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:
    HAVE_CRYPTOGRAPHY = False
else:
    HAVE_CRYPTOGRAPHY = True

MIB = 1024 * 1024
# What a scrape may allocate beyond its body: the target servers' buffers, asyncio, the parser.
SLACK = 2 * MIB
MAX_MESSAGE = 1024
# Any single scrape of these tests returns well within this, whatever the target does.
BOUND = 20.0
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
TGI_TEXT = TGI_REAL.read_bytes()
# Counted here from the file, independently of the parser: every line that is not a comment.
TGI_SAMPLES = sum(1 for line in TGI_TEXT.splitlines() if line.strip() and not line.startswith(b"#"))


class UnboundedMemoryError(AssertionError):
    """The scrape's peak traced memory broke the bound derived from its limits."""


class UnboundedMessageError(AssertionError):
    """The snapshot's error message is longer than MAX_MESSAGE."""


class LoopBlockedError(AssertionError):
    """The event loop was blocked for longer than the bound."""


# -- servers ---------------------------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback server running ``script`` per connection (plain or TLS), for byte-exact
    behaviour the :class:`FixtureServer` has no route for (it talks first, or slowly)."""

    def __init__(self, script: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self._script = script
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ssl)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/metrics") -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            async with asyncio.timeout(BOUND):
                await self._script(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, the bound passed, or the server closes
        finally:
            self._tasks.discard(task)
            writer.transport.abort()


async def _request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def _until_closed(reader: asyncio.StreamReader) -> None:
    for _ in range(10_000):
        if not await reader.read(65536):
            return


def _talks_first(response: bytes) -> Script:
    """Answers as soon as the connection is accepted, before any request arrived."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response)
        await writer.drain()
        await _until_closed(reader)

    return script


def _answers_then_waits(response: bytes) -> Script:
    """Reads the request, sends ``response``, then neither sends nor closes."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(response)
        await writer.drain()
        await _until_closed(reader)

    return script


def _drips(head: bytes, drop: bytes, interval: float, count: int) -> Script:
    """Reads the request, sends ``head``, then ``drop`` every ``interval`` s, ``count`` times."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(head)
        for _ in range(count):
            writer.write(drop)
            await writer.drain()
            await asyncio.sleep(interval)

    return script


def _serves(body: bytes) -> Script:
    """An ordinary HTTP/1.1 answer to every request of a connection."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(1000):
            await _request(reader)
            writer.write(response)
            await writer.drain()

    return script


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: Path
    key: Path


def _make_certificate(folder: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1: with ``cryptography`` if importable, else the
    ``openssl`` binary; skips the test if neither is there."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not HAVE_CRYPTOGRAPHY:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor an openssl binary is available")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        return Certificate(cert, key)
    _make_certificate_with_cryptography(cert, key)
    return Certificate(cert, key)


def _make_certificate_with_cryptography(cert: Path, key: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass
class Env:
    """What a row may use: the fixture server, a canary server that must never be contacted,
    raw servers started on demand, and a self-signed certificate made on demand."""

    fixture: FixtureServer
    canary: FixtureServer
    stack: contextlib.AsyncExitStack
    tmp: Path
    raw: list[RawServer] = field(default_factory=list)

    async def raw_server(self, script: Script, *, tls: bool = False) -> RawServer:
        context = None
        if tls:
            certificate = _make_certificate(self.tmp)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate.cert, certificate.key)
        server = await self.stack.enter_async_context(RawServer(script, context))
        self.raw.append(server)
        return server

    def route(self, **route: Any) -> str:
        self.fixture.route("/metrics", **route)
        return self.fixture.url("/metrics")

    def raw_response(self, data: bytes) -> str:
        """The fixture server answers with ``data`` byte for byte, then closes."""
        return self.route(behaviour="raw", body=data)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with (
        FixtureServer() as fixture,
        FixtureServer() as canary,
        contextlib.AsyncExitStack() as stack,
    ):
        canary.route("/", body=b"up 1\n")
        yield Env(fixture, canary, stack, tmp_path)


# -- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """One hostile target: how to serve it, what the scrape must say, and its limits."""

    serve: Callable[[Env], Awaitable[str]]  # sets the target up; its URL
    kind: ScrapeErrorKind | None  # None: the target is up
    message: str = ""  # a fragment of the error message; {port} is the target's port
    max_body_bytes: int = MIB
    timeout_seconds: float = 10.0
    max_samples: int = 200_000
    samples: int | None = None  # for an up target: how many samples it has
    check: Callable[[Env, Snapshot], None] | None = None
    rpc: bool = False  # also through CollectorServer's Collect
    memory_bug: str = ""  # why the memory bound is known to break (xfail on that alone)
    message_bug: str = ""  # why the message bound is known to break (xfail on that alone)


def _serve(**route: Any) -> Callable[[Env], Awaitable[str]]:
    async def serve(env: Env) -> str:
        return env.route(**route)

    return serve


def _raw(data: bytes) -> Callable[[Env], Awaitable[str]]:
    async def serve(env: Env) -> str:
        return env.raw_response(data)

    return serve


def _script(make: Callable[[], Script], *, tls: bool = False) -> Callable[[Env], Awaitable[str]]:
    async def serve(env: Env) -> str:
        return (await env.raw_server(make(), tls=tls)).url()

    return serve


def _http(head: bytes, body: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + body


def _with_byte_at_line(data: bytes, line: int, bad: bytes) -> tuple[bytes, int]:
    """``data`` with ``bad`` inserted at the start of its 1-based ``line``; and its offset."""
    offset = 0
    for _ in range(line - 1):
        offset = data.index(b"\n", offset) + 1
    return data[:offset] + bad + data[offset:], offset


_UTF8_LINE = 500
_BAD_UTF8, _BAD_UTF8_OFFSET = _with_byte_at_line(TGI_TEXT, _UTF8_LINE, b'x{a="\xff"} 1\n')
_MANY_SAMPLES = 40_000
_SAMPLE_LIMIT = 10_000
_LONG_LINE = 8 * MIB
_LONG_LIMIT = 4 * MIB
_UNDER_LIMIT_LINE = 3 * MIB
_GARBAGE_LINE = MIB  # the careful parse walks a bad line in Python, char by char


def _many_samples(count: int) -> bytes:
    return b"".join(b's{i="%d"} 1\n' % i for i in range(count))


def _long_line(env: Env, *, chunked: bool) -> str:
    line = b"#" + b"x" * (_LONG_LINE - 2) + b"\n"
    if chunked:
        # One 8 MiB chunk: the limit must cut it while it streams in.
        return env.route(behaviour="stream", body=line, size=len(line), chunk_size=len(line))
    return env.route(body=line)


async def _long_line_content_length(env: Env) -> str:
    return _long_line(env, chunked=False)


async def _long_line_chunked(env: Env) -> str:
    return _long_line(env, chunked=True)


def _no_server_data(env: Env, snapshot: Snapshot) -> None:
    assert snapshot.stats.body_bytes == 0  # refused on Content-Length, unread


def _not_followed(env: Env, snapshot: Snapshot) -> None:
    assert snapshot.error is not None and snapshot.error.http_status in (301, 302, 307, 308)
    assert [r.path for r in env.fixture.requests] == ["/metrics"]
    assert env.canary.connections == 0


def _bomb_stayed_small(env: Env, snapshot: Snapshot) -> None:
    # The client stopped reading about one compressed chunk past the limit: the bomb's wire
    # size stays a tiny fraction of what it inflates to (1 GiB).
    assert env.fixture.bytes_sent("/metrics") < MIB


def _got_some_bytes(env: Env, snapshot: Snapshot) -> None:
    assert snapshot.stats.body_bytes > 0


def _one_huge_label(env: Env, snapshot: Snapshot) -> None:
    assert snapshot.exposition is not None
    (family,) = snapshot.exposition.families
    assert len(family.samples[0].labels[0][1]) == _UNDER_LIMIT_LINE


def _nul_kept(env: Env, snapshot: Snapshot) -> None:
    assert snapshot.exposition is not None
    (family,) = snapshot.exposition.families
    assert family.samples[0].labels == (("l", "a\x00b"),)


async def _redirect_to_canary(env: Env, status: int) -> str:
    return env.route(behaviour="redirect", status=status, location=env.canary.url("/"))


def _tls_refused(env: Env, snapshot: Snapshot) -> None:
    assert snapshot.error is not None
    assert "certificate" in snapshot.error.message
    (server,) = env.raw
    assert server.connections == 0  # the handshake failed: the server never got to serve


ROWS: list[tuple[str, Hostile]] = [
    # -- slow: the one overall deadline ----------------------------------------------------
    ("trickling-body", Hostile(
        _serve(behaviour="trickle", interval=0.05, duration=15.0),
        ScrapeErrorKind.TIMEOUT, "no complete response within 1.0 s", timeout_seconds=1.0,
        check=_got_some_bytes, rpc=True)),
    ("slowloris-head", Hostile(
        _script(lambda: _drips(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", 0.05, 400)),
        ScrapeErrorKind.TIMEOUT, "no complete response within 1.0 s", timeout_seconds=1.0)),
    # More than 16 interim responses is an attack on our CPU, refused as soon as it is seen.
    ("endless-100-continue", Hostile(
        _script(lambda: _drips(b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.01, 2000)),
        ScrapeErrorKind.PROTOCOL, "more than 16 interim responses", timeout_seconds=1.0)),
    ("head-without-its-body", Hostile(
        _script(lambda: _answers_then_waits(_http(b"Content-Length: 1000\r\n"))),
        ScrapeErrorKind.TIMEOUT, "no complete response within 1.0 s", timeout_seconds=1.0)),
    # -- huge: the body limit on decompressed bytes -----------------------------------------
    ("gzip-bomb", Hostile(
        _serve(behaviour="stream", gzip=True), ScrapeErrorKind.BODY_TOO_LARGE,
        f"decompressed body exceeds {_LONG_LIMIT} bytes", max_body_bytes=_LONG_LIMIT,
        check=_bomb_stayed_small, rpc=True)),
    ("endless-body", Hostile(
        _serve(behaviour="stream"), ScrapeErrorKind.BODY_TOO_LARGE,
        f"body exceeds {_LONG_LIMIT} bytes", max_body_bytes=_LONG_LIMIT)),
    ("8MiB-line-content-length", Hostile(
        _long_line_content_length, ScrapeErrorKind.BODY_TOO_LARGE,
        f"body exceeds {_LONG_LIMIT} bytes (Content-Length {_LONG_LINE})",
        max_body_bytes=_LONG_LIMIT, check=_no_server_data)),
    ("8MiB-line-chunked", Hostile(
        _long_line_chunked, ScrapeErrorKind.BODY_TOO_LARGE, f"body exceeds {_LONG_LIMIT} bytes",
        max_body_bytes=_LONG_LIMIT)),
    # Under the limit, a long line is parsed like any other: one huge label value is data.
    ("3MiB-line-label-value-under-limit", Hostile(
        _serve(body=b'big{l="' + b"v" * _UNDER_LIMIT_LINE + b'"} 1\n'), None, samples=1,
        max_body_bytes=_UNDER_LIMIT_LINE + 64 * 1024, check=_one_huge_label)),
    ("1MiB-line-without-value-under-limit", Hostile(
        _serve(body=b"x" * _GARBAGE_LINE + b"\n"), ScrapeErrorKind.PARSE,
        "line 1: missing value", max_body_bytes=_LONG_LIMIT)),
    ("1MiB-invalid-value-under-limit", Hostile(
        _serve(body=b"up " + b"9x" * (_GARBAGE_LINE // 2) + b"\n"), ScrapeErrorKind.PARSE,
        "line 1: invalid value '9x9x", max_body_bytes=_LONG_LIMIT, rpc=True)),
    ("chunk-size-2^64-1-then-endless", Hostile(
        _raw(_http(b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffff\r\n"
                   + b"# padding line\n" * (80_000))),
        ScrapeErrorKind.BODY_TOO_LARGE, f"body exceeds {MIB} bytes")),
    ("content-length-10^18-1", Hostile(
        _raw(_http(b"Content-Length: 999999999999999999\r\n", b"up 1\n")),
        ScrapeErrorKind.BODY_TOO_LARGE, f"body exceeds {MIB} bytes (Content-Length 99999",
        check=_no_server_data)),
    # -- many: the sample limit --------------------------------------------------------------
    ("many-samples", Hostile(
        _serve(body=_many_samples(_MANY_SAMPLES)), ScrapeErrorKind.TOO_MANY_SAMPLES,
        f"exposition has more than {_SAMPLE_LIMIT} samples", max_samples=_SAMPLE_LIMIT,
        rpc=True)),
    ("short-lines", Hostile(
        _serve(body=b"ab\n" * (MIB // 3)), ScrapeErrorKind.PARSE, "line 1: missing value")),
    # -- bad bytes: PARSE naming the line ----------------------------------------------------
    ("invalid-utf8", Hostile(
        _serve(body=_BAD_UTF8), ScrapeErrorKind.PARSE,
        f"line {_UTF8_LINE}: invalid UTF-8 (byte 0xff at offset {_BAD_UTF8_OFFSET + 5})",
        rpc=True)),
    ("utf8-surrogate", Hostile(
        _serve(body=b'up 1\nx{a="\xed\xa0\x80"} 1\n'), ScrapeErrorKind.PARSE,
        "line 2: invalid UTF-8 (byte 0xed at offset 10)")),
    ("utf8-overlong-slash", Hostile(
        _serve(body=b'x{a="\xc0\xaf"} 1\n'), ScrapeErrorKind.PARSE,
        "line 1: invalid UTF-8 (byte 0xc0 at offset 5)")),
    ("nul-in-metric-name", Hostile(
        _serve(body=b"up 1\nup\x00down 1\n"), ScrapeErrorKind.PARSE,
        "line 2: invalid metric name")),
    ("nul-flood", Hostile(
        _serve(body=b"\x00" * (MIB // 2)), ScrapeErrorKind.PARSE, "line 1: invalid metric name")),
    # A NUL inside a quoted label value is valid UTF-8 text: kept, as prometheus_client does.
    ("nul-in-label-value", Hostile(
        _serve(body=b'x{l="a\x00b"} 1\n'), None, samples=1, check=_nul_kept)),
    # -- HTTP framing ----------------------------------------------------------------------------
    ("http1.0-without-length", Hostile(
        _raw(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + TGI_TEXT), None,
        samples=TGI_SAMPLES)),
    ("talks-before-the-request", Hostile(
        _script(lambda: _talks_first(_http(b"Content-Length: 5\r\n", b"up 1\n"))), None,
        samples=1)),
    ("204-no-content", Hostile(
        _raw(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"), None, samples=0)),
    ("head-without-its-body-then-close", Hostile(
        _raw(_http(b"Content-Length: 1000\r\n")), ScrapeErrorKind.PROTOCOL,
        "HTTP protocol error from 127.0.0.1:{port}: connection closed before the end of the body")),
    ("reset-mid-body", Hostile(
        _serve(behaviour="truncate", body=TGI_TEXT, reset=True), ScrapeErrorKind.PROTOCOL,
        "connection reset by 127.0.0.1:{port}", rpc=True)),
    ("head-over-64KiB", Hostile(
        _raw(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\nup 1\n"),
        ScrapeErrorKind.PROTOCOL, "response head larger than 65536 bytes")),
    ("10000-headers", Hostile(
        _raw(_http(b"a: b\r\n" * 10_000, b"up 1\n")), ScrapeErrorKind.PROTOCOL,
        "more than 200 header lines")),
    ("garbage-status-line", Hostile(
        _raw(b"ICY 200 OK\r\n\r\nup 1\n"), ScrapeErrorKind.PROTOCOL,
        "invalid status line b'ICY 200 OK'")),
    ("binary-status-line", Hostile(
        _raw(bytes(range(256)) * 4 + b"\r\n\r\n"), ScrapeErrorKind.PROTOCOL,
        "invalid status line b'\\x00\\x01")),
    ("101-switching-protocols", Hostile(
        _raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"),
        ScrapeErrorKind.PROTOCOL, "unexpected 101 Switching Protocols")),
    ("chunk-size-2^64", Hostile(
        _raw(_http(b"Transfer-Encoding: chunked\r\n", b"10000000000000000\r\nup 1\n")),
        ScrapeErrorKind.PROTOCOL, "invalid chunk size b'10000000000000000'")),
    ("content-length-2^64", Hostile(
        _raw(_http(b"Content-Length: 18446744073709551616\r\n", b"up 1\n")),
        ScrapeErrorKind.PROTOCOL, "invalid Content-Length '18446744073709551616'")),
    ("double-gzip", Hostile(
        _serve(body=gzip.compress(gzip.compress(b"up 1\n")),
               headers={"Content-Encoding": "gzip, gzip"}),
        ScrapeErrorKind.PROTOCOL, "unsupported Content-Encoding 'gzip, gzip'")),
    # -- redirects: never followed -------------------------------------------------------------
    ("redirect-to-metadata", Hostile(
        _serve(behaviour="redirect", location=METADATA_URL), ScrapeErrorKind.HTTP_STATUS,
        f"HTTP 302 Found (redirect to {METADATA_URL} not followed)", check=_not_followed,
        rpc=True)),
    ("redirect-307-to-canary", Hostile(
        lambda env: _redirect_to_canary(env, 307), ScrapeErrorKind.HTTP_STATUS,
        "HTTP 307 Temporary Redirect (redirect to http://127.0.0.1:", check=_not_followed)),
    ("redirect-with-60KB-location", Hostile(
        _serve(behaviour="redirect", status=308, location="/" + "a" * 60_000),
        ScrapeErrorKind.HTTP_STATUS, "HTTP 308 Permanent Redirect (redirect to /aaa",
        check=_not_followed)),
    # -- TLS ------------------------------------------------------------------------------------
    ("tls-self-signed", Hostile(
        _script(lambda: _serves(b"up 1\n"), tls=True), ScrapeErrorKind.CONNECT,
        "TLS handshake with 127.0.0.1:{port} failed (", rpc=True,
        check=_tls_refused)),
]  # fmt: skip


def _params(*, rpc: bool) -> list[Any]:
    params = []
    for row_id, row in ROWS:
        if rpc and not row.rpc:
            continue
        marks = []
        if row.message_bug:
            marks.append(
                pytest.mark.xfail(strict=True, raises=UnboundedMessageError, reason=row.message_bug)
            )
        elif row.memory_bug and not rpc:
            marks.append(
                pytest.mark.xfail(strict=True, raises=UnboundedMemoryError, reason=row.memory_bug)
            )
        params.append(pytest.param(row, id=row_id, marks=marks))
    return params


def _options(row: Hostile) -> ScrapeOptions:
    return ScrapeOptions(
        timeout_seconds=row.timeout_seconds,
        max_body_bytes=row.max_body_bytes,
        max_samples=row.max_samples,
        fetch_info=False,
    )


def _expected_message(row: Hostile, url: str) -> str:
    return row.message.format(port=urlsplit(url).port)


@pytest.mark.parametrize("row", _params(rpc=False))
async def test_hostile_target(env: Env, row: Hostile) -> None:
    url = await row.serve(env)
    async with Scraper() as scraper:
        tracemalloc.start()
        try:
            async with asyncio.timeout(BOUND):
                snapshot = await scraper.scrape(Target("hostile", url), _options(row))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    if row.kind is None:
        assert snapshot.up, snapshot.error
        assert snapshot.error is None
        assert snapshot.stats.samples == row.samples
    else:
        assert not snapshot.up
        assert snapshot.error is not None
        assert snapshot.error.kind is row.kind, snapshot.error.message[:MAX_MESSAGE]
        assert _expected_message(row, url) in snapshot.error.message[:MAX_MESSAGE]
        assert snapshot.view is None and snapshot.exposition is None
        assert snapshot.stats.samples == 0
        if row.kind is ScrapeErrorKind.TIMEOUT:
            # The deadline was met, not cut short: the scrape waited out its whole budget.
            assert snapshot.stats.duration_seconds >= row.timeout_seconds * 0.9
    if row.check is not None:
        row.check(env, snapshot)
    if snapshot.error is not None and len(snapshot.error.message) > MAX_MESSAGE:
        raise UnboundedMessageError(
            f"error message of {len(snapshot.error.message)} characters"
            f" (bound {MAX_MESSAGE}): {snapshot.error.message[:100]!r}..."
        )
    bound = 4 * row.max_body_bytes + SLACK
    if peak > bound:
        raise UnboundedMemoryError(
            f"peak traced memory {peak / MIB:.1f} MiB > {bound / MIB:.1f} MiB"
            f" (4 x max_body_bytes {row.max_body_bytes / MIB:g} MiB + {SLACK / MIB:g} MiB)"
        )


# -- through the RPC -------------------------------------------------------------------------------


def _duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


@pytest.fixture
async def stub() -> AsyncIterator[collector_pb2_grpc.CollectorServiceStub]:
    async with (
        CollectorServer(ServerConfig(listen="127.0.0.1:0", grace_seconds=1.0)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield collector_pb2_grpc.CollectorServiceStub(channel)


@pytest.mark.parametrize("row", _params(rpc=True))
async def test_hostile_target_through_collect(
    env: Env, stub: collector_pb2_grpc.CollectorServiceStub, row: Hostile
) -> None:
    assert row.kind is not None
    url = await row.serve(env)
    request = collector_pb2.CollectRequest(
        target=collector_pb2.Target(instance_id="hostile", endpoint=url),
        options=collector_pb2.ScrapeOptions(
            timeout=_duration(row.timeout_seconds),
            max_body_bytes=row.max_body_bytes,
            max_samples=row.max_samples,
            skip_info=True,
        ),
    )
    # A hostile target is data, not an RPC error: the call itself is OK.
    response = await stub.Collect(request, timeout=BOUND)
    snapshot = response.snapshot
    assert snapshot.health == snapshot_pb2.HEALTH_DOWN
    assert snapshot.instance_id == "hostile"
    assert snapshot.error.kind == snapshot_pb2.ErrorKind.Value(f"ERROR_KIND_{row.kind.name}")
    assert _expected_message(row, url) in snapshot.error.message[:MAX_MESSAGE]
    assert not snapshot.raw_metrics and not snapshot.histograms
    if len(snapshot.error.message) > MAX_MESSAGE:
        raise UnboundedMessageError(
            f"Collect answered an error message of {len(snapshot.error.message)} characters"
        )


# -- the event loop --------------------------------------------------------------------------------
#
# Scrapes share one event loop with every other scrape loop and RPC of the collector, and the
# deadline can only interrupt a scrape where it awaits: synchronous work on hostile input must
# stay short. A ticker measures the longest time the loop went without running it.

# Seconds the event loop may go without running other tasks (a GC pause is well below).
LOOP_GAP_BOUND = 0.5
# Under a line tracer (coverage) every parsed line costs several times more: a quarter of the
# input blocks the loop as long, and keeps the run short.
_SHARE = 4 if sys.gettrace() is not None else 1
# The 1xx flood is cut into reads of at most 256 KiB by asyncio, which caps how long one read can
# take: its case is checked against a tighter bound, still far above a healthy read.
INTERIM_GAP_BOUND = 0.25


def _gzipped(body: bytes) -> Callable[[Env], Awaitable[str]]:
    """Serve ``body`` gzip-compressed: on the wire it is small, so it arrives at once."""
    compressed = gzip.compress(body, compresslevel=6)

    async def serve(env: Env) -> str:
        return env.route(body=compressed, headers={"Content-Encoding": "gzip"})

    return serve


def _interim_flood(count: int) -> Callable[[Env], Awaitable[str]]:
    # The shortest interim head there is (bare LF line ends are allowed): 14 bytes.
    heads = b"HTTP/1.1 100\n\n" * count
    return _raw(heads + _http(b"Content-Length: 5\r\n", b"up 1\n"))


@pytest.mark.parametrize(
    ("serve", "options", "gap_bound"),
    [
        # The control: a real TGI body, parsed cold, keeps the loop responsive.
        pytest.param(
            _serve(body=TGI_TEXT),
            ScrapeOptions(timeout_seconds=2.0, fetch_info=False),
            LOOP_GAP_BOUND,
            id="real-tgi-body",
        ),
        pytest.param(
            _gzipped(b"\n" * (3 * MIB // _SHARE)),
            ScrapeOptions(timeout_seconds=0.5, max_body_bytes=4 * MIB, fetch_info=False),
            LOOP_GAP_BOUND,
            id="blank-lines",
        ),
        pytest.param(
            _gzipped(_many_samples(250_000 // _SHARE)),
            ScrapeOptions(
                timeout_seconds=0.5, max_body_bytes=4 * MIB, max_samples=1000, fetch_info=False
            ),
            LOOP_GAP_BOUND,
            id="many-samples-over-a-limit-of-1000",
        ),
        pytest.param(
            _interim_flood(18_000),
            ScrapeOptions(timeout_seconds=0.5, fetch_info=False),
            INTERIM_GAP_BOUND,
            id="18k-interim-responses-in-one-read",
        ),
    ],
)
async def test_hostile_target_does_not_block_the_event_loop(
    env: Env, serve: Callable[[Env], Awaitable[str]], options: ScrapeOptions, gap_bound: float
) -> None:
    url = await serve(env)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        for _ in range(100_000):
            if done.is_set():
                return
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    async with Scraper() as scraper:
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        try:
            async with asyncio.timeout(60):
                snapshot = await scraper.scrape(Target("hostile", url), options)
        finally:
            done.set()
            await ticking
    # The target was reached and answered (whatever the outcome, it is not a connect failure).
    assert snapshot.error is None or snapshot.error.kind is not ScrapeErrorKind.CONNECT
    assert gaps
    longest = max(gaps)
    if longest > gap_bound:
        raise LoopBlockedError(
            f"the event loop was blocked {longest:.2f} s (bound {gap_bound} s; scrape"
            f" timeout {options.timeout_seconds} s, outcome"
            f" {snapshot.error.kind.name if snapshot.error else 'up'})"
        )
    if snapshot.up:
        assert snapshot.stats.samples == TGI_SAMPLES
