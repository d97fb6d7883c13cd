"""The scrapes' HTTP client over real loopback sockets: keep-alive, addresses, retries, TLS.

Two kinds of servers: the :class:`FixtureServer` for ordinary behaviours, and :class:`Loopback`,
a few lines of ``asyncio.start_server`` per test, for byte-exact server behaviour (what a
connection sends, when it closes, how many connections and requests arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from fixture_server import FixtureServer
from polling import wait_until

import tgi_collector._http
from tgi_collector._http import MAX_IDLE_PER_KEY, HttpClient
from tgi_collector._http_connection import _PAUSE_AT
from tgi_collector.errors import ScrapeError, ScrapeErrorKind

BOUND = 5.0  # seconds any single exchange of these tests may take
MIB = 1024 * 1024
LOOPBACK = ("127.0.0.1",)


def _has_second_loopback() -> bool:
    """Whether 127.0.0.2 is usable (all of 127/8 is loopback on Linux, not everywhere)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.2", 0))
        except OSError:
            return False
    return True


needs_127_0_0_2 = pytest.mark.skipif(
    not _has_second_loopback(), reason="127.0.0.2 is not a loopback address here"
)


# -- a server written per test ---------------------------------------------------------------------


@dataclass(slots=True)
class Peer:
    """The server's side of one connection."""

    server: Loopback
    number: int  # 1 for the first connection accepted
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def request(self) -> bytes | None:
        """The next request head (recorded in ``server.requests``); None at the end."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        self.server.requests.append((self.number, head))
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> None:
        """Wait for the client to close the connection (EOF or reset), at most BOUND s."""
        async with asyncio.timeout(BOUND):
            for _ in range(10_000):
                if not await self.reader.read(65536):
                    return

    def reset(self) -> None:
        """Abort the connection with a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Script = Callable[[Peer], Awaitable[None]]


class Loopback:
    """A server on a loopback address running ``script`` for every connection it accepts.

    Counts ``connections`` accepted and ``ended`` (scripts finished and connections closed),
    and records every request head read through :meth:`Peer.request` in ``requests``.
    """

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.connections = 0
        self.ended = 0
        self.requests: list[tuple[int, bytes]] = []
        self._script = script
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self._ssl)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/metrics", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._script(Peer(self, self.connections, reader, writer))
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # only __aexit__ cancels; see FixtureServer._handle on why not to re-raise
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            self.ended += 1


def response(body: bytes, *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), headers) + body


def answer_every_request(data: bytes) -> Script:
    """A script answering every request of a connection with ``data``."""

    async def script(peer: Peer) -> None:
        for _ in range(1000):
            if await peer.request() is None:
                return
            await peer.send(data)

    return script


async def fetch(
    client: HttpClient,
    url: str,
    addresses: Sequence[str] = LOOPBACK,
    headers: Sequence[tuple[str, str]] = (),
) -> tuple[int, bytes]:
    """GET ``url`` and read its body, within BOUND seconds: (status, body)."""
    body = bytearray()
    async with (
        asyncio.timeout(BOUND),
        client.get(url, list(addresses), list(headers)) as got,
    ):
        await got.read(body.extend)
    return got.status, bytes(body)


async def scrape_error(
    client: HttpClient, url: str, addresses: Sequence[str] = LOOPBACK
) -> ScrapeError:
    with pytest.raises(ScrapeError) as caught:
        await fetch(client, url, addresses)
    return caught.value


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.aclose()


# -- keep-alive ------------------------------------------------------------------------------------


async def test_two_gets_share_one_connection(
    client: HttpClient, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=b"up 1\n")
    body = bytearray()
    for _ in range(2):
        async with asyncio.timeout(BOUND):
            async with client.get(fixture_server.url("/metrics"), list(LOOPBACK), []) as got:
                assert (got.status, got.reason) == (200, "OK")
                assert got.headers["content-length"] == "5"
                assert got.headers["content-type"].startswith("text/plain")
                await got.read(body.extend)
    assert body == b"up 1\nup 1\n"
    assert fixture_server.hits("/metrics") == 2
    assert fixture_server.connections == 1
    assert client.idle_connections == 1


async def test_connection_close_response_is_not_reused(
    client: HttpClient, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=b"up 1\n", keep_alive=False)
    for _ in range(2):
        assert await fetch(client, fixture_server.url("/metrics")) == (200, b"up 1\n")
        assert client.idle_connections == 0
    assert fixture_server.connections == 2


async def test_idle_pool_keeps_two_connections_per_key(
    client: HttpClient, fixture_server: FixtureServer
) -> None:
    # The delay keeps the three requests in flight together, on three connections.
    fixture_server.route("/metrics", body=b"up 1\n", delay=0.1)
    url = fixture_server.url("/metrics")
    results = await asyncio.gather(*(fetch(client, url) for _ in range(3)))
    assert results == [(200, b"up 1\n")] * 3
    assert fixture_server.connections == 3
    assert client.idle_connections == MAX_IDLE_PER_KEY == 2
    for _ in range(2):
        assert await fetch(client, url) == (200, b"up 1\n")
    assert fixture_server.connections == 3


async def test_least_recently_used_key_is_dropped() -> None:
    script = answer_every_request(response(b"up 1\n"))
    client = HttpClient(max_keys=1)
    try:
        async with Loopback(script) as first, Loopback(script) as second:
            await fetch(client, first.url())
            await fetch(client, second.url())
            assert client.idle_connections == 1
            await wait_until(lambda: first.ended == 1)  # the client closed it
            await fetch(client, first.url())
            assert first.connections == 2
            assert second.connections == 1
    finally:
        await client.aclose()


async def test_idle_connection_expires(client: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tgi_collector._http, "KEEPALIVE_SECONDS", 0.05)
    async with Loopback(answer_every_request(response(b"up 1\n"))) as server:
        await fetch(client, server.url())
        await asyncio.sleep(0.1)
        await fetch(client, server.url())
        assert server.connections == 2
        await wait_until(lambda: server.ended == 1)


# -- addresses -------------------------------------------------------------------------------------


async def test_connects_to_the_given_address_with_the_url_host_in_host(
    client: HttpClient,
) -> None:
    # rebind.invalid cannot resolve (RFC 6761): only the address given can be connected to.
    async with Loopback(answer_every_request(response(b"up 1\n"))) as server:
        url = server.url("/metrics?name=a b", host="rebind.invalid")
        status, body = await fetch(client, url, headers=[("Accept", "text/plain")])
        assert (status, body) == (200, b"up 1\n")
        assert server.requests == [
            (
                1,
                f"GET /metrics?name=a%20b HTTP/1.1\r\nHost: rebind.invalid:{server.port}\r\n"
                "Accept: text/plain\r\n\r\n".encode(),
            )
        ]


async def test_non_ascii_host_is_sent_as_idna(client: HttpClient) -> None:
    async with Loopback(answer_every_request(response(b""))) as server:
        await fetch(client, server.url("/", host="bücher.invalid"))
        ((_, head),) = server.requests
        assert b"\r\nHost: xn--bcher-kva.invalid:%d\r\n" % server.port in head


@needs_127_0_0_2
async def test_a_resolvable_url_host_is_not_resolved_again(client: HttpClient) -> None:
    # localhost resolves to 127.0.0.1 (or ::1), where nothing listens on this port: the
    # client must connect to the address it was given, 127.0.0.2.
    async with Loopback(answer_every_request(response(b"up 1\n")), host="127.0.0.2") as server:
        assert await fetch(client, server.url(host="localhost"), ["127.0.0.2"]) == (
            200,
            b"up 1\n",
        )
        ((_, head),) = server.requests
        assert b"\r\nHost: localhost:%d\r\n" % server.port in head


@needs_127_0_0_2
@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        pytest.param(["127.0.0.2", "127.0.0.1"], "127.0.0.2", id="2-then-1"),
        pytest.param(["127.0.0.1", "127.0.0.2"], "127.0.0.1", id="1-then-2"),
    ],
)
async def test_addresses_are_tried_in_order(addresses: list[str], expected: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, Loopback] = {}
        for host in ("127.0.0.1", "127.0.0.2"):
            script = answer_every_request(response(host.encode()))
            port = next(iter(servers.values())).port if servers else 0
            servers[host] = await stack.enter_async_context(Loopback(script, host=host, port=port))
        client = HttpClient()
        stack.push_async_callback(client.aclose)
        url = servers["127.0.0.1"].url(host="rebind.invalid")
        assert await fetch(client, url, addresses) == (200, expected.encode())
        assert [len(server.requests) for server in servers.values()] == [
            int(host == expected) for host in servers
        ]


@needs_127_0_0_2
async def test_a_refusing_address_is_skipped(client: HttpClient) -> None:
    # Nothing listens on 127.0.0.2 at the server's port (it is bound to 127.0.0.1 only).
    async with Loopback(answer_every_request(response(b"up 1\n"))) as server:
        url = server.url(host="rebind.invalid")
        for _ in range(2):
            assert await fetch(client, url, ["127.0.0.2", "127.0.0.1"]) == (200, b"up 1\n")
        assert server.connections == 1  # kept under the address that answered


@needs_127_0_0_2
async def test_every_address_refusing(client: HttpClient, unused_port: int) -> None:
    error = await scrape_error(
        client, f"http://rebind.invalid:{unused_port}/metrics", ["127.0.0.2", "127.0.0.1"]
    )
    assert error.kind is ScrapeErrorKind.CONNECT
    assert error.message == f"connection refused by rebind.invalid:{unused_port}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://rebind.invalid:8080/metrics", "cannot resolve host of rebind.invalid:8080"),
        ("https://rebind.invalid/metrics", "cannot resolve host of rebind.invalid:443"),
        ("http://[::1]/metrics", "cannot resolve host of [::1]:80"),
    ],
)
async def test_no_addresses(client: HttpClient, url: str, message: str) -> None:
    error = await scrape_error(client, url, [])
    assert error.kind is ScrapeErrorKind.CONNECT
    assert error.message == message


# -- closed connections and retries ------------------------------------------------------------


async def hang_up(peer: Peer, how: str) -> None:
    if how == "reset":
        peer.reset()
    else:
        peer.writer.close()


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_reused_connection_closed_by_the_server_is_retried(
    client: HttpClient, how: str
) -> None:
    async def script(peer: Peer) -> None:
        if peer.number == 1:  # answer once, then hang up on the next request
            await peer.request()
            await peer.send(response(b"first"))
            await peer.request()
            await hang_up(peer, how)
        else:
            await answer_every_request(response(b"second"))(peer)

    async with Loopback(script) as server:
        assert await fetch(client, server.url()) == (200, b"first")
        assert await fetch(client, server.url()) == (200, b"second")
        assert server.connections == 2
        assert [number for number, _ in server.requests] == [1, 1, 2]


async def test_retry_happens_once(client: HttpClient) -> None:
    async def script(peer: Peer) -> None:
        if peer.number == 1:
            await peer.request()
            await peer.send(response(b"first"))
        await peer.request()  # then every connection hangs up on a request

    async with Loopback(script) as server:
        assert await fetch(client, server.url()) == (200, b"first")
        error = await scrape_error(client, server.url())
        assert error.kind is ScrapeErrorKind.PROTOCOL
        assert error.message == (
            f"HTTP protocol error from 127.0.0.1:{server.port}: connection closed before a response"
        )
        assert server.connections == 2
        assert [number for number, _ in server.requests] == [1, 1, 2]


async def test_retry_goes_to_a_new_connection(client: HttpClient) -> None:
    # Two idle connections that the server will both close: the retry after the first
    # must not try the second, but a new connection.
    async def script(peer: Peer) -> None:
        if peer.number <= 2:
            await peer.request()
            await asyncio.sleep(0.1)  # both requests in flight at once: two connections
            await peer.send(response(b"old"))
            await peer.request()  # and hang up on the next one
        else:
            await answer_every_request(response(b"new"))(peer)

    async with Loopback(script) as server:
        assert list(
            await asyncio.gather(fetch(client, server.url()), fetch(client, server.url()))
        ) == [
            (200, b"old"),
            (200, b"old"),
        ]
        assert client.idle_connections == 2
        assert await fetch(client, server.url()) == (200, b"new")
        assert server.connections == 3
        assert len(server.requests) == 4  # two, one on a stale connection, its retry


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("close", "HTTP protocol error from 127.0.0.1:{port}: connection closed before a response"),
        ("reset", "connection reset by 127.0.0.1:{port}"),
    ],
)
async def test_fresh_connection_closed_without_an_answer(
    client: HttpClient, how: str, message: str
) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await hang_up(peer, how)

    async with Loopback(script) as server:
        error = await scrape_error(client, server.url())
        assert error.kind is ScrapeErrorKind.PROTOCOL
        assert error.message == message.format(port=server.port)
        assert server.connections == 1  # not retried
        assert len(server.requests) == 1


async def test_idle_connection_closed_by_the_server_is_replaced(client: HttpClient) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(response(b"up 1\n"))  # keep-alive, yet closed right after

    async with Loopback(script) as server:
        await fetch(client, server.url())
        await wait_until(lambda: server.ended == 1)
        await asyncio.sleep(0.05)  # and the client saw the FIN (else it is the retry above)
        assert await fetch(client, server.url()) == (200, b"up 1\n")
        assert server.connections == 2
        assert len(server.requests) == 2


async def test_stray_bytes_on_an_idle_connection_close_it(client: HttpClient) -> None:
    async def script(peer: Peer) -> None:
        if peer.number == 1:
            await peer.request()
            await peer.send(response(b"first"))
            await asyncio.sleep(0.05)
            # A whole response nobody asked for: taken for the next answer, it would desync.
            await peer.send(response(b"stray"))
            await peer.until_closed()
        else:
            await answer_every_request(response(b"second"))(peer)

    async with Loopback(script) as server:
        assert await fetch(client, server.url()) == (200, b"first")
        await wait_until(lambda: server.ended == 1)  # the client hung up on the stray bytes
        assert await fetch(client, server.url()) == (200, b"second")
        assert server.connections == 2


async def test_bytes_after_the_body_close_the_connection(client: HttpClient) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(response(b"up 1\n") + b"HTTP/1.1 200 OK\r\n")
        await peer.until_closed()

    async with Loopback(script) as server:
        for _ in range(2):
            assert await fetch(client, server.url()) == (200, b"up 1\n")
        assert server.connections == 2
        assert client.idle_connections == 0


# -- cancellation --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before-head", "mid-body"])
async def test_cancelling_closes_the_connection(client: HttpClient, where: str) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        if where == "before-head":
            await peer.until_closed()
            return
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):  # a byte every 10 ms, until the client goes away
            await peer.send(b"x")
            await asyncio.sleep(0.01)

    received = bytearray()
    async with Loopback(script) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2), client.get(server.url(), list(LOOPBACK), []) as got:
                await got.read(received.extend)
        assert (len(received) > 0) is (where == "mid-body")
        assert len(received) < 1000
        assert client.idle_connections == 0
        await wait_until(lambda: server.ended == 1)  # the server saw the connection end
        assert asyncio.all_tasks() == {asyncio.current_task()}


# -- bodies ----------------------------------------------------------------------------------------

BIG_BODY = random.Random(8).randbytes(8 * MIB)


@pytest.mark.parametrize("late", [False, True], ids=["read-at-once", "read-late"])
async def test_large_body_arrives_intact(client: HttpClient, late: bool) -> None:
    async with Loopback(answer_every_request(response(BIG_BODY))) as server:
        for _ in range(2):
            body = bytearray()
            async with asyncio.timeout(BOUND), client.get(server.url(), list(LOOPBACK), []) as got:
                assert got.headers["content-length"] == str(8 * MIB)
                if late:  # more than the pause limit arrives before anyone reads
                    await asyncio.sleep(0.2)
                await got.read(body.extend)
            assert body == BIG_BODY
        assert server.connections == 1


async def test_sink_error_stops_the_read_and_closes_the_connection(client: HttpClient) -> None:
    limit = ScrapeError(ScrapeErrorKind.BODY_TOO_LARGE, "body exceeds 1048576 bytes")
    received: list[int] = []

    def sink(chunk: bytes) -> None:
        received.append(len(chunk))
        if sum(received) > MIB:
            raise limit

    async with Loopback(answer_every_request(response(BIG_BODY))) as server:
        with pytest.raises(ScrapeError) as caught:
            async with asyncio.timeout(BOUND), client.get(server.url(), list(LOOPBACK), []) as got:
                await got.read(sink)
        assert caught.value is limit
        total = sum(received)
        assert MIB < total < 8 * MIB
        assert sum(received[:-1]) <= MIB  # no chunk was passed on after the error
        assert client.idle_connections == 0
        await wait_until(lambda: server.ended == 1)
        assert await fetch(client, server.url()) == (200, BIG_BODY)
        assert server.connections == 2


async def test_unread_body_past_the_pause_limit_leaves_the_connection_usable(
    client: HttpClient,
) -> None:
    # A status the caller does not want, with a body over the pause limit it never reads: the
    # whole response arrived, so the connection goes back to the pool, and must still read.
    big = b"e" * (_PAUSE_AT + 1)
    responses = iter([response(big, status=b"404 Not Found"), response(b"up 1\n")])

    async def script(peer: Peer) -> None:
        for data in responses:
            await peer.request()
            await peer.send(data)
        await peer.until_closed()

    async with Loopback(script) as server:
        async with asyncio.timeout(BOUND), client.get(server.url(), list(LOOPBACK), []) as got:
            assert got.status == 404
            # The whole body is in (nothing public tells it; the connection's state does).
            await wait_until(lambda: got._connection.reusable)
        assert client.idle_connections == 1
        assert await fetch(client, server.url()) == (200, b"up 1\n")
        assert server.connections == 1


async def test_chunked_stream(client: HttpClient, fixture_server: FixtureServer) -> None:
    pattern = b"# a line of the stream\n"
    fixture_server.route(
        "/metrics", behaviour="stream", body=pattern, size=300_000, chunk_size=4096
    )
    status, body = await fetch(client, fixture_server.url("/metrics"))
    assert status == 200
    assert len(body) == 300_000
    block = pattern * (4096 // len(pattern))
    assert body == (block * (300_000 // len(block) + 1))[:300_000]
    assert client.idle_connections == 0  # the stream ends with Connection: close


async def test_trickled_chunks(client: HttpClient, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", behaviour="trickle", body=b"up 1\n", interval=0.01)
    assert await fetch(client, fixture_server.url("/metrics")) == (200, b"up 1\n")


async def test_http10_body_until_close(client: HttpClient, fixture_server: FixtureServer) -> None:
    fixture_server.route(
        "/metrics",
        behaviour="raw",
        body=b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nup 1\n",
    )
    for _ in range(2):
        async with asyncio.timeout(BOUND):
            async with client.get(fixture_server.url("/metrics"), list(LOOPBACK), []) as got:
                assert got.head.minor_version == 0
                assert got.headers == {"content-type": "text/plain"}
                body = bytearray()
                await got.read(body.extend)
        assert body == b"up 1\n"
    assert fixture_server.connections == 2


@pytest.mark.parametrize(
    ("reset", "message"),
    [
        (True, "connection reset by 127.0.0.1:{port}"),
        (
            False,
            "HTTP protocol error from 127.0.0.1:{port}: "
            "connection closed before the end of the body",
        ),
    ],
    ids=["reset", "closed"],
)
async def test_connection_lost_mid_body(
    client: HttpClient, fixture_server: FixtureServer, reset: bool, message: str
) -> None:
    fixture_server.route("/metrics", behaviour="truncate", body=b"x" * 100_000, reset=reset)
    error = await scrape_error(client, fixture_server.url("/metrics"))
    assert error.kind is ScrapeErrorKind.PROTOCOL
    assert error.message == message.format(port=fixture_server.port)
    assert client.idle_connections == 0


# -- TLS -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for ``tgi.invalid`` and 127.0.0.1 (the ``cryptography``
    package is not installed here; the openssl binary makes it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=tgi.invalid",
            "-addext",
            "subjectAltName=DNS:tgi.invalid,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return Certificate(cert, key)


@pytest.fixture
async def tls_server(certificate: Certificate) -> AsyncIterator[tuple[Loopback, list[str]]]:
    """A TLS server answering every request; the SNI names its clients sent."""
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert, certificate.key)
    context.sni_callback = lambda _socket, name, _context: names.append(name)
    async with Loopback(answer_every_request(response(b"up 1\n")), ssl_context=context) as server:
        yield server, names


def https_url(server: Loopback, host: str) -> str:
    return f"https://{host}:{server.port}/metrics"


async def test_tls_certificate_not_trusted(tls_server: tuple[Loopback, list[str]]) -> None:
    server, _ = tls_server
    client = HttpClient()  # the system's trust store
    try:
        error = await scrape_error(client, https_url(server, "tgi.invalid"))
    finally:
        await client.aclose()
    assert error.kind is ScrapeErrorKind.CONNECT
    assert error.message.startswith(f"TLS handshake with tgi.invalid:{server.port} failed (")
    assert "certificate" in error.message
    assert server.requests == []


async def test_tls_with_a_trusting_context(
    tls_server: tuple[Loopback, list[str]], certificate: Certificate
) -> None:
    server, names = tls_server
    client = HttpClient(ssl_context=ssl.create_default_context(cafile=certificate.cert))
    try:
        for _ in range(2):
            assert await fetch(client, https_url(server, "tgi.invalid")) == (200, b"up 1\n")
    finally:
        await client.aclose()
    assert names == ["tgi.invalid"]  # SNI carries the URL host, not the address
    assert server.connections == 1
    assert [head.split(b"\r\n")[1] for _, head in server.requests] == [
        b"Host: tgi.invalid:%d" % server.port
    ] * 2


async def test_tls_name_mismatch(
    tls_server: tuple[Loopback, list[str]], certificate: Certificate
) -> None:
    server, names = tls_server
    client = HttpClient(ssl_context=ssl.create_default_context(cafile=certificate.cert))
    try:
        error = await scrape_error(client, https_url(server, "other.invalid"))
    finally:
        await client.aclose()
    assert error.kind is ScrapeErrorKind.CONNECT
    assert error.message.startswith(f"TLS handshake with other.invalid:{server.port} failed (")
    assert "mismatch" in error.message
    assert names == ["other.invalid"]
    assert server.requests == []


# -- closing ---------------------------------------------------------------------------------------


async def test_aclose_closes_idle_connections() -> None:
    client = HttpClient()
    async with Loopback(answer_every_request(response(b"up 1\n"))) as server:
        await fetch(client, server.url())
        assert client.idle_connections == 1
        await client.aclose()
        assert client.idle_connections == 0
        await wait_until(lambda: server.ended == 1)


async def test_aclose_ends_a_read_in_progress() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await peer.until_closed()

    client = HttpClient()
    received = bytearray()

    async def read(url: str) -> None:
        async with client.get(url, list(LOOPBACK), []) as got:
            await got.read(received.extend)

    async with Loopback(script) as server, asyncio.timeout(BOUND):
        reading = asyncio.create_task(read(server.url()))
        await wait_until(lambda: received == b"abc")
        await client.aclose()
        with pytest.raises(ScrapeError) as caught:
            await reading
        assert caught.value.kind is ScrapeErrorKind.PROTOCOL
        assert caught.value.message == (
            f"HTTP protocol error from 127.0.0.1:{server.port}: "
            "connection closed before the end of the response"
        )
        await wait_until(lambda: server.ended == 1)
